"""Realistic synthetic H&E cohort: real tissue texture, subtle tumour, stain variation per slide.

The stylised cohort of :mod:`pathviewer.core.synth` draws cartoon glands and nests; a method can
look perfect on it and fail on real tissue.  This generator keeps that module's layouts, ground
truth and pyramid writer and changes what the pixels are made of:

* **Texture** comes from a real H&E scan (the CC0 ``CMU-1-Small-Region`` crop shipped in
  ``resources/textures``, or a user's slide): fully covered tissue crops are separated into stain
  concentrations (Ruifrok & Johnston), sorted by haematoxylin density into a cellular ("Normal")
  and a fibrous ("Stroma") pool, and quilted with feathered seams into periodic atlases.
* **Tumour** is the *same* cellular texture at the same place with a tunable cytological change
  (``strength`` 0-1): nuclei enlarged, extra nuclei (crowding), darker nuclei (hyperchromasia) and
  less eosin (loss of stroma and cytoplasm).  Normal and tumour differ by that change alone, so a
  model cannot separate them by texture identity.
* **Slides** differ in stain vectors and concentrations (strong, as between labs), section
  thickness, scanner blur and JPEG quality; tumour covers a per-slide fraction of the tissue
  (drawn between ``tumour_fraction`` bounds), some slides with a single small focus.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from pathviewer.core import synth
from pathviewer.core.annotations import write_geojson
from pathviewer.core.cohort import write_cohort
from pathviewer.core.errors import PathViewerError
from pathviewer.core.progress import Progress
from pathviewer.core.stain import HED_VECTORS, separate_stains
from pathviewer.core.tiff_writer import TILE, pyramid_sizes, write_pyramid_tiff

#: The texture shipped with PathViewer (a resource name).
DEFAULT_TEXTURE = "textures/cmu1-small-region-tissue.jpg"
#: Edge of one quilted texture cell (level-0 px).
CELL = 256
#: Feathered overlap between quilted cells (px on each side).
OVERLAP = 32
#: Edge of the realistic atlases (level-0 px, a power of two).
REALISTIC_ATLAS = 2048
#: Stains of the atlases: haematoxylin, eosin and the residual of Ruifrok's third vector.
_STAIN_BASIS = HED_VECTORS.astype(np.float32)


@dataclass(frozen=True)
class TumourChange:
    """How tumour differs from normal tissue, from a single ``strength`` in [0, 1].

    Attributes
    ----------
    enlarge_px
        Radius in level-0 px by which nuclei grow (grey dilation of the nuclear layer).
    crowding
        Extra nuclei as a share of the existing ones (a shifted, thinned copy of the nuclei).
    hyperchromasia
        Relative increase of the haematoxylin density inside nuclei.
    eosin_loss
        Relative decrease of eosin (less stroma and cytoplasm between crowded cells).
    """

    enlarge_px: int
    crowding: float
    hyperchromasia: float
    eosin_loss: float

    @classmethod
    def from_strength(cls, strength: float) -> TumourChange:
        """The change at ``strength`` (0 = none, 0.5 = subtle, 1 = obvious at 20x)."""
        if not 0.0 <= strength <= 1.0:
            raise PathViewerError(f"tumour strength must be between 0 and 1 (got {strength})")
        return cls(
            enlarge_px=int(round(2.0 * strength)),
            crowding=0.9 * strength,
            hyperchromasia=0.45 * strength,
            eosin_loss=0.35 * strength,
        )


def load_texture(source: str | os.PathLike[str] | None = None, max_side: int = 4096) -> np.ndarray:
    """RGB uint8 tissue texture at about 0.5 um/px (20x).

    Parameters
    ----------
    source
        A slide or image file; None for the texture shipped with PathViewer.  A slide is read
        at the level nearest 0.5 um/px (when it states its MPP), from the part of the tissue
        that fills a ``max_side`` square best.
    max_side
        Largest side read from a user's slide.

    Raises
    ------
    SlideError
        The file cannot be opened or read.
    """
    from pathviewer.core.slide import open_slide

    if source is None:
        from pathviewer.resources import resource_path

        with Image.open(resource_path(DEFAULT_TEXTURE)) as image:
            return np.asarray(image.convert("RGB"))
    slide = open_slide(source)
    try:
        mpp = slide.mpp
        downsample = max(1.0, 0.5 / mpp[0]) if mpp else 1.0
        level = slide.best_level_for_downsample(downsample)
        level_ds = slide.level_downsamples[level]
        width, height = slide.level_dimensions[level]
        # Place the window on the tissue: the densest max_side square of a thumbnail.
        thumb_ds = max(width, height) / 512.0 * level_ds
        thumb = slide.thumbnail((512, 512))
        od = -np.log10(np.maximum(np.asarray(thumb, np.float32), 1.0) / 255.0).sum(axis=-1)
        side = min(max_side, width, height)
        cell = max(1, int(round(side * level_ds / thumb_ds)))
        density = ndimage.uniform_filter((od > 0.3).astype(np.float32), size=cell, mode="constant")
        cy, cx = np.unravel_index(int(np.argmax(density)), density.shape)
        x0 = int(np.clip(cx * thumb_ds - side * level_ds / 2, 0, (width - side) * level_ds))
        y0 = int(np.clip(cy * thumb_ds - side * level_ds / 2, 0, (height - side) * level_ds))
        rgb = slide.read_region((x0, y0), level, (side, side))
    finally:
        slide.close()
    scale = level_ds / downsample
    if abs(scale - 1.0) > 0.05:
        size = max(1, int(round(side * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.LANCZOS))
    return np.asarray(rgb, np.uint8)


def tissue_cells(
    texture: np.ndarray, size: int = CELL + 2 * OVERLAP, stride: int = 96
) -> tuple[np.ndarray, np.ndarray]:
    """Stain concentrations of every fully covered ``size`` square crop, and their H density.

    Returns
    -------
    cells
        ``(n, size, size, 3)`` float32 concentrations (H, E, residual).
    haematoxylin
        ``(n,)`` mean haematoxylin concentration of each crop.

    Raises
    ------
    PathViewerError
        Fewer than 8 crops are covered by tissue.
    """
    conc = separate_stains(texture, _STAIN_BASIS)
    tissue = (rgb_od_sum(texture) > 0.15).astype(np.float32)
    h, w = tissue.shape
    cells, dens = [], []
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            if tissue[y : y + size, x : x + size].mean() < 0.85:  # real tissue has clefts
                continue
            crop = conc[y : y + size, x : x + size]
            cells.append(crop)
            dens.append(float(crop[..., 0].mean()))
    if len(cells) < 8:
        raise PathViewerError(
            f"texture has too little tissue: {len(cells)} fully covered {size} px squares "
            "(need 8); choose a slide region with more tissue"
        )
    return np.stack(cells).astype(np.float32), np.asarray(dens, np.float32)


def rgb_od_sum(rgb: np.ndarray) -> np.ndarray:
    """Summed optical density of RGB pixels (0 on glass, ~0.3 and up in tissue)."""
    return -np.log10(np.maximum(np.asarray(rgb, np.float32), 1.0) / 255.0).sum(axis=-1)


def quilt(cells: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """A periodic ``(n, n, 3)`` texture of randomly turned crops with feathered seams.

    Each grid cell receives a random crop in one of its 8 orientations; crops overlap their
    neighbours by :data:`OVERLAP` px and are blended with a linear ramp, wrapping at the edges
    so the atlas tiles without a seam.
    """
    size = cells.shape[1]
    grid = n // CELL
    acc = np.zeros((n, n, cells.shape[-1]), np.float32)
    weight = np.zeros((n, n), np.float32)
    ramp = np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5)
    ramp = np.clip(ramp / (2 * OVERLAP), 0.02, 1.0).astype(np.float32)
    feather = ramp[:, None] * ramp[None, :]
    for gy in range(grid):
        for gx in range(grid):
            crop = cells[int(rng.integers(len(cells)))]
            crop = np.rot90(crop, int(rng.integers(4)))
            if rng.uniform() < 0.5:
                crop = crop[:, ::-1]
            rows = (gy * CELL - OVERLAP + np.arange(size)) % n
            cols = (gx * CELL - OVERLAP + np.arange(size)) % n
            acc[np.ix_(rows, cols)] += crop * feather[..., None]
            weight[np.ix_(rows, cols)] += feather
    return acc / weight[..., None]


def apply_tumour_change(
    conc: np.ndarray, change: TumourChange, rng: np.random.Generator
) -> np.ndarray:
    """Tumour version of a periodic cellular texture (concentrations ``(n, n, 3)``)."""
    haem = conc[..., 0]
    tissue_h = haem[haem > 0.05]
    threshold = float(np.percentile(tissue_h, 85)) if tissue_h.size else 0.5
    nuclei = haem > threshold
    layer = np.where(nuclei, haem, 0.0).astype(np.float32)
    if change.enlarge_px > 0:
        size = 2 * change.enlarge_px + 1
        layer = ndimage.grey_dilation(layer, size=(size, size), mode="wrap")
    if change.crowding > 0:
        # Extra nuclei: a shifted copy of the nuclear layer, thinned to the wanted share of its
        # connected nuclei, so new nuclei have real shapes and chromatin.
        labels, count = ndimage.label(layer > threshold)
        keep = np.concatenate([[False], rng.uniform(size=count) < change.crowding])
        dy, dx = (int(v) for v in rng.integers(9, 24, 2) * rng.choice([-1, 1], 2))
        extra = np.roll(np.where(keep[labels], layer, 0.0), (dy, dx), axis=(0, 1))
        layer = np.maximum(layer, extra)
    grown = layer > threshold
    out = conc.copy()
    darker = np.where(layer > 0, np.maximum(haem, layer), haem)  # keeps negative values as they are
    out[..., 0] = darker * np.where(grown, 1.0 + change.hyperchromasia, 1.0)
    # Less eosin everywhere in tumour, most where cells crowd (no clipping: deconvolution
    # gives real pixels slightly negative concentrations, and those must survive unchanged).
    out[..., 1] *= np.clip(1.0 - change.eosin_loss * np.where(grown, 1.5, 1.0), 0.0, 1.0)
    return out.astype(np.float32)


_CACHE: dict[tuple[object, ...], synth.PeriodicAtlases] = {}


def make_realistic_atlases(
    seed: int,
    strength: float,
    texture: str | os.PathLike[str] | None = None,
    size: int = REALISTIC_ATLAS,
) -> synth.PeriodicAtlases:
    """Build (or reuse) the concentration atlases (H, E, residual) of a cohort seed, tumour strength and texture source."""
    key = (seed, strength, str(texture), size)
    if key in _CACHE:
        return _CACHE[key]
    cells, haem = tissue_cells(load_texture(texture))
    order = np.argsort(haem)
    half = len(order) // 2
    rng = np.random.default_rng([seed, 0, 201])
    # The cellular half (more haematoxylin) is "Normal"; the fibrous half "Stroma".
    normal = quilt(cells[order[half:]], rng, size)
    stroma = quilt(cells[order[:half]], rng, size)
    tumour = apply_tumour_change(normal, TumourChange.from_strength(strength), rng)
    if len(_CACHE) >= 2:  # ~300 MB each
        _CACHE.pop(next(iter(_CACHE)))
    atlases = synth.PeriodicAtlases(
        {synth.NORMAL: normal, synth.STROMA: stroma, synth.TUMOUR: tumour}
    )
    _CACHE[key] = atlases
    return atlases


@dataclass(frozen=True)
class ScanLook:
    """One slide's staining and scanning: what varies between labs and scanners."""

    stain: np.ndarray  # (3, 3) OD vectors of H, E, residual for this slide
    amount: np.ndarray  # (3,) stain concentration factors
    blur: float  # Gaussian sigma of the optics, level-0 px
    quality: int  # JPEG quality

    @classmethod
    def draw(cls, rng: np.random.Generator, variation: float = 1.0) -> ScanLook:
        """A random look; ``variation`` scales how far stains stray from the reference."""
        vectors = _STAIN_BASIS.copy()
        for row in (0, 1):
            vectors[row] = np.clip(vectors[row] + rng.normal(0, 0.07 * variation, 3), 0.02, None)
            vectors[row] /= np.linalg.norm(vectors[row])
        amount = np.array(
            [
                rng.uniform(1 - 0.35 * variation, 1 + 0.4 * variation),
                rng.uniform(1 - 0.4 * variation, 1 + 0.35 * variation),
                1.0,
            ],
            np.float32,
        )
        return cls(vectors, amount, float(rng.uniform(0.0, 1.1)), int(rng.integers(70, 93)))


