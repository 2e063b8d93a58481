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
from collections.abc import Mapping
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

#: Steps of the quantised optical density in the stain lookup: 0.001 OD, which is under half an
#: 8-bit level at the bright end, where a level is the smallest OD step.
_OD_STEPS_PER_UNIT = 1000
#: Largest optical density the lookup covers (``od_to_rgb`` is 0 beyond ~2.4 anyway).
_MAX_OD = 4.0


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


class DisplayRenderer:
    """Applies :class:`DisplaySettings` to pixels through lookup tables built once per setting.

    Pixels come as ``(h, w, 4)`` uint8 in the byte order of a 32-bit ``0xffRRGGBB`` image on a
    little-endian machine (B, G, R, X), which is what the viewer paints; or ``(h, w, 3)`` RGB.
    """

    def __init__(self, settings: DisplaySettings | None = None) -> None:
        self._settings = settings or DisplaySettings()
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
        self._stains: tuple[int, ...] = {
            "original": (),
            "stain1": (0,),
            "stain2": (1,),
            "stains": (0, 1),
        }[settings.channel]
        if not self._stains:
            return
        matrix = complete_stain_matrix(np.asarray(settings.vectors))
        inverse = np.linalg.inv(matrix)
        od = rgb_to_od(np.arange(256, dtype=np.float32)).astype(np.float64)
        # concentration of stain k = sum over channels c of od(value_c) * inverse[c, k]: one
        # 256-entry table per (stain, channel).
        self._concentration = [
            [(od * inverse[channel, stain]).astype(np.float32) for channel in range(3)]
            for stain in self._stains
        ]
        self._matrix = matrix[list(self._stains)].astype(np.float32)
        steps = np.arange(int(_MAX_OD * _OD_STEPS_PER_UNIT) + 1, dtype=np.float32)
        self._od_to_level = self.intensity[od_to_rgb(steps / _OD_STEPS_PER_UNIT)]
        if len(self._stains) == 1:
            # One stain: every output channel is a function of its concentration alone, so a
            # table per channel over the quantised concentration replaces the arithmetic.
            row = self._matrix[0]
            top = _MAX_OD / max(float(row.min()), 1e-3)
            levels = np.arange(int(top * _OD_STEPS_PER_UNIT) + 1, dtype=np.float32)
            levels /= _OD_STEPS_PER_UNIT
            self._single = [
                self.intensity[od_to_rgb(levels * row[channel])] for channel in range(3)
            ]

    def render_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """The adjusted ``(h, w, 3)`` uint8 RGB of an RGB image."""
        return self._render(np.asarray(rgb, np.uint8), (0, 1, 2), has_x=False)

    def render_bgrx(self, pixels: np.ndarray) -> np.ndarray:
        """The adjusted ``(h, w, 4)`` pixels of a B, G, R, X image (X set to 255)."""
        return self._render(np.asarray(pixels, np.uint8), (2, 1, 0), has_x=True)

    def _render(
        self, pixels: np.ndarray, rgb_order: tuple[int, int, int], has_x: bool
    ) -> np.ndarray:
        if not self._stains:
            return self._apply_intensity(pixels, has_x)
        channels = [pixels[..., index] for index in rgb_order]
        if len(self._stains) == 1:
            return self._render_single(pixels, channels, rgb_order, has_x)
        od_out = [np.zeros(pixels.shape[:2], np.float32) for _ in range(3)]
        for tables, row in zip(self._concentration, self._matrix, strict=True):
            concentration = tables[0][channels[0]]
            concentration += tables[1][channels[1]]
            concentration += tables[2][channels[2]]
            np.maximum(concentration, 0.0, out=concentration)
            for channel in range(3):
                od_out[channel] += concentration * row[channel]
        out = np.empty_like(pixels)
        top = len(self._od_to_level) - 1
        for channel, index in enumerate(rgb_order):
            steps = od_out[channel]
            steps *= _OD_STEPS_PER_UNIT
            steps += 0.5
            np.clip(steps, 0, top, out=steps)
            out[..., index] = self._od_to_level[steps.astype(np.intp)]
        if has_x:
            out[..., 3] = 255
        return out

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

    def _render_single(
        self,
        pixels: np.ndarray,
        channels: list[np.ndarray],
        rgb_order: tuple[int, int, int],
        has_x: bool,
    ) -> np.ndarray:
        tables = self._concentration[0]
        concentration = tables[0][channels[0]]
        concentration += tables[1][channels[1]]
        concentration += tables[2][channels[2]]
        concentration *= _OD_STEPS_PER_UNIT
        concentration += 0.5
        np.clip(concentration, 0, len(self._single[0]) - 1, out=concentration)
        steps = concentration.astype(np.intp)
        out = np.empty_like(pixels)
        for channel, index in enumerate(rgb_order):
            out[..., index] = self._single[channel][steps]
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
