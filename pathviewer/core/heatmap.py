"""Patch-probability heatmaps: the file the viewer overlays on a slide.

A :class:`Heatmap` is a regular grid of patch probabilities in level-0 pixel coordinates: cell
``(row, col)`` covers ``[x0 + col * pw, x0 + (col + 1) * pw) x [y0 + row * ph, ...)``.  Cells with
no tissue (or not scored) hold NaN.

File format (``.npz``, written atomically, read with ``allow_pickle=False``)::

    version     int64   1
    slide       str     the slide as named in the cohort CSV (or its path)
    dimensions  int64[2]  level-0 (width, height) of the slide
    origin      int64[2]  level-0 (x0, y0) of the grid's top-left corner
    patch_size  int64[2]  level-0 (width, height) of a cell
    probs       float32[rows, cols]  probability of the positive class, NaN = not scored
    method      str     model that produced it (``ngsd``, ``naive``, ``abmil``...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import PathViewerError

HEATMAP_VERSION = 1


class HeatmapError(PathViewerError):
    """A heatmap file is missing, corrupt or not a heatmap."""


@dataclass
class Heatmap:
    """Patch probabilities of one slide on its patch grid.

    Attributes
    ----------
    slide
        Slide name (as in the cohort CSV) or path.
    dimensions
        Level-0 (width, height) of the slide.
    origin
        Level-0 (x0, y0) of the grid.
    patch_size
        Level-0 (width, height) of one cell.
    probs
        ``(rows, cols)`` float32 probabilities, NaN where no tissue / not scored.
    method
        Name of the method that produced the probabilities.
    model
        Which model made it: run folder, resolution, stain normalisation (one line).
    warnings
        Reasons to distrust it on this slide (resolution or stain unlike the training slides).
    """

    slide: str
    dimensions: tuple[int, int]
    origin: tuple[int, int]
    patch_size: tuple[int, int]
    probs: np.ndarray
    method: str = ""
    model: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the grid."""
        return int(self.probs.shape[0]), int(self.probs.shape[1])

    @classmethod
    def from_patches(
        cls,
        slide: str,
        dimensions: tuple[int, int],
        patch_size: int | tuple[int, int],
        coords: np.ndarray,
        probs: np.ndarray,
        origin: tuple[int, int] = (0, 0),
        method: str = "",
    ) -> Heatmap:
        """Build a heatmap from scored patches.

        Parameters
        ----------
        slide, dimensions, origin, method
            See the attributes.
        patch_size
            Cell size in level-0 px (an int for square cells).
        coords
            ``(N, 2)`` level-0 (x, y) of each patch's top-left corner (on the grid).
        probs
            ``(N,)`` probabilities.
        """
        pw, ph = (patch_size, patch_size) if isinstance(patch_size, int) else patch_size
        cols = max(0, (dimensions[0] - origin[0]) // pw)
        rows = max(0, (dimensions[1] - origin[1]) // ph)
        grid = np.full((rows, cols), np.nan, np.float32)
        coords = np.asarray(coords, np.int64).reshape(-1, 2)
        if len(coords):
            c = (coords[:, 0] - origin[0]) // pw
            r = (coords[:, 1] - origin[1]) // ph
            ok = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
            grid[r[ok], c[ok]] = np.asarray(probs, np.float32).reshape(-1)[ok]
        return cls(slide, tuple(dimensions), tuple(origin), (pw, ph), grid, method)  # type: ignore[arg-type]

    def value_at(self, x: float, y: float) -> float:
        """Probability of the cell that contains level-0 point ``(x, y)`` (NaN outside/unscored)."""
        col = int(np.floor((x - self.origin[0]) / self.patch_size[0]))
        row = int(np.floor((y - self.origin[1]) / self.patch_size[1]))
        rows, cols = self.shape
        if 0 <= row < rows and 0 <= col < cols:
            return float(self.probs[row, col])
        return float("nan")

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Level-0 box (x, y, width, height) of a grid cell."""
        return (
            self.origin[0] + col * self.patch_size[0],
            self.origin[1] + row * self.patch_size[1],
            self.patch_size[0],
            self.patch_size[1],
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write to ``path`` (see :func:`save_heatmap`)."""
        save_heatmap(self, path)


def save_heatmap(heatmap: Heatmap, path: str | os.PathLike[str]) -> None:
    """Write a heatmap ``.npz`` atomically (a cancel never leaves a half-written file)."""
    with atomic_write(path, "wb") as handle:
        np.savez_compressed(
            handle,
            version=np.int64(HEATMAP_VERSION),
            slide=np.array(heatmap.slide),
            dimensions=np.asarray(heatmap.dimensions, np.int64),
            origin=np.asarray(heatmap.origin, np.int64),
            patch_size=np.asarray(heatmap.patch_size, np.int64),
            probs=np.asarray(heatmap.probs, np.float32),
            method=np.array(heatmap.method),
            model=np.array(heatmap.model),
            warnings=np.array(list(heatmap.warnings), dtype=str),
        )


def load_heatmap(path: str | os.PathLike[str]) -> Heatmap:
    """Read a heatmap written by :func:`save_heatmap`.

    Raises
    ------
    HeatmapError
        Missing file, not an ``.npz``, or fields missing / of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise HeatmapError(f"{path}: heatmap file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            probs = np.asarray(data["probs"], np.float32)
            dims = tuple(int(v) for v in data["dimensions"])
            origin = tuple(int(v) for v in data["origin"])
            patch = tuple(int(v) for v in data["patch_size"])
            slide = str(data["slide"])
            method = str(data["method"]) if "method" in data.files else ""
            model = str(data["model"]) if "model" in data.files else ""
            warnings = (
                tuple(str(w) for w in data["warnings"].reshape(-1))
                if "warnings" in data.files
                else ()
            )
    except HeatmapError:
        raise
    except Exception as error:
        raise HeatmapError(
            f"{path}: not a heatmap file ({type(error).__name__}: {error})"
        ) from None
    if probs.ndim != 2 or len(dims) != 2 or len(origin) != 2 or len(patch) != 2:
        raise HeatmapError(f"{path}: heatmap fields have the wrong shape")
    if min(patch) <= 0:
        raise HeatmapError(f"{path}: patch size must be positive")
    return Heatmap(slide, dims, origin, patch, probs, method, model, warnings)


#: Change of probability that saturates a difference heatmap's colours (see
#: :func:`difference_heatmap`): two runs of one method seldom differ by more.
DIFFERENCE_SPAN = 0.5


def difference_heatmap(before: Heatmap, after: Heatmap, span: float = DIFFERENCE_SPAN) -> Heatmap:
    """``after - before`` on one grid, mapped to 0-1 so that 0.5 means "no change".

    ``-span`` maps to 0 and ``+span`` to 1 (larger changes are clipped there), so a diverging
    colormap shows cells that ``after`` scores higher on one side, lower on the other.  Cells
    either heatmap did not score stay unscored (NaN).

    Raises
    ------
    HeatmapError
        The two are not on the same patch grid (origin, patch size and shape).
    """
    if (before.origin, before.patch_size, before.probs.shape) != (
        after.origin,
        after.patch_size,
        after.probs.shape,
    ):
        raise HeatmapError(
            "the two heatmaps are on different patch grids (origin "
            f"{before.origin} / {after.origin}, patch {before.patch_size} / {after.patch_size}, "
            f"shape {before.probs.shape} / {after.probs.shape}): run both models with the same"
            " patch size and resolution"
        )
    if not 0 < span <= 1:
        raise HeatmapError(f"the span of a difference heatmap must be in (0, 1], not {span}")
    delta = np.asarray(after.probs, np.float32) - np.asarray(before.probs, np.float32)
    change = np.clip(delta / span, -1.0, 1.0) / 2 + 0.5
    return Heatmap(
        after.slide,
        after.dimensions,
        after.origin,
        after.patch_size,
        change.astype(np.float32),
        method="difference",
        model=f"{after.model or 'B'} minus {before.model or 'A'}",
    )


def blend_heatmap(
    rgb: np.ndarray, heatmap: Heatmap, colors: np.ndarray, opacity: float = 0.6
) -> np.ndarray:
    """``rgb``, a picture of the whole slide at any size, with ``heatmap`` blended over it.

    Parameters
    ----------
    rgb
        ``(h, w, 3)`` uint8 thumbnail of the slide (its whole extent).
    colors
        ``(256, 3)`` uint8 colormap from probability 0 to 1.
    opacity
        Weight of the heatmap's colour where a patch was scored.
    """
    height, width = rgb.shape[:2]
    slide_w, slide_h = heatmap.dimensions
    rows, cols = heatmap.probs.shape
    # The cell under each thumbnail pixel (nearest), -1 outside the grid.
    xs = (np.arange(width) + 0.5) * slide_w / width
    ys = (np.arange(height) + 0.5) * slide_h / height
    col = np.floor((xs - heatmap.origin[0]) / heatmap.patch_size[0]).astype(int)
    row = np.floor((ys - heatmap.origin[1]) / heatmap.patch_size[1]).astype(int)
    inside = (
        (row[:, None] >= 0) & (row[:, None] < rows) & (col[None, :] >= 0) & (col[None, :] < cols)
    )
    probs = np.full((height, width), np.nan, np.float32)
    rr, cc = np.broadcast_arrays(row[:, None], col[None, :])
    probs[inside] = heatmap.probs[rr[inside], cc[inside]]
    scored = np.isfinite(probs)
    out = rgb.astype(np.float32)
    index = np.clip(np.rint(np.nan_to_num(probs) * 255), 0, 255).astype(int)
    tint = np.asarray(colors, np.float32)[index]
    out[scored] = (1 - opacity) * out[scored] + opacity * tint[scored]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
