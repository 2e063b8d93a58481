"""How the slide is shown: brightness, contrast, gamma and stain channels, display only.

:class:`DisplaySettings` is the state a slide view shows (and the app remembers per slide);
:class:`DisplayRenderer` turns the painted pixels into the adjusted ones through lookup tables,
so a change never re-reads a tile.  Stain channels use the deconvolution of
:mod:`pathviewer.core.stain` (Ruifrok & Johnston); :func:`pathviewer.core.stain.stain_image` is
the exact definition that the lookup tables reproduce.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from pathviewer.core.stain import HED_VECTORS, complete_stain_matrix, od_to_rgb, rgb_to_od

#: Stain sets offered for deconvolution: name -> (stain names, two OD vectors).
STAIN_SETS: dict[str, tuple[tuple[str, str], np.ndarray]] = {
    "H&E": (("Haematoxylin", "Eosin"), HED_VECTORS[[0, 1]]),
    "H-DAB": (("Haematoxylin", "DAB"), HED_VECTORS[[0, 2]]),
}
#: Name of the stain set estimated from the slide (Macenko); its vectors live in the settings.
ESTIMATED = "Estimated"

#: What the view shows: the scan as it is, one of the two stains alone, or both stains
#: recombined without the residual (what neither stain explains).
CHANNELS = ("original", "stain1", "stain2", "stains")

#: Ranges the settings are kept in (the panel's sliders use them too).
BRIGHTNESS_RANGE = (-1.0, 1.0)
CONTRAST_RANGE = (0.1, 10.0)
GAMMA_RANGE = (0.1, 10.0)

#: Steps of the quantised concentrations in the stain lookup: 0.001 OD, which is under half an
#: 8-bit level at the bright end, where a level is the smallest OD step.
_OD_STEPS_PER_UNIT = 1000


def _vectors(matrix: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    rows = np.asarray(matrix, np.float64)
    if rows.shape != (2, 3) or not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise ValueError("stain vectors must be two rows of three non-negative numbers")
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    first, second = (tuple(float(v) for v in row) for row in rows)
    return (first[0], first[1], first[2]), (second[0], second[1], second[2])


def _clamp(value: Any, bounds: tuple[float, float], name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return min(max(number, bounds[0]), bounds[1])


@dataclass(frozen=True)
class DisplaySettings:
    """Display adjustments of one slide; the pixels of the slide itself are never changed.

    Attributes
    ----------
    brightness
        Added to every intensity, as a fraction of full scale (-1 to 1).
    contrast
        Slope of the intensities about mid grey (1 = unchanged).
    gamma
        Exponent ``1 / gamma`` applied last: above 1 brightens the mid-tones, as in image
        editors' levels (1 = unchanged).
    channel
        One of :data:`CHANNELS`: ``stain1`` and ``stain2`` are the first and second stain of
        ``stain_set`` alone, ``stains`` both of them.
    stain_set
        A key of :data:`STAIN_SETS`, or :data:`ESTIMATED` for ``vectors`` estimated from the slide.
    vectors
        The two stains' optical-density vectors (unit rows).
    """

    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    channel: str = "original"
    stain_set: str = "H&E"
    vectors: tuple[tuple[float, float, float], tuple[float, float, float]] = _vectors(
        STAIN_SETS["H&E"][1]
    )

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"unknown display channel {self.channel!r}")
        if self.stain_set not in STAIN_SETS and self.stain_set != ESTIMATED:
            raise ValueError(f"unknown stain set {self.stain_set!r}")
        object.__setattr__(self, "vectors", _vectors(self.vectors))
        for name, bounds in (
            ("brightness", BRIGHTNESS_RANGE),
            ("contrast", CONTRAST_RANGE),
            ("gamma", GAMMA_RANGE),
        ):
            object.__setattr__(self, name, _clamp(getattr(self, name), bounds, name))

    @property
    def is_identity(self) -> bool:
        """Whether the display shows the scan unchanged."""
        return self.channel == "original" and not self.adjusts_intensity

    @property
    def adjusts_intensity(self) -> bool:
        """Whether brightness, contrast or gamma differ from their neutral values."""
        return (self.brightness, self.contrast, self.gamma) != (0.0, 1.0, 1.0)

    @property
    def stain_names(self) -> tuple[str, str]:
        """Names of the two stains (an estimated set is read as H&E)."""
        return STAIN_SETS.get(self.stain_set, STAIN_SETS["H&E"])[0]

    def replace(self, **changes: Any) -> DisplaySettings:
        """A copy with ``changes``; choosing a named stain set also sets its vectors."""
        if changes.get("stain_set") in STAIN_SETS and "vectors" not in changes:
            changes["vectors"] = STAIN_SETS[changes["stain_set"]][1]
        return dataclasses.replace(self, **changes)

    def with_intensity_reset(self) -> DisplaySettings:
        """The same channel and stains with brightness, contrast and gamma neutral."""
        return self.replace(brightness=0.0, contrast=1.0, gamma=1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the app remembers per slide)."""
        data = dataclasses.asdict(self)
        data["vectors"] = [list(row) for row in self.vectors]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DisplaySettings:
        """Inverse of :meth:`to_dict`; unknown keys are ignored.

        Raises
        ------
        ValueError
            A value of the wrong type or out of its set (ranges are clamped).
        """
        known = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in data.items() if key in known})
        except (TypeError, ValueError) as error:
            raise ValueError(f"display settings: {error}") from None


