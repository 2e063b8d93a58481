"""Per-patch scores of other tools read as heatmaps: CLAM's attention h5, Slideflow's heatmap npz.

:func:`pathviewer.core.heatmap_export.read_heatmap_file` is the one entry point; it picks a
reader here by file type.

CLAM (``.h5``)
    ``coords`` (N x 2, level-0 top-left x, y of each patch) and one score per patch in
    ``attention_scores`` (CLAM's heatmap block maps) or ``A``, or a dataset named by the caller.
    The patch side is ``coords.attrs["patch_size"]`` at ``coords.attrs["patch_level"]`` (what
    CLAM's patching writes) times that level's downsample, or a size given by the caller.
    Patches taken with overlap (heatmaps with ``overlap`` > 0) lie closer than a patch side: each
    becomes a cell of the patch spacing centred on its patch.

Slideflow (``.npz`` written by ``Heatmap.save_npz``)
    ``predictions`` (older files: ``logits``), a ``(rows, cols[, classes])`` grid with -1 where a
    tile was not scored.  Tile ``(row, col)`` is the level-0 square of side ``E`` (the tile width
    in pixels, ``tile_um / mpp``) at ``(col * S, row * S)``, with ``S = round(E / stride_div)``
    (``stride_div`` 2 by default) and ``cols = ceil((width + 1 - E) / S)``.  Tiles overlap, so each
    becomes a cell of side ``S`` centred on its tile.  The file does not record ``E``: without a
    given size it is the one that makes the grid fit the slide, and a grid that no size fits (or
    several do) is refused.

Scores that are not probabilities (any outside [0, 1], as raw attention is) are shown as
percentiles of the slide's scored patches: attention is heavy-tailed, so a min-max scale would
leave almost every patch at the bottom of the colour map, while percentiles say "in the top x %
of this slide", which is how CLAM draws its own heatmaps.  The heatmap carries a warning saying
so.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from pathviewer.core.errors import shown
from pathviewer.core.heatmap import Heatmap
from pathviewer.core.heatmap_export import (
    HeatmapExportError,
    HeatmapImportOptions,
    PatchSizeNeeded,
)

#: Score datasets of CLAM's h5 files, in the order they are looked for.
CLAM_SCORE_DATASETS = ("attention_scores", "A")
#: Slideflow's prediction arrays (``logits`` in files of its early versions).
SLIDEFLOW_ARRAYS = ("predictions", "logits")
#: Slideflow's mark of a tile that was not scored.
SLIDEFLOW_UNSCORED = -1.0
PERCENTILE_WARNING = (
    "scores are not probabilities: shown as percentiles of this slide's scored patches"
)


def unit_scores(values: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Scores on [0, 1]: kept when all are already there, else their percentile ranks.

    Returns
    -------
    (ndarray, str or None)
        float32 scores (NaN stays NaN) and a warning when they were ranked.
    """
    values = np.asarray(values, np.float32)
    finite = np.isfinite(values)
    scored = values[finite]
    if scored.size == 0 or (scored.min() >= 0.0 and scored.max() <= 1.0):
        return values, None
    from scipy.stats import rankdata

    ranks = rankdata(scored, method="average")  # ties share a rank
    out = np.full(values.shape, np.nan, np.float32)
    out[finite] = (ranks - 1) / (scored.size - 1) if scored.size > 1 else 0.5
    return out, PERCENTILE_WARNING


def _axis_cell(path: Path, values: np.ndarray, patch: int, axis: str) -> int:
    """Cell side along one axis: the patch spacing when patches overlap, else the patch side."""
    distinct = np.unique(values)
    if len(distinct) < 2:
        return patch
    step = int(np.gcd.reduce(np.diff(distinct)))
    if step < patch:
        return step
    if step % patch:
        raise HeatmapExportError(
            f"{path}: patches are {step} px apart in {axis} but {patch} px wide: not one grid"
        )
    return patch


