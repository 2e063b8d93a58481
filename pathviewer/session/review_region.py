"""Which review flags lie in a region of a slide (decide a whole area at once)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import shapely
from shapely.geometry.base import BaseGeometry

from pathviewer.core.identity import same_slide


class FlagBox(Protocol):
    """What a flag needs here: its slide and its level-0 box."""

    @property
    def slide_path(self) -> str: ...

    @property
    def x(self) -> int: ...

    @property
    def y(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...


def flags_inside(flags: Iterable[FlagBox], slide_path: str, region: BaseGeometry) -> list[int]:
    """Positions (in ``flags``) of the flags of ``slide_path`` whose box centre is in ``region``.

    The centre decides, so a patch cut by the outline belongs to the side most of it is on
    (for square patches).
    """
    listed = list(flags)
    prepared = region.buffer(0) if not region.is_valid else region
    shapely.prepare(prepared)
    out = []
    for position, flag in enumerate(listed):
        if not same_slide(flag.slide_path, slide_path):
            continue
        centre = shapely.Point(flag.x + flag.width / 2, flag.y + flag.height / 2)
        if prepared.contains(centre):
            out.append(position)
    return out