def intensity_lut(settings: DisplaySettings) -> np.ndarray:
    """``(256,)`` uint8 lookup of brightness, contrast and gamma, applied in that order."""
    level = np.arange(256, dtype=np.float64) / 255.0
    level = (level - 0.5) * settings.contrast + 0.5 + settings.brightness
    level = np.clip(level, 0.0, 1.0) ** (1.0 / settings.gamma)
    return np.clip(np.rint(level * 255.0), 0, 255).astype(np.uint8)


#: Pixels are handled as little-endian 32-bit words ``0xXXRRGGBB``: the bytes B, G, R, X.
_WORD = np.dtype("<u4")

#: Pixels per block of an image deconvolved: blocks are shared among the renderer's threads,
#: and a block's intermediate arrays stay in the CPU cache (131072 was fastest at 1373 x 924).
_BLOCK_PIXELS = 131072

_pool: ThreadPoolExecutor | None = None


def _render_pool() -> ThreadPoolExecutor | None:
    """The threads a large image's blocks are spread over (None on a single core).

    numpy's lookups and integer arithmetic release the GIL, so blocks run in parallel.
    """
    global _pool
    workers = min(4, os.cpu_count() or 1)
    if workers < 2:
        return None
    if _pool is None:
        _pool = ThreadPoolExecutor(workers, thread_name_prefix="display")
    return _pool


def _pack(rgb: np.ndarray) -> np.ndarray:
    """``(n, 3)`` uint8 RGB as ``0xffRRGGBB`` words."""
    channels = rgb.astype(np.uint32)
    return np.asarray(
        0xFF000000 | (channels[:, 0] << 16) | (channels[:, 1] << 8) | channels[:, 2], _WORD
    )


@dataclass(frozen=True)
class _StainLookup:
    """Lookup tables that deconvolve a 32-bit pixel into one or two stain concentrations.

    Deconvolution is linear in optical density, and a pixel's OD is one value per channel, so
    a stain's concentration is a sum of a function of (G, B) and a function of R: two tables
    of 65536 entries give it exactly, in steps of 1/``_OD_STEPS_PER_UNIT``, as an index into
    ``colour`` (one stain) or into the bins of ``bins`` (two stains).

    Attributes
    ----------
    green_blue, red
        Per stain, the concentration steps (offset so that the lowest is 0) of the low 16 bits
        (G, B) and of the high 16 bits (X, R) of a pixel word.
    bins
        With two stains, per stain the bin of each concentration step (the first stain's bins
        already multiplied by the second's count), so that their sum indexes ``colour``.
    colour
        ``(n, 3)`` uint8 RGB shown for each index, before brightness, contrast and gamma.
    """

    green_blue: tuple[np.ndarray, ...]
    red: tuple[np.ndarray, ...]
    bins: tuple[np.ndarray, ...]
    colour: np.ndarray


#: Largest change of a displayed 8-bit level within one concentration bin of the two-stain
#: lookup: each stain then costs at most a quarter level (about half a bin's spread) of error.  At
#: 0.45 the two-stain table has ~0.5 M colours and stays within 0.1 level of the exact image
#: on average for H&E and H-DAB alike (0.5 left H-DAB at 0.102).
_LEVELS_PER_BIN = 0.45