def _grid_heatmap(
    slide: str,
    dimensions: tuple[int, int],
    cell: tuple[int, int],
    origin: tuple[int, int],
    cols: np.ndarray,
    rows: np.ndarray,
    values: np.ndarray,
    method: str,
    warnings: tuple[str, ...],
) -> Heatmap:
    # Cells that reach past the slide's edge are kept (a patch padded at the border is still
    # a scored patch), so the grid is the ceiling of the slide over the cell, or more where
    # a cell centred on an overlapping border patch starts past the edge.
    n_cols = max(1, math.ceil((dimensions[0] - origin[0]) / cell[0]), int(cols.max(initial=0)) + 1)
    n_rows = max(1, math.ceil((dimensions[1] - origin[1]) / cell[1]), int(rows.max(initial=0)) + 1)
    probs = np.full((n_rows, n_cols), np.nan, np.float32)
    probs[rows, cols] = values
    return Heatmap(slide, dimensions, origin, cell, probs, method=method, warnings=warnings)


def read_clam_h5(
    path: str | os.PathLike[str],
    slide: str,
    dimensions: tuple[int, int],
    options: HeatmapImportOptions,
) -> Heatmap:
    """Read a CLAM h5 (``coords`` and attention scores) as a heatmap of ``slide``.

    Raises
    ------
    PatchSizeNeeded
        The patch size is neither in the file nor in ``options``.
    HeatmapExportError
        Not HDF5, no ``coords``, no score dataset (the message lists those present), or patches
        off one grid or outside the slide.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            datasets = [name for name, item in h5.items() if isinstance(item, h5py.Dataset)]
            listing = ", ".join(datasets) or "none"
            if "coords" not in datasets:
                raise HeatmapExportError(
                    f"{path}: no 'coords' dataset, so not a CLAM h5 (datasets: {listing})"
                )
            if options.dataset is not None:
                if options.dataset not in datasets:
                    raise HeatmapExportError(
                        f"{path}: no dataset {shown(options.dataset)} (datasets: {listing})"
                    )
                score_name = options.dataset
            else:
                found = [name for name in CLAM_SCORE_DATASETS if name in datasets]
                if not found:
                    raise HeatmapExportError(
                        f"{path}: which dataset holds the scores? none is named "
                        f"{' or '.join(CLAM_SCORE_DATASETS)} (datasets: {listing}); name one"
                    )
                score_name = found[0]
            coords = np.asarray(h5["coords"][()])
            scores = np.asarray(h5[score_name][()])
            attrs = {key: h5["coords"].attrs[key] for key in h5["coords"].attrs}
    except HeatmapExportError:
        raise
    except OSError as error:  # h5py's for a file that is missing or not HDF5
        raise HeatmapExportError(f"{path}: cannot read as HDF5 ({error})") from None
    if coords.ndim != 2 or coords.shape[1] != 2 or not np.issubdtype(coords.dtype, np.number):
        raise HeatmapExportError(f"{path}: 'coords' is {coords.shape}, not N x 2 numbers")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1 or len(scores) != len(coords):
        raise HeatmapExportError(
            f"{path}: {score_name!r} is {scores.shape}; expected one score for each of the "
            f"{len(coords)} patches"
        )
    if not len(coords):
        raise HeatmapExportError(f"{path}: no patches")
    if not np.isfinite(coords).all() or not np.array_equal(coords, np.round(coords)):
        bad = int(
            np.nonzero(~np.isfinite(coords).all(axis=1) | (coords != np.round(coords)).any(axis=1))[
                0
            ][0]
        )
        raise HeatmapExportError(
            f"{path}: patch {bad + 1}: coordinates {coords[bad].tolist()} are not whole pixels"
        )
    coords = coords.astype(np.int64)
    patch = _clam_patch_size(path, attrs, options)
    width, height = dimensions
    outside = (
        (coords[:, 0] < 0) | (coords[:, 1] < 0) | (coords[:, 0] >= width) | (coords[:, 1] >= height)
    )
    if outside.any():
        i = int(np.nonzero(outside)[0][0])
        raise HeatmapExportError(
            f"{path}: patch {i + 1} at ({coords[i, 0]}, {coords[i, 1]}) lies outside the "
            f"{width} x {height} slide: is it for another slide?"
        )
    cell = (
        _axis_cell(path, coords[:, 0], patch, "x"),
        _axis_cell(path, coords[:, 1], patch, "y"),
    )
    # Overlapping patches: each cell is centred on its patch.
    centres = coords + np.array([(patch - cell[0]) // 2, (patch - cell[1]) // 2])
    origin = (int(centres[0, 0] % cell[0]), int(centres[0, 1] % cell[1]))
    cols = (centres[:, 0] - origin[0]) // cell[0]
    rows = (centres[:, 1] - origin[1]) // cell[1]
    values, warning = unit_scores(scores.astype(np.float32))
    return _grid_heatmap(
        slide,
        dimensions,
        cell,
        origin,
        cols,
        rows,
        values,
        method=f"{path.name} ({score_name})",
        warnings=(warning,) if warning else (),
    )


def _clam_patch_size(path: Path, attrs: dict[str, object], options: HeatmapImportOptions) -> int:
    """Level-0 side of one patch: given, or CLAM's ``patch_size`` at ``patch_level``."""
    if options.patch_size is not None:
        if options.patch_size <= 0:
            raise HeatmapExportError(
                f"{path}: patch size must be positive, not {options.patch_size}"
            )
        return int(options.patch_size)
    if "patch_size" not in attrs or "patch_level" not in attrs:
        raise PatchSizeNeeded(
            f"{path}: the patch size is unknown ('coords' has no patch_size and patch_level "
            "attributes, as CLAM's heatmap files do not): give the patch size in level-0 pixels"
        )
    try:
        size = float(np.asarray(attrs["patch_size"]).reshape(-1)[0])
        level = int(np.asarray(attrs["patch_level"]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        raise HeatmapExportError(
            f"{path}: coords attributes patch_size={shown(attrs['patch_size'])}, "
            f"patch_level={shown(attrs['patch_level'])} are not numbers"
        ) from None
    downsamples = options.level_downsamples
    if not 0 <= level < len(downsamples):
        raise HeatmapExportError(
            f"{path}: patches were cut at level {level}, but the slide has {len(downsamples)} "
            "level(s): is it for another slide?"
        )
    patch = round(size * downsamples[level])
    if not math.isfinite(size) or patch <= 0:
        raise HeatmapExportError(f"{path}: patch_size {size:g} is not a positive size")
    return int(patch)


def read_slideflow_npz(
    path: str | os.PathLike[str],
    slide: str,
    dimensions: tuple[int, int],
    options: HeatmapImportOptions,
) -> Heatmap:
    """Read Slideflow's ``Heatmap.save_npz`` grid as a heatmap of ``slide``.

    Raises
    ------
    HeatmapExportError
        No ``predictions`` array, a class that is not there, or a grid that does not fit the
        slide (with the given tile size, or with any one size).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            key = next((k for k in SLIDEFLOW_ARRAYS if k in data.files), None)
            if key is None:
                raise HeatmapExportError(
                    f"{path}: no 'predictions' array, so not a Slideflow heatmap "
                    f"(arrays: {', '.join(data.files) or 'none'})"
                )
            grid = np.asarray(data[key])
    except HeatmapExportError:
        raise
    except (OSError, ValueError) as error:  # not a zip, or a pickled array
        raise HeatmapExportError(f"{path}: cannot read as .npz ({error})") from None
    if not np.issubdtype(grid.dtype, np.number) or grid.ndim not in (2, 3):
        raise HeatmapExportError(
            f"{path}: {key!r} is a {grid.shape} {grid.dtype} array, not a rows x cols"
            " (x classes) grid of numbers"
        )
    method = path.name
    if grid.ndim == 3:
        classes = grid.shape[2]
        index = options.class_index
        if index is None:
            if classes > 2:
                raise HeatmapExportError(
                    f"{path}: predictions of {classes} classes: say which class to show"
                )
            index = classes - 1  # one outcome, or the second of two (the positive one)
        if not 0 <= index < classes:
            raise HeatmapExportError(f"{path}: no class {index} (the file has {classes})")
        grid = grid[:, :, index]
        method = f"{path.name} (class {index})"
    values = grid.astype(np.float32)
    values[values == SLIDEFLOW_UNSCORED] = np.nan
    values[~np.isfinite(values)] = np.nan
    rows, cols = values.shape
    tile, stride = _slideflow_tile(path, (rows, cols), dimensions, options)
    values, warning = unit_scores(values)
    offset = (tile - stride) // 2  # each cell centred on its tile
    rr, cc = np.nonzero(np.isfinite(values))
    return _grid_heatmap(
        slide,
        dimensions,
        (stride, stride),
        (offset, offset),
        cc,
        rr,
        values[rr, cc],
        method=method,
        warnings=(warning,) if warning else (),
    )


def slideflow_grid_shape(dimensions: tuple[int, int], tile: int, stride: int) -> tuple[int, int]:
    """(rows, cols) of Slideflow's tile grid on a slide (tiles wholly inside it)."""
    width, height = dimensions
    return (
        max(0, math.ceil((height + 1 - tile) / stride)),
        max(0, math.ceil((width + 1 - tile) / stride)),
    )


def _slideflow_tile(
    path: Path,
    shape: tuple[int, int],
    dimensions: tuple[int, int],
    options: HeatmapImportOptions,
) -> tuple[int, int]:
    """(tile side, stride) in level-0 px: from the given tile size, or the one that fits."""
    divisor = options.stride_div
    if divisor < 1:
        raise HeatmapExportError(f"{path}: stride divisor must be at least 1, not {divisor}")
    rows, cols = shape
    width, height = dimensions
    if options.patch_size is not None:
        tile = int(options.patch_size)
        stride = max(1, int(np.round(tile / divisor)))
        expected = slideflow_grid_shape(dimensions, tile, stride)
        if tile <= 0 or expected != shape:
            raise HeatmapExportError(
                f"{path}: a {rows} x {cols} tile grid does not fit this {width} x {height} slide"
                f" with {tile} px tiles every {stride} px ({expected[0]} x {expected[1]}"
                " expected): is it for another slide, or another tile size?"
            )
        return tile, stride
    # Tile sides E that give `n` tiles along a side of `length`: ceil((length + 1 - E) / S) == n.
    strides = np.arange(1, max(width, height) + 1, dtype=np.int64)
    low = np.maximum(1, np.maximum(width + 1 - cols * strides, height + 1 - rows * strides))
    high = np.minimum(width + 1 - (cols - 1) * strides, height + 1 - (rows - 1) * strides)  # excl.
    high = np.minimum(high, min(width, height) + 1)
    # ... and whose stride is S: round(E / divisor) == S.
    low = np.maximum(low, np.ceil((strides - 0.5) * divisor).astype(np.int64))
    high = np.minimum(high, np.floor((strides + 0.5) * divisor).astype(np.int64) + 1)
    fits = np.nonzero(low < high)[0]
    if rows < 1 or cols < 1 or len(fits) == 0:
        raise HeatmapExportError(
            f"{path}: a {rows} x {cols} tile grid fits no tile size on this {width} x {height}"
            f" slide (stride = tile / {divisor}): is it for another slide?"
        )
    if len(fits) > 1:
        first, last = int(strides[fits[0]]), int(strides[fits[-1]])
        raise PatchSizeNeeded(
            f"{path}: a {rows} x {cols} tile grid fits tiles every {first}-{last} px on this"
            " slide: give the tile size in level-0 pixels"
        )
    stride = int(strides[fits[0]])
    tile = int((low[fits[0]] + high[fits[0]] - 1) // 2)
    return tile, stride
