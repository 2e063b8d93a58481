"""Tiling and background filtering of whole slides (NGSD steps 1 and 2).

**Tiling**: a slide is cut into non-overlapping square patches of ``patch_size`` level-0 pixels on
a grid anchored at (0, 0); partial patches at the right/bottom border are dropped (as the DSMIL
tiler does).  Patches are read at a *read downsample* (1.0 = full resolution; 2.0 = half), so a
512 px patch at downsample 2 is a 256 px image.

**Background filter**: the edge score of the DSMIL tiler -- the per-pixel sum over R, G, B of
PIL's ``FIND_EDGES`` filter, averaged over the patch -- keeps patches whose score is above a
threshold (15 by default; the patent's "information entropy < 15" rule).  White glass has almost
no edges, tissue has many.  To stay fast on gigapixel slides the score is first computed on a
coarse level for the whole grid at once (one read, one filter); only the candidate cells are read
at the read level and scored exactly.

The result, a :class:`PatchIndex`, is cached per slide in a ``.npz`` keyed by the slide's path,
modification time, size, a digest of its first and last bytes and the tiling settings.  A cached
index is checked against the slide and the settings before use (:func:`cached_index_problem`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from pathviewer.core.atomic import atomic_write
from pathviewer.core.progress import Progress, run_job
from pathviewer.core.slide import SlideSource, read_box, read_overview

#: Default edge-score threshold (DSMIL tiler, patent paragraph [0050]).
DEFAULT_THRESHOLD = 15.0

#: Coarse candidates are kept when their coarse score exceeds this fraction of the threshold.
#: Edges are sharper per pixel at a coarse scale, so a lenient factor never loses tissue; the exact
#: score at the read level decides.
COARSE_FRACTION = 0.25

#: Cells of the coarse score map are at least this many pixels wide.
COARSE_CELL_PX = 8

_CACHE_VERSION = 1

#: Bytes read from each end of a slide file for the cache key's content digest: enough to tell a
#: replaced file (same path, size and time, e.g. after ``cp -p``) apart at the cost of two reads.
_CONTENT_SAMPLE_BYTES = 64 * 1024

log = logging.getLogger(__name__)


def edge_score(rgb: np.ndarray) -> float:
    """Edge score of an RGB patch: mean over pixels of the sum over channels of ``FIND_EDGES``.

    Parameters
    ----------
    rgb
        ``(height, width, 3)`` uint8 image.

    Returns
    -------
    float
        0 for a uniform patch (glass); tens for tissue.  Keep a patch when the score is above
        :data:`DEFAULT_THRESHOLD`.
    """
    if rgb.size == 0:
        return 0.0
    summed = _edge_sum(rgb)
    return float(summed.mean())


def _edge_sum(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel sum over channels of ``FIND_EDGES``, with the one-pixel frame set to 0.

    PIL copies the source pixels into the frame it cannot filter, so a white 128 px patch would
    score 4 * 128 * 765 / 128**2 = 24 -- above the threshold.  The frame is no edge evidence.
    """
    edges = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).filter(ImageFilter.FIND_EDGES))
    summed = edges.astype(np.float32).sum(axis=2)
    summed[0, :] = 0
    summed[-1, :] = 0
    summed[:, 0] = 0
    summed[:, -1] = 0
    return summed


def edge_score_map(rgb: np.ndarray, cell: int, rows: int, cols: int) -> np.ndarray:
    """Edge score of every ``cell`` x ``cell`` block of ``rgb`` (one filter pass for the image).

    Returns a ``(rows, cols)`` float32 array; blocks beyond the image are 0.
    """
    summed = _edge_sum(rgb)
    out = np.zeros((rows, cols), np.float32)
    h = min(rows * cell, summed.shape[0]) // cell
    w = min(cols * cell, summed.shape[1]) // cell
    if h and w:
        blocks = summed[: h * cell, : w * cell].reshape(h, cell, w, cell)
        out[:h, :w] = blocks.mean(axis=(1, 3))
    return out