class RealisticPainter(synth.SlidePainter):
    """Renders tiles of a realistic slide: concentrations -> this slide's stains -> blur."""

    def __init__(
        self,
        layout: synth.SlideLayout,
        atlases: synth.PeriodicAtlases,
        seed: Sequence[int],
        levels: int,
        look: ScanLook,
    ) -> None:
        super().__init__(layout, atlases, seed, levels)
        # Tumour shows the normal texture's own place, changed: normal and tumour differ only
        # by the cytological change, never by which part of the texture they show.
        self.offsets[synth.TUMOUR] = self.offsets[synth.NORMAL]
        self.look = look
        self._matrix = (look.amount[:, None] * look.stain).astype(np.float32)

    def tile(self, level: int, x: int, y: int) -> np.ndarray:
        """One ``(TILE, TILE, 3)`` uint8 RGB tile of ``level`` at level pixel ``(x, y)``."""
        classes = self.class_map(level, x, y)
        if not classes.any():
            return self._glass
        scale = 2**level
        conc = np.zeros((TILE, TILE, 3), np.float32)
        for cls in (synth.NORMAL, synth.STROMA, synth.TUMOUR):
            where = classes == cls
            if not where.any():
                continue
            ox, oy = self.offsets[cls]
            crop = self.atlases.crop(cls, level, x + ox // scale, y + oy // scale)
            conc[where] = crop[where]
        od = conc @ self._matrix
        od *= self._field(x * scale, y * scale, scale, TILE)[..., None]
        od[classes == 0] = 0.0
        sigma = self.look.blur / scale
        if sigma > 0.3:
            od = ndimage.gaussian_filter(od, (sigma, sigma, 0), mode="nearest")
        rgb = synth.GLASS * np.power(10.0, -np.clip(od, 0.0, 3.0)) + 0.5
        return rgb.astype(np.uint8)


def _tumour_fraction(rng: np.random.Generator, bounds: tuple[float, float]) -> tuple[float, bool]:
    """A slide's tumour share of the tissue (log-uniform in ``bounds``) and whether one focus."""
    low, high = bounds
    fraction = float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return fraction, bool(rng.uniform() < 0.3)


def make_realistic_layout(
    rng: np.random.Generator, size: int, positive: bool, bounds: tuple[float, float]
) -> synth.SlideLayout:
    """Tissue and stroma as in the stylised cohort; tumour smaller, more irregular, often one focus."""
    layout = synth.make_layout(rng, size, size, False, 0.0)
    if positive:
        fraction, single = _tumour_fraction(rng, bounds)
        if single:
            fraction = min(fraction, bounds[0] * 2)
        layout.tumour = synth.place_tumour(
            rng,
            layout.tissue_region,
            fraction,
            min_radius=240.0,
            roughness=0.45,
            max_count=1 if single else 4,
        )
    return layout


def generate_realistic_cohort(
    out_dir: str | os.PathLike[str],
    n_slides: int = 16,
    seed: int = 0,
    size: int = 6144,
    tumour_fraction: tuple[float, float] = (0.02, 0.2),
    strength: float = 0.5,
    stain_variation: float = 1.0,
    texture: str | os.PathLike[str] | None = None,
    test_fraction: float = 0.5,
) -> Generator[Progress, None, Path]:
    """Generate a realistic cohort with tumour ground truth; returns ``cohort.csv``.

    Same files as :func:`pathviewer.core.synth.generate_cohort` (``slide_NN.tif`` pyramids at
    0.5 um/px, ``slide_NN.geojson`` with ``Tumor`` and ``Stroma`` polygons, ``cohort.csv`` last).

    Parameters
    ----------
    out_dir
        Output folder (created).
    n_slides
        Number of slides (>= 2); half are positive.
    seed
        Random seed; one seed gives byte-identical slides.
    size
        Slide width and height in level-0 pixels (>= 1024).
    tumour_fraction
        Bounds of the per-slide tumour share of the tissue (log-uniform), within 0.005-0.8.
    strength
        Cytological change of tumour, 0-1 (see :class:`TumourChange`).
    stain_variation
        Scale of the stain differences between slides (0 = one stain for all).
    texture
        Slide or image to take tissue texture from (None: the shipped real H&E crop).
    test_fraction
        Share of each class put in the ``test`` split.

    Raises
    ------
    PathViewerError
        An argument out of range or a texture without enough tissue.
    """
    low, high = tumour_fraction
    if not 0.005 <= low <= high <= 0.8:
        raise PathViewerError(
            f"tumour fraction bounds must satisfy 0.005 <= low <= high <= 0.8 (got {low}, {high})"
        )
    if stain_variation < 0:
        raise PathViewerError(f"stain variation must be >= 0 (got {stain_variation})")
    synth.check_cohort_args(n_slides, size, 0.25, test_fraction)
    TumourChange.from_strength(strength)  # validate before the slow part
    stage = "synthesising slides"
    sizes = pyramid_sizes(size, size)
    rows_each = sum((h + TILE - 1) // TILE for _, h in sizes)
    total = rows_each * n_slides
    yield Progress(stage, 0, total, message="building tissue textures")
    # The texture is read (and may be refused) before anything is written.
    atlases = make_realistic_atlases(seed, strength, texture)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = synth.cohort_plan(n_slides, seed, test_fraction)
    rows: list[dict[str, str]] = []
    for index, (label, split) in enumerate(plan):
        name = f"slide_{index + 1:02d}"
        rng = np.random.default_rng([seed, index + 1, 1])
        layout = make_realistic_layout(rng, size, label == 1, (low, high))
        look = ScanLook.draw(np.random.default_rng([seed, index + 1, 9]), stain_variation)
        geojson = out / f"{name}.geojson"
        write_geojson(geojson, synth.annotations_for(layout))
        painter = RealisticPainter(layout, atlases, (seed, index + 1), len(sizes), look)
        yield from write_pyramid_tiff(
            out / f"{name}.tif",
            sizes,
            painter.tile,
            synth.MPP,
            quality=look.quality,
            description="PathViewer realistic synthetic H&E slide",
            stage=stage,
            progress_offset=index * rows_each,
            progress_total=total,
        )
        rows.append(synth.cohort_row(name, label, split))
    csv_path = out / "cohort.csv"
    write_cohort(csv_path, rows)
    return csv_path


def demo_settings() -> dict[str, Any]:
    """Keyword arguments of :func:`generate_realistic_cohort` for ``pathviewer demo``.

    Small enough that the first launch generates it, trains the CPU preset on it and shows a
    heatmap within minutes on two cores.
    """
    return {"n_slides": 12, "seed": 3, "size": 4096, "test_fraction": 0.34}
