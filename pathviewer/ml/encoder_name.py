"""Names of user-chosen timm encoders (``timm:NAME``), torch-free so settings can check them.

A setting that picks an encoder (NGSD's ``arch``, label refinement's ``model``) takes one of its
built-in choices or ``timm:NAME[,key=value...]``: the timm architecture ``NAME`` built with
``pretrained=False`` and the given constructor arguments (Python literals), e.g.
``timm:vit_large_patch16_224,init_values=1e-5,dynamic_img_size=True`` for UNI's layout.  The
weights always come from a local file (:mod:`pathviewer.ml.encoders`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

from pathviewer.core.errors import TrainingError, shown

#: What starts the name of a timm encoder.
TIMM_PREFIX = "timm:"

#: Constructor arguments the project sets itself (the head is always removed, nothing loaded).
_RESERVED = {"pretrained", "num_classes", "pretrained_cfg", "pretrained_cfg_overlay"}


@dataclass(frozen=True)
class TimmSpec:
    """A parsed ``timm:NAME[,key=value...]``: architecture name and constructor arguments."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def is_timm(text: str) -> bool:
    """Whether a setting names a timm encoder (``timm:...``)."""
    return isinstance(text, str) and text.startswith(TIMM_PREFIX)


def parse_timm(text: str) -> TimmSpec:
    """Split ``timm:NAME[,key=value...]`` into name and keyword arguments.

    Raises
    ------
    TrainingError
        No name, an argument that is not ``key=literal``, or one the project sets itself.
    """
    if not is_timm(text):
        raise TrainingError(f"encoder {shown(text)} does not start with {TIMM_PREFIX!r}")
    name, *parts = [p.strip() for p in text[len(TIMM_PREFIX) :].split(",")]
    if not name or not name.replace("_", "").replace(".", "").isalnum():
        raise TrainingError(f"encoder {shown(text)}: give a timm model name after {TIMM_PREFIX!r}")
    kwargs: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise TrainingError(f"encoder {shown(text)}: {shown(part)} is not key=value")
        if key in _RESERVED:
            raise TrainingError(f"encoder {shown(text)}: {key} is set by PathViewer")
        try:
            kwargs[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            raise TrainingError(
                f"encoder {shown(text)}: {key}={shown(value.strip())} is not a number, "
                "True/False, a string in quotes or a tuple"
            ) from None
    return TimmSpec(name, kwargs)


def check_encoder(setting: str, value: str, builtin: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`TrainingError` unless ``value`` is a built-in choice or a valid timm name."""
    if value in builtin:
        return
    if is_timm(value):
        parse_timm(value)
        return
    raise TrainingError(
        f"setting {setting}={value!r} is not one of {', '.join(builtin)} or {TIMM_PREFIX}NAME"
    )
