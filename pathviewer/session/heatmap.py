"""What the heatmap of the open slide shows, and its top regions (Qt-free).

:class:`HeatmapDisplay` is the state the heatmap controller renders (colormap, opacity,
threshold, visibility, smoothing, tumour outlines, how top regions are sorted); the dock and
the View menu send intents that replace it.  :func:`find_regions` finds the connected regions
the dock lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathviewer.core.errors import PredictionsError
from pathviewer.core.heatmap import Heatmap, HeatmapError
from pathviewer.core.predictions import SLIDES_CSV, Predictions, read_predictions

if TYPE_CHECKING:
    from pathviewer.core.slide import SlideSource

#: Colormaps offered in the dock (the first is the default).
COLORMAPS = ("viridis", "inferno", "magma", "coolwarm", "jet")

#: How top regions can be sorted (descending): highest patch, mean, number of patches.
REGION_SORTS = ("max", "mean", "area")

#: Top regions never include patches below this probability, whatever the display threshold: at
#: threshold 0 the whole tissue would be one "region".
MIN_REGION_PROB = 0.5


@dataclass(frozen=True)
class HeatmapDisplay:
    """How the heatmap is drawn; changing it never re-reads or re-quantises the heatmap.

    Attributes
    ----------
    colormap
        One of :data:`COLORMAPS`.
    opacity
        0 (invisible) to 1 (opaque); kept in range.
    threshold
        Probabilities below it are transparent and not part of top regions; kept in 0..1.
    visible
        Whether the heatmap is drawn at all (key H).
    smooth
        Bilinear display instead of one flat square per patch.
    outlines
        Draw the tumour annotations of the slide's cohort row over it.
    sort_by
        One of :data:`REGION_SORTS`.
    """

    colormap: str = COLORMAPS[0]
    opacity: float = 0.6
    threshold: float = 0.0
    visible: bool = True
    smooth: bool = False
    outlines: bool = False
    sort_by: str = REGION_SORTS[0]

    def __post_init__(self) -> None:
        if self.colormap not in COLORMAPS:
            raise ValueError(
                f"unknown colormap {self.colormap!r} (choose from {', '.join(COLORMAPS)})"
            )
        if self.sort_by not in REGION_SORTS:
            raise ValueError(f"unknown region order {self.sort_by!r}")
        for name in ("opacity", "threshold"):
            value = float(getattr(self, name))
            if not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(np.clip(value, 0.0, 1.0)))
        for name in ("visible", "smooth", "outlines"):
            object.__setattr__(self, name, bool(getattr(self, name)))

    def replace(self, **changes: Any) -> HeatmapDisplay:
        """A copy with ``changes`` (validated and clamped like a new one)."""
        return dataclasses.replace(self, **changes)

    #: What is remembered between launches: not ``visible``, so that a heatmap loaded after a
    #: restart is never hidden by a key pressed in another session.
    REMEMBERED = ("colormap", "opacity", "threshold", "smooth", "outlines", "sort_by")

    def remembered(self) -> dict[str, Any]:
        """The settings kept between launches, JSON-ready."""
        return {name: getattr(self, name) for name in self.REMEMBERED}

    @classmethod
    def from_remembered(cls, data: object) -> HeatmapDisplay:
        """The display remembered (unknown keys and bad values ignored one by one)."""
        display = cls()
        if not isinstance(data, dict):
            return display
        for name in cls.REMEMBERED:
            if name in data:
                try:
                    display = display.replace(**{name: data[name]})
                except (TypeError, ValueError):
                    pass  # a value from an older or edited settings file: keep the default
        return display

    @property
    def region_threshold(self) -> float:
        """Lower bound of top-region patches: the threshold, at least :data:`MIN_REGION_PROB`."""
        return max(self.threshold, MIN_REGION_PROB)


@dataclass(frozen=True)
class Region:
    """A connected region of patches at or above the threshold.

    Attributes
    ----------
    max_prob, mean_prob
        Highest and mean probability of its patches.
    cells
        Number of patches.
    peak
        ``(row, col)`` of its highest patch (where the view is centred).
    bbox
        ``(row0, col0, row1, col1)`` inclusive cell bounds.
    """

    max_prob: float
    mean_prob: float
    cells: int
    peak: tuple[int, int]
    bbox: tuple[int, int, int, int]


def find_regions(
    probs: np.ndarray, threshold: float, sort_by: str = "max", limit: int = 100
) -> list[Region]:
    """Connected regions (8-connectivity) of patches with probability >= ``threshold``.

    Parameters
    ----------
    probs
        ``(rows, cols)`` probabilities, NaN = not scored.
    threshold
        Lower probability bound of a region's patches.
    sort_by
        ``"max"``, ``"mean"`` or ``"area"`` (descending).
    limit
        Most regions returned.
    """
    from scipy import ndimage

    values = np.asarray(probs, np.float32)
    mask = np.isfinite(values) & (values >= threshold)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    filled = np.where(mask, values, -1.0)
    maxima = ndimage.maximum(filled, labels, index)
    means = ndimage.mean(filled, labels, index)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    peaks = ndimage.maximum_position(filled, labels, index)
    boxes = ndimage.find_objects(labels)
    regions = [
        Region(
            float(maxima[i]),
            float(means[i]),
            int(sizes[i]),
            (int(peaks[i][0]), int(peaks[i][1])),
            (boxes[i][0].start, boxes[i][1].start, boxes[i][0].stop - 1, boxes[i][1].stop - 1),
        )
        for i in range(count)
    ]
    key = {
        "max": lambda r: (r.max_prob, r.mean_prob),
        "mean": lambda r: (r.mean_prob, r.max_prob),
        "area": lambda r: (r.cells, r.max_prob),
    }[sort_by]
    regions.sort(key=key, reverse=True)
    return regions[:limit]


def read_prediction_folder(pred_dir: str | Path) -> Predictions | None:
    """A predictions folder's slides and prediction.json, read once (None without slides.csv).

    Raises
    ------
    HeatmapError
        The folder is malformed (:func:`~pathviewer.core.predictions.read_predictions`'s line).
    """
    if not (Path(pred_dir) / SLIDES_CSV).is_file():
        return None
    try:
        return read_predictions(pred_dir, patches=False)
    except PredictionsError as error:
        raise HeatmapError(str(error)) from None


def heatmap_misfit(heatmap: Heatmap, slide: SlideSource | None) -> str:
    """Why ``heatmap`` does not belong to ``slide`` ("" when it does, or no slide).

    A heatmap made for a slide of another size (the same file name, another slide) is never
    drawn over it.
    """
    if slide is None or tuple(heatmap.dimensions) == tuple(slide.dimensions):
        return ""
    (w, h), (sw, sh) = heatmap.dimensions, slide.dimensions
    return f"made for a {w} × {h} px slide, not this {sw} × {sh} px one: not drawn"