@dataclass
class PatchIndex:
    """The kept patches of one slide.

    Attributes
    ----------
    slide
        Path (or name) of the slide.
    dimensions
        Level-0 (width, height) of the slide.
    patch_size
        Patch side in level-0 pixels.
    read_downsample
        Downsample at which patches are read (1.0 = level 0).
    coords
        ``(N, 2)`` int64 level-0 (x, y) of each kept patch's top-left corner.
    scores
        ``(N,)`` float32 edge score of each kept patch at the read downsample.
    threshold
        The edge-score threshold used.
    """

    slide: str
    dimensions: tuple[int, int]
    patch_size: int
    read_downsample: float
    coords: np.ndarray
    scores: np.ndarray
    threshold: float = DEFAULT_THRESHOLD

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    @property
    def read_size(self) -> int:
        """Side in pixels of a patch image at the read downsample."""
        return max(1, round(self.patch_size / self.read_downsample))

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(rows, cols) of the full patch grid."""
        return grid_shape(self.dimensions, self.patch_size)

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` level-0 boxes (x, y, width, height) of the kept patches."""
        n = len(self)
        size = np.full((n, 2), self.patch_size, np.int64)
        return np.concatenate([self.coords.astype(np.int64), size], axis=1)

    def grid_cells(self) -> np.ndarray:
        """``(N, 2)`` (row, col) of each kept patch on the grid."""
        return (self.coords[:, ::-1] // self.patch_size).astype(np.int64)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index as ``.npz`` atomically."""
        with atomic_write(path, "wb") as handle:
            np.savez(
                handle,
                version=np.int64(_CACHE_VERSION),
                slide=np.array(self.slide),
                dimensions=np.asarray(self.dimensions, np.int64),
                patch_size=np.int64(self.patch_size),
                read_downsample=np.float64(self.read_downsample),
                coords=self.coords.astype(np.int64),
                scores=self.scores.astype(np.float32),
                threshold=np.float64(self.threshold),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PatchIndex:
        """Read an index written by :meth:`save` (raises ``ValueError``/``OSError`` when broken)."""
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != _CACHE_VERSION:
                raise ValueError("old patch index version")
            w, h = (int(v) for v in data["dimensions"])
            return cls(
                slide=str(data["slide"]),
                dimensions=(w, h),
                patch_size=int(data["patch_size"]),
                read_downsample=float(data["read_downsample"]),
                coords=data["coords"].astype(np.int64).reshape(-1, 2),
                scores=data["scores"].astype(np.float32),
                threshold=float(data["threshold"]),
            )


def grid_shape(dimensions: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """(rows, cols) of whole patches of ``patch_size`` level-0 px that fit in ``dimensions``."""
    return dimensions[1] // patch_size, dimensions[0] // patch_size


def grid_boxes(slide: SlideSource, patch_size: int) -> np.ndarray:
    """Every whole grid patch of a slide as ``(N, 4)`` level-0 boxes (x, y, w, h), row-major."""
    rows, cols = grid_shape(slide.dimensions, patch_size)
    ys, xs = np.mgrid[0:rows, 0:cols]
    n = rows * cols
    return np.stack(
        [
            xs.ravel() * patch_size,
            ys.ravel() * patch_size,
            np.full(n, patch_size),
            np.full(n, patch_size),
        ],
        axis=1,
    ).astype(np.int64)


def downsample_for_magnification(slide: SlideSource, magnification: float) -> float:
    """Read downsample that gives ``magnification`` (e.g. 20 for 20x); 1.0 when power is unknown."""
    power = slide.objective_power
    if not power or magnification <= 0:
        return 1.0
    return max(1.0, float(power) / float(magnification))


def read_patch(
    slide: SlideSource, x: int, y: int, patch_size: int, read_downsample: float = 1.0
) -> np.ndarray:
    """Read one patch at ``read_downsample``; returns ``(s, s, 3)`` uint8, s = patch/downsample.

    The pixels are :func:`~pathviewer.core.slide.read_box`'s for the box (one policy for every
    reader of patches).
    """
    size = max(1, round(patch_size / read_downsample))
    return read_box(slide, (int(x), int(y), patch_size, patch_size), size)


def _coarse_image(slide: SlideSource, downsample: float) -> tuple[np.ndarray, float]:
    """The whole slide at about ``downsample`` (bounded memory), and the downsample reached."""
    return read_overview(slide, downsample)


def _content_digest(path: Path, size: int) -> str:
    """Digest of the first and last :data:`_CONTENT_SAMPLE_BYTES` of a file."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        digest.update(handle.read(_CONTENT_SAMPLE_BYTES))
        if size > _CONTENT_SAMPLE_BYTES:
            handle.seek(max(_CONTENT_SAMPLE_BYTES, size - _CONTENT_SAMPLE_BYTES))
            digest.update(handle.read(_CONTENT_SAMPLE_BYTES))
    return digest.hexdigest()


def _cache_key(slide: SlideSource, settings: dict[str, object]) -> str | None:
    path = Path(slide.path)
    try:
        stat = path.stat()
        content = _content_digest(path, stat.st_size)
    except OSError:
        return None  # in-memory slides (or an unreadable file) have nothing to key on
    payload = json.dumps(
        {
            "path": str(path.resolve()),
            "mtime": stat.st_mtime_ns,
            "size": stat.st_size,
            "content": content,
            **settings,
        },
        sort_keys=True,
    )
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def cached_index_problem(
    index: PatchIndex,
    slide: SlideSource,
    patch_size: int,
    read_downsample: float,
    threshold: float,
) -> str | None:
    """Why a cached index cannot be the index of ``slide`` at these settings (None: it can).

    A cache is a file anyone can damage or copy about, so it is checked like input: its settings
    and dimensions must be the slide's, and each patch must be a whole grid cell inside the slide,
    listed once, with a finite score above the threshold.
    """
    if tuple(index.dimensions) != tuple(slide.dimensions):
        return f"made for a {index.dimensions[0]} x {index.dimensions[1]} px slide"
    if index.patch_size != patch_size:
        return f"made for {index.patch_size} px patches, not {patch_size}"
    if not np.isclose(index.read_downsample, read_downsample):
        return f"made at downsample {index.read_downsample:g}, not {read_downsample:g}"
    if not np.isclose(index.threshold, threshold):
        return f"made with threshold {index.threshold:g}, not {threshold:g}"
    coords, scores = index.coords, index.scores
    if coords.ndim != 2 or coords.shape[1] != 2 or scores.shape != (coords.shape[0],):
        return "coordinates and scores do not match"
    if not len(coords):
        return None
    width, height = slide.dimensions
    inside = (
        (coords[:, 0] >= 0)
        & (coords[:, 1] >= 0)
        & (coords[:, 0] + patch_size <= width)
        & (coords[:, 1] + patch_size <= height)
    )
    if not inside.all():
        x, y = coords[np.argmin(inside)]
        return f"patch at ({x}, {y}) lies outside the {width} x {height} px slide"
    on_grid = (coords % patch_size == 0).all(axis=1)
    if not on_grid.all():
        x, y = coords[np.argmin(on_grid)]
        return f"patch at ({x}, {y}) is not on the {patch_size} px grid"
    if len(np.unique(coords, axis=0)) != len(coords):
        return "a patch is listed twice"
    # >= in float32: a float64 score just above the threshold may round onto it when stored.
    if not (np.isfinite(scores) & (scores >= np.float32(threshold))).all():
        return f"a patch's score is not a number above the threshold {threshold:g}"
    return None


def cache_path(
    slide: SlideSource, cache_dir: str | os.PathLike[str], settings: dict[str, object]
) -> Path | None:
    """Cache file of a slide's index under ``cache_dir`` (None for in-memory slides)."""
    key = _cache_key(slide, settings)
    if key is None:
        return None
    return Path(cache_dir) / f"{Path(slide.path).stem}-{key}.npz"


def iter_tile_slide(
    slide: SlideSource,
    patch_size: int = 512,
    read_downsample: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    cache_dir: str | os.PathLike[str] | None = None,
    coarse_fraction: float = COARSE_FRACTION,
) -> Generator[Progress, None, PatchIndex]:
    """Tile a slide and filter background; a job generator (see :mod:`pathviewer.core.progress`).

    Parameters
    ----------
    slide
        The slide.
    patch_size
        Patch side in level-0 pixels.
    read_downsample
        Downsample at which patches are read and scored (1.0 = level 0).
    threshold
        Keep patches whose edge score is above this.
    cache_dir
        Folder for the cached index (None: no cache).
    coarse_fraction
        Coarse-stage leniency: a cell is a candidate when its coarse score exceeds
        ``coarse_fraction * threshold``.

    Returns
    -------
    PatchIndex
        Possibly empty (a slide with no tissue); callers decide whether that is an error.
    """
    if patch_size <= 0:
        raise ValueError("patch_size must be positive")
    read_downsample = max(1.0, float(read_downsample))
    settings: dict[str, object] = {
        "patch_size": int(patch_size),
        "read_downsample": round(read_downsample, 6),
        "threshold": float(threshold),
        "coarse_fraction": float(coarse_fraction),
        "version": _CACHE_VERSION,
    }
    cached = cache_path(slide, cache_dir, settings) if cache_dir is not None else None
    if cached is not None and cached.is_file():
        try:
            index = PatchIndex.load(cached)
            problem = cached_index_problem(index, slide, patch_size, read_downsample, threshold)
        except (OSError, ValueError, KeyError) as error:
            problem = f"unreadable ({error})"
        if problem is None:
            yield Progress("tiling", 1, 1, f"{Path(slide.path).name}: cached")
            return index
        # Never used: the index is rebuilt below and overwrites the bad file.
        log.warning("%s: tile-index cache %s discarded: %s", slide.path, cached, problem)
    rows, cols = grid_shape(slide.dimensions, patch_size)
    empty = PatchIndex(
        slide.path,
        slide.dimensions,
        patch_size,
        read_downsample,
        np.zeros((0, 2), np.int64),
        np.zeros(0, np.float32),
        threshold,
    )
    if rows == 0 or cols == 0:
        return empty
    # Stage 1: coarse score map (one read + one filter for the whole slide).
    coarse_ds = max(read_downsample, patch_size / COARSE_CELL_PX)
    coarse, reached = _coarse_image(slide, coarse_ds)
    cell = max(1, int(patch_size / reached))
    score_map = edge_score_map(coarse, cell, rows, cols)
    candidates = np.argwhere(score_map > threshold * coarse_fraction)
    # Stage 2: exact score of the candidates at the read downsample.
    coords: list[tuple[int, int]] = []
    scores: list[float] = []
    total = len(candidates)
    name = Path(slide.path).name
    for done, (row, col) in enumerate(candidates, start=1):
        x, y = int(col) * patch_size, int(row) * patch_size
        score = edge_score(read_patch(slide, x, y, patch_size, read_downsample))
        if score > threshold:
            coords.append((x, y))
            scores.append(score)
        if done % 64 == 0 or done == total:
            yield Progress("tiling", done, total, name)
    index = PatchIndex(
        slide.path,
        slide.dimensions,
        patch_size,
        read_downsample,
        np.asarray(coords, np.int64).reshape(-1, 2),
        np.asarray(scores, np.float32),
        threshold,
    )
    if cached is not None:
        index.save(cached)
    return index


def tile_slide(
    slide: SlideSource,
    patch_size: int = 512,
    read_downsample: float = 1.0,
    threshold: float = DEFAULT_THRESHOLD,
    cache_dir: str | os.PathLike[str] | None = None,
    coarse_fraction: float = COARSE_FRACTION,
) -> PatchIndex:
    """Blocking form of :func:`iter_tile_slide` (same parameters)."""
    return run_job(
        iter_tile_slide(slide, patch_size, read_downsample, threshold, cache_dir, coarse_fraction)
    )


def iter_tissue_boxes(
    slide: SlideSource, patch_size: int
) -> Generator[Progress, None, list[tuple[int, int, int, int]]]:
    """Level-0 ``(x, y, width, height)`` boxes of a slide's tissue patches, for patch labelling.

    Tissue is scored at a read downsample of ``patch_size / 64``: the edge filter needs about
    64 px per patch, and a coarser read keeps labelling a cohort fast.
    """
    downsample = max(1.0, patch_size / 64)
    index = yield from iter_tile_slide(slide, patch_size, downsample)
    return [(int(x), int(y), int(w), int(h)) for x, y, w, h in index.boxes()]
