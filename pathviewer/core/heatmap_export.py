"""Heatmaps out to, and in from, other tools: QuPath tiles, ASAP likelihood maps, TIFF, CSV.

A heatmap is a grid of level-0 cells (:class:`~pathviewer.core.heatmap.Heatmap`). QuPath shows
per-tile measurements as a measurement map, so cells leave as GeoJSON ``tile`` objects. ASAP
overlays a multiresolution image whose levels have the slide's own downsamples (a map with
other downsamples is drawn misaligned: computationalpathologygroup/ASAP#94), so the likelihood
map gets one level per slide level, each the slide level divided by one integer factor.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathviewer.core.annotations import (
    Annotation,
    qupath_offset,
    read_annotations,
    shift_annotations,
    tiles_to_geojson,
    write_annotations,
)
from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import PathViewerError
from pathviewer.core.heatmap import Heatmap
from pathviewer.core.slide import SlideSource

#: Export formats: name -> file-name suffix added to the slide's stem.
EXPORT_FORMATS = {
    "qupath": ".tiles.geojson",
    "asap": "_likelihood_map.tif",
    "tiff": "_probability.tif",
    "csv": ".patches.csv",
    "contours": ".tumour.geojson",
    "contours-asap": ".tumour.xml",
}
#: Formats that write tumour regions (outlines of the cells at or above a threshold).
CONTOUR_FORMATS = ("contours", "contours-asap")
#: Patch probability from which a cell belongs to a tumour region (the heatmap's top regions).
CONTOUR_THRESHOLD = 0.5
#: Measurement name of exported tiles (what QuPath's measurement map lists).
MEASUREMENT = "Tumor probability"
#: Map pixels per heatmap cell side in exported images (cells stay crisp when ASAP zooms in).
PIXELS_PER_CELL = 4


class HeatmapExportError(PathViewerError):
    """A heatmap cannot be exported, or a file cannot be read as a heatmap (one line)."""


class PatchSizeNeeded(HeatmapExportError):
    """A file of patch scores does not say how large its patches are (ask, then read again)."""


@dataclass(frozen=True)
class HeatmapImportOptions:
    """What another tool's file may not say about the slide or its patch grid.

    Attributes
    ----------
    level_downsamples
        The slide's level downsamples (CLAM records the level its patches were cut at).
    patch_size
        Level-0 side of one patch (CLAM) or tile (Slideflow); overrides what the file says.
    dataset
        The h5 dataset that holds the scores (default: ``attention_scores``, then ``A``).
    class_index
        Which class of a Slideflow grid with a class axis (default: the only or second one).
    stride_div
        Slideflow's tile size over its stride (its ``stride_div``, 2 unless changed).
    qupath_offset
        Where QuPath's origin lies in the slide's level-0 pixels
        (:func:`~pathviewer.core.annotations.qupath_offset`: ``openslide.bounds-x/y``); QuPath
        GeoJSON tiles are moved by it, as annotations from QuPath are.
    """

    level_downsamples: tuple[float, ...] = (1.0,)
    patch_size: int | None = None
    dataset: str | None = None
    class_index: int | None = None
    stride_div: int = 2
    qupath_offset: tuple[float, float] = (0.0, 0.0)


#: File types :func:`read_heatmap_file` reads, by reader.
GEOJSON_TILE_SUFFIXES = (".geojson", ".json")
TABLE_SUFFIXES = (".csv",)
CLAM_SUFFIXES = (".h5", ".hdf5")
SLIDEFLOW_SUFFIXES = (".npz",)


def foreign_heatmap_kind(path: str | os.PathLike[str]) -> str | None:
    """Which reader of :func:`read_heatmap_file` takes ``path``: ``geojson``, ``csv``, ``clam``
    or ``slideflow``; None for anything else (PathViewer's own heatmap ``.npz`` included).

    An ``.npz`` is Slideflow's when it holds ``predictions`` (or ``logits``) and no ``probs``.
    """
    suffix = Path(path).suffix.lower()
    if suffix in GEOJSON_TILE_SUFFIXES:
        return "geojson"
    if suffix in TABLE_SUFFIXES:
        return "csv"
    if suffix in CLAM_SUFFIXES:
        return "clam"
    if suffix in SLIDEFLOW_SUFFIXES:
        try:
            with np.load(path, allow_pickle=False) as data:
                names = set(data.files)
        except (OSError, ValueError):
            return None  # the heatmap reader reports the broken file
        if "probs" not in names and names & {"predictions", "logits"}:
            return "slideflow"
    return None


def cell_rows(heatmap: Heatmap) -> list[tuple[int, int, int, int, float]]:
    """``(x, y, width, height, probability)`` in level-0 px for every scored cell."""
    rows, cols = np.nonzero(np.isfinite(heatmap.probs))
    return [
        (*heatmap.cell_box(int(r), int(c)), float(heatmap.probs[r, c]))
        for r, c in zip(rows, cols, strict=True)
    ]


def write_qupath_tiles(heatmap: Heatmap, path: str | os.PathLike[str]) -> int:
    """Write the scored cells as QuPath tile objects with a ``Tumor probability`` measurement.

    Returns
    -------
    int
        Tiles written (the file is written atomically).
    """
    return tiles_to_geojson(cell_rows(heatmap), path, measurement=MEASUREMENT)


def tumour_contours(heatmap: Heatmap, threshold: float = CONTOUR_THRESHOLD) -> list[Annotation]:
    """The heatmap's tumour regions as ``Tumor`` annotations, largest first.

    A region is a set of scored cells at or above ``threshold`` that share edges; its outline
    follows the cells exactly (a union of their boxes, holes kept).  Each carries the region's
    highest and mean probability and its number of patches as measurements.
    """
    import shapely
    from scipy import ndimage

    probs = np.nan_to_num(np.asarray(heatmap.probs, np.float32), nan=-1.0)
    labels, count = ndimage.label(probs >= threshold)
    regions: list[tuple[int, Annotation]] = []
    for number in range(1, count + 1):
        rows, cols = np.nonzero(labels == number)
        boxes = [
            shapely.box(*_corners(heatmap, int(r), int(c))) for r, c in zip(rows, cols, strict=True)
        ]
        outline = shapely.union_all(boxes)
        values = probs[rows, cols]
        measurements = {
            "Max tumor probability": round(float(values.max()), 6),
            "Mean tumor probability": round(float(values.mean()), 6),
            "Patches": float(len(values)),
        }
        regions.append((len(values), Annotation(outline, "Tumor", measurements=measurements)))
    regions.sort(key=lambda item: -item[0])
    return [annotation for _, annotation in regions]


def _corners(heatmap: Heatmap, row: int, col: int) -> tuple[int, int, int, int]:
    x, y, width, height = heatmap.cell_box(row, col)
    return x, y, x + width, y + height


def map_factor(heatmap: Heatmap, pixels_per_cell: int = PIXELS_PER_CELL) -> int:
    """Level-0 pixels per map pixel: an integer, so the map is the slide divided by it.

    ASAP shows a likelihood map only when the slide's width and height, integer-divided by the
    map's, give the same scale.  With map sides ``side // factor`` that holds when the factor is
    at most the map side (the remainder ``side % factor`` is then under one map pixel's worth of
    the division), so on a small slide the factor is halved until it is (it stays a divisor of
    the cell size, and cells stay crisp).
    """
    factor = max(1, min(heatmap.patch_size) // max(1, pixels_per_cell))
    shortest = min(heatmap.dimensions)
    while factor > 1 and factor > shortest // factor:
        factor //= 2
    return factor


#: Map levels narrower than this are left out: rounding a few pixels would shift their
#: downsample away from the slide level's.
MIN_LEVEL_SIDE = 64


def map_level_sizes(
    level_dimensions: Sequence[tuple[int, int]], factor: int
) -> list[tuple[int, int]]:
    """Size of each map level: the slide's level integer-divided by ``factor``.

    Not rounded: ASAP reads the scale as slide size // map size, which a rounded-up side makes
    one less than ``factor`` (and different in width and height: ASAP then shows nothing).

    Level 0 is always there; coarser levels under :data:`MIN_LEVEL_SIDE` pixels are left out.
    """
    sizes = []
    for level, (width, height) in enumerate(level_dimensions):
        size = (max(1, width // factor), max(1, height // factor))
        if level and min(size) < MIN_LEVEL_SIDE:
            break
        sizes.append(size)
    return sizes


def render_map_level(
    heatmap: Heatmap, size: tuple[int, int], level_downsample: float, factor: int
) -> np.ndarray:
    """The heatmap sampled at the centre of each map pixel of one level; NaN where unscored."""
    width, height = size
    step = factor * level_downsample
    xs = (np.arange(width) + 0.5) * step
    ys = (np.arange(height) + 0.5) * step
    cols = np.floor((xs - heatmap.origin[0]) / heatmap.patch_size[0]).astype(np.int64)
    rows = np.floor((ys - heatmap.origin[1]) / heatmap.patch_size[1]).astype(np.int64)
    grid_rows, grid_cols = heatmap.shape
    col_ok = (cols >= 0) & (cols < grid_cols)
    row_ok = (rows >= 0) & (rows < grid_rows)
    out = np.full((height, width), np.nan, np.float32)
    if grid_rows and grid_cols and col_ok.any() and row_ok.any():
        sub = heatmap.probs[np.ix_(rows[row_ok], cols[col_ok])]
        out[np.ix_(np.nonzero(row_ok)[0], np.nonzero(col_ok)[0])] = sub
    return out


def write_probability_tiff(
    heatmap: Heatmap,
    path: str | os.PathLike[str],
    level_dimensions: Sequence[tuple[int, int]],
    level_downsamples: Sequence[float],
    mpp: float | None,
    kind: str = "asap",
) -> list[tuple[int, int]]:
    """Write a tiled multiresolution probability map aligned with the slide.

    Parameters
    ----------
    level_dimensions, level_downsamples
        The slide's pyramid: map level ``k`` is slide level ``k`` divided by
        :func:`map_factor`, so the map's downsamples are the slide's.
    mpp
        Microns per level-0 pixel of the slide (resolution tags), None when unknown.
    kind
        ``asap``: float32 probabilities, 0 where unscored (ASAP's likelihood-map LUT applies);
        ``tiff``: uint8 probability x 255, for viewers of ordinary images (QuPath, OpenSlide).

    Returns
    -------
    list of (int, int)
        The size of each level written.
    """
    import tifffile

    if kind not in ("asap", "tiff"):
        raise HeatmapExportError(f"unknown probability map kind {kind!r}")
    if tuple(level_dimensions[0]) != tuple(heatmap.dimensions):
        raise HeatmapExportError(
            f"{heatmap.slide}: the heatmap is for a {heatmap.dimensions[0]} x "
            f"{heatmap.dimensions[1]} slide, this slide is {level_dimensions[0][0]} x "
            f"{level_dimensions[0][1]}"
        )
    factor = map_factor(heatmap)
    sizes = map_level_sizes(level_dimensions, factor)
    # map pixels per centimetre at level 0 (None: the slide's resolution is unknown)
    per_cm = 1e4 / (mpp * factor) if mpp else None
    # Built in memory (a map is the slide divided by the cell size: megabytes), then written
    # atomically in one piece, so a failure leaves no partial file.
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer, bigtiff=True) as tiff:
        for level, size in enumerate(sizes):
            values = render_map_level(heatmap, size, float(level_downsamples[level]), factor)
            values = np.nan_to_num(values, nan=0.0)
            data = (
                values.astype(np.float32)
                if kind == "asap"
                else np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
            )
            scale = float(level_downsamples[level])
            resolution = None if per_cm is None else (per_cm / scale, per_cm / scale)
            tiff.write(
                data,
                tile=(256, 256),  # every level tiled: OpenSlide and ASAP expect it
                compression="zlib",
                photometric="minisblack",
                resolution=resolution,
                resolutionunit="CENTIMETER" if mpp else None,
                subfiletype=0 if level == 0 else 1,
                description=f"PathViewer probability map of {Path(heatmap.slide).name}"
                if level == 0
                else None,
                metadata=None,
            )
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getbuffer())
    return sizes


def read_heatmap_file(
    path: str | os.PathLike[str],
    slide: str,
    dimensions: tuple[int, int],
    options: HeatmapImportOptions | None = None,
) -> Heatmap:
    """Read another tool's per-patch output as a heatmap of ``slide``.

    Reads QuPath GeoJSON tiles or detections with one measurement (``.geojson``, ``.json``),
    CSV tables of ``x,y,width,height,value`` (level-0 px), CLAM's ``coords`` + attention h5
    (``.h5``) and Slideflow's heatmap grid (``.npz``); see :mod:`pathviewer.core.heatmap_import`
    for the last two.  Every patch must have the size of the first, on one grid.

    Parameters
    ----------
    options
        The slide's pyramid and what the file may not say (patch size, dataset, class).

    Raises
    ------
    PatchSizeNeeded
        The file does not say how large its patches are and ``options`` does not either.
    HeatmapExportError
        The file, row or feature that does not fit, in one line.
    """
    path = Path(path)
    options = options or HeatmapImportOptions()
    kind = foreign_heatmap_kind(path)
    if kind in ("clam", "slideflow"):
        from pathviewer.core import heatmap_import  # it imports this module

        reader = (
            heatmap_import.read_clam_h5 if kind == "clam" else heatmap_import.read_slideflow_npz
        )
        return reader(path, slide, dimensions, options)
    if kind == "geojson":
        dx, dy = (round(v) for v in options.qupath_offset)
        boxes = [(x + dx, y + dy, w, h, v) for x, y, w, h, v in _geojson_boxes(path)]
    elif kind == "csv":
        boxes = _csv_boxes(path)
    else:
        raise HeatmapExportError(
            f"{path}: not a tiles .geojson, an x,y,width,height,value .csv, a CLAM .h5 or a"
            " Slideflow heatmap .npz"
        )
    if not boxes:
        raise HeatmapExportError(f"{path}: no patches")
    width, height = boxes[0][2], boxes[0][3]
    origin = (boxes[0][0] % width, boxes[0][1] % height)
    for i, (x, y, w, h, _value) in enumerate(boxes):
        if (w, h) != (width, height) or (x - origin[0]) % w or (y - origin[1]) % h:
            raise HeatmapExportError(
                f"{path}: patch {i + 1} ({x}, {y}, {w} x {h}) is off the grid of the first patch"
                f" ({width} x {height} from {origin})"
            )
        if x >= dimensions[0] or y >= dimensions[1]:
            raise HeatmapExportError(
                f"{path}: patch {i + 1} at ({x}, {y}) lies outside the {dimensions[0]} x "
                f"{dimensions[1]} slide: is it for another slide?"
            )
    coords = np.array([(b[0], b[1]) for b in boxes], np.int64)
    values = np.array([b[4] for b in boxes], np.float32)
    cols = (coords[:, 0] - origin[0]) // width
    rows = (coords[:, 1] - origin[1]) // height
    # The grid of patches wholly inside the slide, grown to hold patches that reach past its
    # edge (a padded border patch is still a scored patch, and must not be dropped).
    n_cols = max((dimensions[0] - origin[0]) // width, int(cols.max()) + 1)
    n_rows = max((dimensions[1] - origin[1]) // height, int(rows.max()) + 1)
    probs = np.full((n_rows, n_cols), np.nan, np.float32)
    probs[rows, cols] = values
    return Heatmap(slide, dimensions, origin, (width, height), probs, method=path.name)


def _geojson_boxes(path: Path) -> list[tuple[int, int, int, int, float]]:
    annotations = read_annotations(path)
    boxes = []
    for i, annotation in enumerate(annotations):
        if len(annotation.measurements) != 1 and MEASUREMENT not in annotation.measurements:
            raise HeatmapExportError(
                f"{path}: feature {i + 1} has {len(annotation.measurements)} measurements; "
                f"expected one (or {MEASUREMENT!r})"
            )
        value = annotation.measurements.get(
            MEASUREMENT, next(iter(annotation.measurements.values()))
        )
        x0, y0, x1, y1 = annotation.geometry.bounds
        boxes.append(_box(path, f"feature {i + 1}", x0, y0, x1 - x0, y1 - y0, value))
    return boxes


def _csv_boxes(path: Path) -> list[tuple[int, int, int, int, float]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"x", "y", "width", "height", "value"} - set(reader.fieldnames or ())
            if missing:
                raise HeatmapExportError(f"{path}: missing columns {', '.join(sorted(missing))}")
            boxes = []
            for line, row in enumerate(reader, start=2):
                try:
                    numbers = [float(row[k]) for k in ("x", "y", "width", "height", "value")]
                except (TypeError, ValueError):
                    raise HeatmapExportError(f"{path}: row {line}: not numbers") from None
                boxes.append(_box(path, f"row {line}", *numbers))
            return boxes
    except UnicodeDecodeError:
        raise HeatmapExportError(f"{path}: not UTF-8 text") from None


def _box(
    path: Path, where: str, x: float, y: float, w: float, h: float, value: float
) -> tuple[int, int, int, int, float]:
    numbers = (x, y, w, h, value)
    if not all(math.isfinite(v) for v in numbers) or w <= 0 or h <= 0:
        raise HeatmapExportError(f"{path}: {where}: invalid box or value {numbers}")
    if not 0.0 <= value <= 1.0:
        raise HeatmapExportError(f"{path}: {where}: value {value} is not in [0, 1]")
    return round(x), round(y), round(w), round(h), float(value)


def write_heatmap(
    heatmap: Heatmap,
    path: str | os.PathLike[str],
    fmt: str,
    slide: SlideSource | None = None,
) -> int:
    """Write ``heatmap`` in export format ``fmt`` (see :data:`EXPORT_FORMATS`).

    Parameters
    ----------
    slide
        The slide (its pyramid and resolution): needed for ``asap`` and ``tiff``.  For the
        QuPath formats (``qupath``, ``contours``) its bounds: QuPath shows a slide with
        ``openslide.bounds-x/y`` (MRXS) cropped to them, so the tiles and regions are moved
        into QuPath's coordinates, as exported annotations are.

    Returns
    -------
    int
        Scored cells written (regions for the contour formats).
    """
    export_name(heatmap.slide, fmt)  # an unknown format is refused here
    dx, dy = qupath_offset(slide.properties) if slide is not None else (0.0, 0.0)
    if fmt == "qupath":
        if dx or dy:
            ox, oy = heatmap.origin
            heatmap = dataclasses.replace(heatmap, origin=(ox - round(dx), oy - round(dy)))
        return write_qupath_tiles(heatmap, path)
    if fmt == "csv":
        return write_table(heatmap, path)
    if fmt in CONTOUR_FORMATS:
        regions = tumour_contours(heatmap)
        if fmt == "contours":  # ASAP shows the whole slide: its regions stay where they are
            regions = shift_annotations(regions, -dx, -dy)
        write_annotations(path, regions)
        return len(regions)
    if slide is None:
        raise HeatmapExportError(f"{heatmap.slide}: a {fmt} map needs the slide's pyramid")
    mpp = slide.mpp[0] if slide.mpp else None
    write_probability_tiff(
        heatmap, path, slide.level_dimensions, slide.level_downsamples, mpp, kind=fmt
    )
    return int(np.isfinite(heatmap.probs).sum())


def export_name(slide: str, fmt: str) -> str:
    """The file a format's tool expects for ``slide`` (``<stem><suffix>``)."""
    if fmt not in EXPORT_FORMATS:
        raise HeatmapExportError(
            f"unknown export format {fmt!r} (one of {', '.join(EXPORT_FORMATS)})"
        )
    return Path(slide).stem + EXPORT_FORMATS[fmt]


def write_table(heatmap: Heatmap, path: str | os.PathLike[str]) -> int:
    """Write ``x,y,width,height,value`` rows (what :func:`read_heatmap_file` reads back)."""
    rows = cell_rows(heatmap)
    with atomic_write(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["x", "y", "width", "height", "value"])
        # 9 significant digits: every float32 score reads back as itself
        writer.writerows((x, y, w, h, f"{p:.9g}") for x, y, w, h, p in rows)
    return len(rows)