def _concentration_steps(
    inverse: np.ndarray, stain: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (G, B) and (X, R) step tables of ``stain``, and the concentration of each step."""
    od = rgb_to_od(np.arange(256, dtype=np.float32)).astype(np.float64)
    red, green, blue = (od * inverse[channel, stain] for channel in range(3))
    green_blue = np.rint(_OD_STEPS_PER_UNIT * (green[:, None] + blue[None, :])).reshape(-1)
    red_steps = np.rint(_OD_STEPS_PER_UNIT * red)
    low = int(green_blue.min() + red_steps.min())
    high = int(green_blue.max() + red_steps.max())
    # The X byte of a word is ignored: the red table repeats for each of its 256 values.
    red_word = np.tile(red_steps - low, 256)
    # Negative concentrations (noise, light no stain explains) are clipped, as in stain_image.
    concentration = np.maximum(np.arange(low, high + 1) / _OD_STEPS_PER_UNIT, 0.0)
    return green_blue.astype(np.intp), red_word.astype(np.intp), concentration


def _stain_lookup(matrix: np.ndarray, stains: tuple[int, ...]) -> _StainLookup:
    """The lookup of :func:`pathviewer.core.stain.stain_image` for ``matrix`` and ``stains``."""
    inverse = np.linalg.inv(matrix)
    steps = [_concentration_steps(inverse, stain) for stain in stains]
    if len(stains) == 1:
        concentration = steps[0][2]
        od = concentration[:, None] * matrix[stains[0]][None, :]
        return _StainLookup((steps[0][0],), (steps[0][1],), (), od_to_rgb(od))
    # Two stains: their concentrations are quantised into bins within which the colour of
    # that stain alone changes by at most _LEVELS_PER_BIN, and a 2-D table of bin pairs gives
    # the colour (fine steps of both would make a table of millions of entries).
    bins, centres = [], []
    for (_, _, concentration), stain in zip(steps, stains, strict=True):
        levels = 255.0 * np.power(10.0, -concentration[:, None] * matrix[stain][None, :])
        change = np.abs(np.diff(levels, axis=0)).max(axis=1)
        index = np.floor(np.concatenate([[0.0], np.cumsum(change)]) / _LEVELS_PER_BIN)
        index = index.astype(np.intp)
        count = int(index[-1]) + 1
        members = np.maximum(np.bincount(index, minlength=count), 1)
        centres.append(np.bincount(index, weights=concentration, minlength=count) / members)
        bins.append(index)
    first, second = centres
    od = first[:, None, None] * matrix[stains[0]] + second[None, :, None] * matrix[stains[1]]
    colour = od_to_rgb(od.reshape(-1, 3))
    return _StainLookup(
        tuple(step[0] for step in steps),
        tuple(step[1] for step in steps),
        (bins[0] * len(second), bins[1]),
        colour,
    )


class DisplayRenderer:
    """Applies :class:`DisplaySettings` to pixels through lookup tables built once per setting.

    Pixels come as ``(h, w, 4)`` uint8 in the byte order of a 32-bit ``0xffRRGGBB`` image on a
    little-endian machine (B, G, R, X), which is what the viewer paints; or ``(h, w, 3)`` RGB.

    Stain channels reproduce :func:`pathviewer.core.stain.stain_image` within a level or two:
    one stain to 1/1000 OD, two stains through bins of at most half a level each (see
    :class:`_StainLookup`).  The stain tables are kept while only brightness, contrast or
    gamma change, which then just recolour the table.
    """

    def __init__(self, settings: DisplaySettings | None = None) -> None:
        self._settings = settings or DisplaySettings()
        self._lookup: _StainLookup | None = None
        self._lookup_key: tuple[object, ...] | None = None
        self._build()

    @property
    def settings(self) -> DisplaySettings:
        """The settings applied."""
        return self._settings

    @settings.setter
    def settings(self, settings: DisplaySettings) -> None:
        if settings != self._settings:
            self._settings = settings
            self._build()

    def _build(self) -> None:
        settings = self._settings
        self.intensity = intensity_lut(settings)
        # Pillow's point() tables: the lookup for each of R, G, B, and X (alpha) kept at 255.
        self._point_rgb = list(self.intensity) * 3
        self._point_bgrx = self._point_rgb + [255] * 256
        stains: tuple[int, ...] = {
            "original": (),
            "stain1": (0,),
            "stain2": (1,),
            "stains": (0, 1),
        }[settings.channel]
        if not stains:
            self._lookup = None
            self._lookup_key = None
            return
        key = (stains, settings.vectors)
        if key != self._lookup_key or self._lookup is None:
            matrix = complete_stain_matrix(np.asarray(settings.vectors))
            self._lookup = _stain_lookup(matrix, stains)
            self._lookup_key = key
        self._words = _pack(self.intensity[self._lookup.colour])

    def render_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """The adjusted ``(h, w, 3)`` uint8 RGB of an RGB image."""
        pixels = np.asarray(rgb, np.uint8)
        if self._lookup is None:
            return self._apply_intensity(pixels, has_x=False)
        height, width = pixels.shape[:2]
        words = _pack(pixels.reshape(-1, 3)).reshape(height, width)
        out = self._render_words(words).view(np.uint8).reshape(height, width, 4)
        return np.ascontiguousarray(out[..., 2::-1])

    def render_bgrx(self, pixels: np.ndarray) -> np.ndarray:
        """The adjusted ``(h, w, 4)`` pixels of a B, G, R, X image (X set to 255)."""
        pixels = np.asarray(pixels, np.uint8)
        if self._lookup is None:
            return self._apply_intensity(pixels, has_x=True)
        height, width = pixels.shape[:2]
        words = np.ascontiguousarray(pixels).view(_WORD).reshape(height, width)
        return self._render_words(words).view(np.uint8).reshape(height, width, 4)

    def _render_words(self, words: np.ndarray) -> np.ndarray:
        """Deconvolved ``0xffRRGGBB`` words of ``(h, w)`` pixel words, block by block."""
        out = np.empty(words.shape, _WORD)
        height, width = words.shape
        rows = max(1, _BLOCK_PIXELS // max(width, 1))
        starts = range(0, height, rows)

        def block(top: int) -> None:
            self._render_block(words[top : top + rows], out[top : top + rows])

        pool = _render_pool() if len(starts) > 1 else None
        if pool is None:
            for top in starts:
                block(top)
        else:
            list(pool.map(block, starts))
        return out

    def _render_block(self, words: np.ndarray, out: np.ndarray) -> None:
        lookup = self._lookup
        assert lookup is not None
        green_blue = np.bitwise_and(words, 0xFFFF, dtype=np.intp)
        high = np.right_shift(words, 16, dtype=np.intp)
        steps = []
        for gb_table, red_table in zip(lookup.green_blue, lookup.red, strict=True):
            step = gb_table[green_blue]
            step += red_table[high]
            steps.append(step)
        if lookup.bins:
            index = lookup.bins[0][steps[0]]
            index += lookup.bins[1][steps[1]]
        else:
            index = steps[0]
        # Indexing, unlike np.take(..., out=), releases the GIL, so the blocks run in parallel.
        out[...] = self._words[index]

    def _apply_intensity(self, pixels: np.ndarray, has_x: bool) -> np.ndarray:
        if pixels.ndim == 3 and pixels.flags.c_contiguous:
            # Pillow's point() is a C loop over the bytes, about 3x faster than numpy's take.
            mode = "RGBA" if has_x else "RGB"
            table = self._point_bgrx if has_x else self._point_rgb
            height, width = pixels.shape[:2]
            image = Image.frombuffer(mode, (width, height), pixels, "raw", mode, 0, 1)
            return np.asarray(image.point(table))
        out = self.intensity[pixels]
        if has_x:
            out[..., 3] = 255
        return out


@dataclass(frozen=True)
class AnnotationDisplay:
    """Which annotations are drawn, and how; hidden ones can be neither seen nor picked.

    Attributes
    ----------
    visible
        All annotations at once (key A).
    filled
        Regions filled as well as outlined.
    hidden_classes
        Classes switched off in the class palette.
    """

    visible: bool = True
    filled: bool = True
    hidden_classes: frozenset[str] = frozenset()

    def shows(self, class_name: str | None) -> bool:
        """Whether annotations of ``class_name`` (None: unclassified) are drawn and pickable."""
        return self.visible and class_name not in self.hidden_classes

    def with_class(self, class_name: str, shown: bool) -> AnnotationDisplay:
        """A copy with ``class_name`` shown or hidden."""
        hidden = set(self.hidden_classes)
        if shown:
            hidden.discard(class_name)
        else:
            hidden.add(class_name)
        return dataclasses.replace(self, hidden_classes=frozenset(hidden))
