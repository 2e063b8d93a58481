"""Synthetic H&E cohort with pixel-exact ground truth, for demos, tests and ML benchmarks.

Every slide is a pyramidal tiled JPEG TIFF (OpenSlide vendor ``generic-tiff``, 0.5 um/px = 20x)
showing a few irregular tissue sections on white glass.  Tissue has three classes:

``Normal``
    pink (eosin) tissue with glands: white lumens lined by a ring of small, regular, round
    nuclei, a few scattered nuclei in between;
``Stroma``
    fibrous eosin-rich connective tissue with sparse, elongated spindle nuclei;
``Tumor`` (positive slides only)
    sheets of crowded, larger, pleomorphic and darker (hyperchromatic) nuclei in a slightly
    purple cytoplasm, with no glands.

The tumour/normal difference is in nuclei and architecture, not in colour calibration: nuclei
cover ~23 % of tumour against ~9 % of normal tissue (radius ~5.8 vs ~4 px, i.e. 5.8 vs 4 um
across at 0.5 um/px; 1.6x pleomorphic aspect; ~13 % darker), there are no gland lumens, and the
cytoplasm is a little more basophilic.  All of this survives a 4x downsample: at 5x, tumour
reads as evenly granular, darker and more purple than the gland-dotted normal tissue.

How the pixels are made
-----------------------
* Class regions are shapely polygons (random star-shaped blobs) in level-0 pixels.  Each tile is
  painted by rasterising the same polygons with PIL, so the GeoJSON ground truth agrees with
  the painted pixels up to the boundary pixel.
* Texture comes from periodic per-class *texture atlases* (``ATLAS`` px square) rendered once
  per cohort in stain space (haematoxylin and eosin optical densities, Beer-Lambert), then
  converted to RGB per slide with slightly jittered stain vectors (slide-to-slide colour
  variation) and sampled at a per-slide random offset.  A smooth random "section thickness"
  field modulates the stain over the slide.
* Reduced pyramid levels are rendered directly from box-downsampled atlases and scaled
  polygons, so no level is ever held in memory whole (see :mod:`pathviewer.core.tiff_writer`).

Everything derives from ``numpy.random.default_rng`` seeded with ``(seed, slide, purpose)``, so
one seed gives byte-identical files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from PIL import Image, ImageDraw
from shapely import affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import DEFAULT_CLASSES, Annotation, write_geojson
from pathviewer.core.cohort import write_cohort
from pathviewer.core.errors import PathViewerError
from pathviewer.core.progress import Progress
from pathviewer.core.tiff_writer import TILE, pyramid_sizes, write_pyramid_tiff

#: Microns per pixel at level 0 (20x).
MPP = 0.5
#: Edge of the periodic texture atlases (level-0 px); a power of two so every level tiles.
ATLAS = 1024
#: Colour of empty glass.
GLASS = np.array([243, 242, 240], np.float32)
#: Class indices in the painted class map (0 is glass).
NORMAL, STROMA, TUMOUR = 1, 2, 3
#: Class names as written to GeoJSON (QuPath's spelling ``Tumor``).
CLASS_NAMES = {NORMAL: "Normal", STROMA: "Stroma", TUMOUR: "Tumor"}
#: Smallest tumour blob radius: each blob is at least ~5 patches of 256 px across.
MIN_TUMOUR_RADIUS = 640.0
#: Optical density per unit stain for haematoxylin and eosin (RGB, log10), after Ruifrok &
#: Johnston and typical Macenko estimates.
H_VECTOR = np.array([0.65, 0.70, 0.29], np.float32)
E_VECTOR = np.array([0.22, 0.80, 0.56], np.float32)
#: Pixels per cell of the smooth thickness field (level-0 px).
FIELD_CELL = 128

# ----------------------------------------------------------------------------------------------
# Periodic texture atlases (cohort-level, stain space)
# ----------------------------------------------------------------------------------------------


def _periodic_noise(
    rng: np.random.Generator,
    n: int,
    sigma: float,
    anisotropy: float = 1.0,
    angle: float = 0.0,
) -> np.ndarray:
    """Smooth periodic noise (zero mean, unit std): white noise Gaussian-filtered in Fourier space.

    ``anisotropy`` > 1 stretches the correlation along ``angle`` (radians): fibres.  Smooth
    noise is made on a coarser grid and upsampled (periodically), which is much cheaper.
    """
    factor = 1
    while sigma / (factor * 2) >= 2.0 and n // (factor * 2) >= 64:
        factor *= 2
    m = n // factor
    white = rng.standard_normal((m, m)).astype(np.float32)
    fy = np.fft.fftfreq(m).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(m).astype(np.float32)[None, :]
    c, s = math.cos(angle), math.sin(angle)
    along = fx * c + fy * s
    across = -fx * s + fy * c
    sig = sigma / factor
    gain = np.exp(-2 * math.pi**2 * sig**2 * ((along * anisotropy) ** 2 + across**2))
    out = np.fft.irfft2(np.fft.rfft2(white) * gain, s=(m, m)).astype(np.float32)
    if factor > 1:
        out = _periodic_upsample(out, factor)
    out -= out.mean()
    std = float(out.std())
    return out / std if std > 0 else out


def _periodic_upsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Bilinear upsampling of a periodic 2-D array by an integer factor (wrapping at the edges)."""
    m = image.shape[0]
    pos = (np.arange(m * factor, dtype=np.float32) + 0.5) / factor - 0.5
    i0 = np.floor(pos).astype(np.int64)
    frac = (pos - i0).astype(np.float32)
    i1 = (i0 + 1) % m
    i0 %= m
    rows = image[i0] * (1 - frac)[:, None] + image[i1] * frac[:, None]
    return rows[:, i0] * (1 - frac)[None, :] + rows[:, i1] * frac[None, :]


def _ellipses(
    n: int,
    xs: np.ndarray,
    ys: np.ndarray,
    rx: np.ndarray,
    ry: np.ndarray,
    theta: np.ndarray,
    chunk: int = 1024,
) -> Generator[tuple[slice, np.ndarray, np.ndarray], None, None]:
    """Vectorised ellipse footprints on a periodic ``n`` x ``n`` grid, in chunks of ellipses.

    Yields ``(which, flat_index, rho)``: the chunk's slice of the inputs, the flat (wrapped)
    pixel index of every footprint pixel ``(k, p, p)``, and its normalised elliptical radius
    (1 on the rim).
    """
    for start in range(0, len(xs), chunk):
        which = slice(start, start + chunk)
        x, y = xs[which], ys[which]
        # Callers sort by size, so each chunk's footprint fits its own largest ellipse.
        half = int(math.ceil(float(max(rx[which].max(), ry[which].max())))) + 2
        offsets = np.arange(-half, half + 1)
        ix = np.floor(x).astype(np.int64)[:, None] + offsets[None, :]
        iy = np.floor(y).astype(np.int64)[:, None] + offsets[None, :]
        dx = (ix - x[:, None])[:, None, :]
        dy = (iy - y[:, None])[:, :, None]
        c = np.cos(theta[which])[:, None, None]
        s = np.sin(theta[which])[:, None, None]
        u = (dx * c + dy * s) / rx[which][:, None, None]
        v = (-dx * s + dy * c) / ry[which][:, None, None]
        rho = np.sqrt(u * u + v * v).astype(np.float32)
        flat = (iy % n)[:, :, None] * n + (ix % n)[:, None, :]
        yield which, flat, rho


def _stamp_nuclei(
    h_map: np.ndarray,
    rng: np.random.Generator,
    xs: np.ndarray,
    ys: np.ndarray,
    rx: np.ndarray,
    ry: np.ndarray,
    theta: np.ndarray,
    darkness: np.ndarray,
    chromatin: float,
) -> None:
    """Add elliptical nuclei to a periodic haematoxylin map in place (wrapping at the edges).

    Overlapping nuclei take the darker value (max), as stacked nuclei in a section do.
    Chromatin texture is a fine periodic noise shared by all nuclei of the map.
    """
    n = h_map.shape[0]
    flat_map = h_map.reshape(-1)
    grain = (1.0 + chromatin * _periodic_noise(rng, n, 0.8)).reshape(-1)
    order = np.argsort(np.maximum(rx, ry), kind="stable")
    xs, ys, rx, ry = xs[order], ys[order], rx[order], ry[order]
    theta, darkness = theta[order], darkness[order]
    for which, flat, rho in _ellipses(n, xs, ys, rx, ry, theta):
        size = np.maximum(rx[which], ry[which]).astype(np.float32)[:, None, None]
        # Soft 1.5 px edge and a slightly darker membrane: nuclei read crisp at 20x.
        body = np.clip((1.0 - rho) * size / 1.5, 0.0, 1.0)
        rim = np.exp(-(((rho - 0.9) * size / 1.2) ** 2)) * 0.25
        speckle = grain[flat]
        value = (body * speckle + rim * (body > 0)) * darkness[which].astype(np.float32)[
            :, None, None
        ]
        np.maximum.at(flat_map, flat.ravel(), value.ravel())


def _scatter(rng: np.random.Generator, n: int, spacing: float, jitter: float) -> np.ndarray:
    """Points on a jittered grid of ``spacing`` over a periodic ``n`` x ``n`` square: (k, 2)."""
    count = max(1, int(round(n / spacing)))
    step = n / count
    gy, gx = np.meshgrid(np.arange(count), np.arange(count), indexing="ij")
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32) * step + step / 2
    points += rng.uniform(-jitter, jitter, points.shape).astype(np.float32) * step
    return points % n


def _normal_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normal glandular tissue: (n, n, 2) haematoxylin and eosin densities.

    Glands are irregular lumens lined by a band of epithelium whose small, regular nuclei are
    elongated towards the lumen (columnar); loose tissue with scattered small nuclei fills the
    space between them.
    """
    eosin = 0.32 + 0.05 * _periodic_noise(rng, n, 1.5) + 0.05 * _periodic_noise(rng, n, 12.0)
    haem = np.clip(0.035 + 0.015 * _periodic_noise(rng, n, 2.5), 0, None)
    glands = _scatter(rng, n, spacing=140.0, jitter=0.35)
    count = len(glands)
    ga = rng.uniform(14, 40, count)
    gb = ga * rng.uniform(0.45, 1.0, count)
    gt = rng.uniform(0, math.pi, count)
    lobes = rng.integers(2, 4, count)
    lobe_phase = rng.uniform(0, 2 * math.pi, count)
    lobe_depth = rng.uniform(0.0, 0.2, count)
    lumen_flat = np.zeros(n * n, np.float32)
    band_flat = np.zeros(n * n, np.float32)
    for which, flat, rho in _ellipses(n, glands[:, 0], glands[:, 1], ga * 1.7, gb * 1.7, gt):
        # Footprints are 1.7x the lumen so the epithelial band around it fits too; an angular
        # wobble (lobes) makes lumens irregular instead of perfect ellipses.
        half = (flat.shape[1] - 1) // 2
        grid = np.arange(-half, half + 1, dtype=np.float32)
        phi = np.arctan2(grid[:, None], grid[None, :])[None]
        wobble = 1 + lobe_depth[which][:, None, None] * np.cos(
            lobes[which][:, None, None] * phi + lobe_phase[which][:, None, None]
        )
        inner = rho * 1.7 * wobble.astype(np.float32)
        np.maximum.at(lumen_flat, flat.ravel(), np.clip((1.0 - inner) * 5.0, 0, 1).ravel())
        np.maximum.at(band_flat, flat.ravel(), np.exp(-(((inner - 1.3) / 0.3) ** 2)).ravel())
    lumen = lumen_flat.reshape(n, n)
    band = band_flat.reshape(n, n)
    xs_list: list[np.ndarray] = []
    ys_list: list[np.ndarray] = []
    th_list: list[np.ndarray] = []
    for gx, gy, a, b, t in zip(glands[:, 0], glands[:, 1], ga, gb, gt, strict=True):
        # Epithelial nuclei line the lumen about every 10 px, long axis pointing at it.
        perimeter = 2 * math.pi * math.sqrt((a * a + b * b) / 2) * 1.3
        k = max(6, int(perimeter / rng.uniform(9, 12)))
        phi = np.linspace(0, 2 * math.pi, k, endpoint=False) + rng.uniform(0, 1)
        phi += rng.normal(0, 0.08, k)
        spread = rng.normal(1.3, 0.05, k)
        ex = a * spread * np.cos(phi)
        ey = b * spread * np.sin(phi)
        c, s = math.cos(t), math.sin(t)
        xs_list.append(gx + ex * c - ey * s)
        ys_list.append(gy + ex * s + ey * c)
        th_list.append(np.arctan2(ex * s + ey * c, ex * c - ey * s))
    epi_x = np.concatenate(xs_list)
    epi_y = np.concatenate(ys_list)
    epi_r = rng.normal(4.2, 0.4, len(epi_x)).clip(3.2, 5.5)
    loose = _scatter(rng, n, spacing=38.0, jitter=0.5)
    # Loose tissue nuclei: only where there is no gland.
    free = band[loose[:, 1].astype(int) % n, loose[:, 0].astype(int) % n] < 0.2
    free &= lumen[loose[:, 1].astype(int) % n, loose[:, 0].astype(int) % n] < 0.1
    loose = loose[free]
    loose_r = rng.normal(3.6, 0.5, len(loose)).clip(2.6, 5.0)
    xs = np.concatenate([epi_x, loose[:, 0]]).astype(np.float32)
    ys = np.concatenate([epi_y, loose[:, 1]]).astype(np.float32)
    radius = np.concatenate([epi_r, loose_r])
    aspect = np.concatenate([rng.uniform(1.3, 1.7, len(epi_x)), rng.uniform(1.0, 1.8, len(loose))])
    theta = np.concatenate([np.concatenate(th_list), rng.uniform(0, math.pi, len(loose))])
    _stamp_nuclei(
        haem,
        rng,
        xs,
        ys,
        radius * aspect,
        radius,
        theta,
        rng.normal(0.85, 0.08, len(xs)),
        chromatin=0.15,
    )
    # Epithelium is a little more basophilic than the tissue between glands; some lumens hold
    # pale pink secretion.
    haem = haem + 0.08 * band
    eosin = eosin + 0.06 * band
    secretion = 0.08 * np.clip(_periodic_noise(rng, n, 25.0), 0, None)
    eosin = eosin * (1.0 - 0.92 * lumen) + secretion * lumen
    haem = haem * (1.0 - 0.92 * lumen)
    return np.stack([haem, np.clip(eosin, 0, None)], axis=-1)


def _stroma_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Fibrous stroma: wavy eosin fibres, clefts, sparse spindle nuclei."""
    angle_a, angle_b = rng.uniform(0, math.pi, 2)
    fibres_a = _periodic_noise(rng, n, 1.4, anisotropy=7.0, angle=float(angle_a))
    fibres_b = _periodic_noise(rng, n, 1.4, anisotropy=7.0, angle=float(angle_b))
    blend = 1 / (1 + np.exp(-2.5 * _periodic_noise(rng, n, 60.0)))
    fibres = fibres_a * blend + fibres_b * (1 - blend)
    # Domain warping bends the straight fibres into wavy collagen bundles.
    yy, xx = np.mgrid[0:n, 0:n]
    warp_x = (xx + 14 * _periodic_noise(rng, n, 24.0)).astype(np.int64) % n
    warp_y = (yy + 14 * _periodic_noise(rng, n, 24.0)).astype(np.int64) % n
    fibres = fibres[warp_y, warp_x]
    eosin = 0.48 + 0.16 * fibres + 0.06 * _periodic_noise(rng, n, 20.0)
    # Clefts: pale gaps between fibre bundles.
    clefts = np.clip((fibres - 1.1) * 1.2, 0, 1)
    eosin = np.clip(eosin * (1 - 0.8 * clefts), 0.02, None)
    haem = np.clip(0.015 + 0.01 * _periodic_noise(rng, n, 3.0), 0, None)
    points = _scatter(rng, n, spacing=60.0, jitter=0.5)
    count = len(points)
    radius = rng.normal(2.6, 0.3, count).clip(2.0, 3.4)
    # Spindles align with the local fibre direction.
    theta = np.where(
        blend[points[:, 1].astype(int) % n, points[:, 0].astype(int) % n] > 0.5,
        angle_a,
        angle_b,
    ) + rng.normal(0, 0.15, count)
    _stamp_nuclei(
        haem,
        rng,
        points[:, 0],
        points[:, 1],
        radius * rng.uniform(2.8, 4.0, count),
        radius,
        theta,
        rng.normal(0.85, 0.08, count),
        chromatin=0.08,
    )
    return np.stack([haem, eosin], axis=-1)


def _tumour_texture(rng: np.random.Generator, n: int) -> np.ndarray:
    """Carcinoma: nests of crowded, enlarged, pleomorphic, hyperchromatic nuclei; no glands.

    Thin fibrous septa (the zero lines of a smooth noise) separate the nests.
    """
    eosin = 0.25 + 0.05 * _periodic_noise(rng, n, 1.5) + 0.04 * _periodic_noise(rng, n, 18.0)
    haem = np.clip(0.09 + 0.03 * _periodic_noise(rng, n, 2.5), 0, None)
    septa = np.clip(1.0 - np.abs(_periodic_noise(rng, n, 45.0)) / 0.1, 0, 1)
    points = _scatter(rng, n, spacing=22.0, jitter=0.45)
    on_septum = septa[points[:, 1].astype(int) % n, points[:, 0].astype(int) % n] > 0.2
    points = points[~on_septum & (rng.uniform(0, 1, len(points)) < 0.92)]
    count = len(points)
    radius = rng.lognormal(math.log(5.8), 0.2, count).clip(3.8, 10.0)
    aspect = rng.uniform(1.0, 1.6, count)
    _stamp_nuclei(
        haem,
        rng,
        points[:, 0],
        points[:, 1],
        radius * aspect,
        radius,
        rng.uniform(0, math.pi, count),
        rng.normal(0.97, 0.13, count).clip(0.7, 1.4),
        chromatin=0.3,
    )
    eosin = eosin * (1 - septa) + (0.5 + 0.1 * _periodic_noise(rng, n, 2.0)) * septa
    haem = haem * (1 - 0.7 * septa)
    return np.stack([haem, np.clip(eosin, 0, None)], axis=-1)


#: Pyramid levels prepared for every atlas (downsample up to 2**(ATLAS_LEVELS - 1)).
ATLAS_LEVELS = 8


class PeriodicAtlases:
    """Periodic per-class images shared by every slide of a cohort, as tile-ready pyramids.

    Each class image is stored as a pyramid of box-downsampled levels, each wrap-padded by one
    tile so that a tile-sized crop at any offset is a plain slice.

    Parameters
    ----------
    layers
        ``{class index: (n, n, c) float32}`` images, ``n`` a power of two (the same for all).
    """

    def __init__(self, layers: dict[int, np.ndarray]) -> None:
        self.size = next(iter(layers.values())).shape[0]
        self.levels: dict[int, list[np.ndarray]] = {}
        for cls, layer in layers.items():
            pyramid = []
            for level in range(ATLAS_LEVELS):
                reduced = _box_downsample(layer, 2**level).astype(np.float32)
                # Wrap-pad by one tile so a crop at any offset is a plain slice.
                padded = np.pad(reduced, ((0, TILE), (0, TILE), (0, 0)), mode="wrap")
                pyramid.append(np.ascontiguousarray(padded))
                if reduced.shape[0] == 1:
                    break
            self.levels[cls] = pyramid

    def crop(self, cls: int, level: int, x: int, y: int, size: int = TILE) -> np.ndarray:
        """``(size, size, c)`` values of class ``cls`` at level pixel ``(x, y)`` (periodic)."""
        pyramid = self.levels[cls]
        level = min(level, len(pyramid) - 1)
        n = max(1, self.size >> level)
        x, y = x % n, y % n
        return pyramid[level][y : y + size, x : x + size]


class TextureAtlases(PeriodicAtlases):
    """The stylised cohort's class textures, stored as RGB *absorbance* (``255 - transmitted``).

    Parameters
    ----------
    stains
        ``{class index: (n, n, 2) float32}`` haematoxylin and eosin optical densities, ``n`` a
        power of two; converted with the reference stain vectors.
    """

    def __init__(self, stains: dict[int, np.ndarray]) -> None:
        layers = {}
        for cls, stain in stains.items():
            od = stain[..., 0:1] * H_VECTOR + stain[..., 1:2] * E_VECTOR
            layers[cls] = (255.0 * (1.0 - np.power(10.0, -od))).astype(np.float32)
        super().__init__(layers)


_ATLAS_CACHE: dict[tuple[int, int], TextureAtlases] = {}


def make_atlases(seed: int, size: int = ATLAS) -> TextureAtlases:
    """Render the three class textures for a cohort seed (cached per process).

    Parameters
    ----------
    seed
        Cohort seed.
    size
        Atlas edge in pixels (a power of two).
    """
    key = (seed, size)
    if key not in _ATLAS_CACHE:
        if len(_ATLAS_CACHE) >= 4:  # a few cohorts at most; each holds ~20 MB
            _ATLAS_CACHE.pop(next(iter(_ATLAS_CACHE)))
        _ATLAS_CACHE[key] = TextureAtlases(
            {
                NORMAL: _normal_texture(np.random.default_rng([seed, 0, 101]), size),
                STROMA: _stroma_texture(np.random.default_rng([seed, 0, 102]), size),
                TUMOUR: _tumour_texture(np.random.default_rng([seed, 0, 103]), size),
            }
        )
    return _ATLAS_CACHE[key]


def _box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` x ``factor`` blocks (sizes are multiples of ``factor``)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return image.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def _stain_matrix(rng: np.random.Generator) -> np.ndarray:
    """3x3 map from reference to one slide's absorbance: jittered stain hue and intensity.

    Solves ``S @ W = S'`` where the rows of ``S`` are the reference H and E vectors and their
    cross product, and ``S'`` the same for jittered vectors; applied to absorbance (a linear
    approximation of optical density, fine for the small jitter used).
    """

    def basis(h: np.ndarray, e: np.ndarray) -> np.ndarray:
        third = np.cross(h, e)
        return np.stack([h, e, third / np.linalg.norm(third)])

    h = H_VECTOR * rng.uniform(0.85, 1.15) + rng.normal(0, 0.035, 3)
    e = E_VECTOR * rng.uniform(0.85, 1.15) + rng.normal(0, 0.035, 3)
    target = basis(np.clip(h, 0.05, None), np.clip(e, 0.05, None))
    return np.linalg.solve(basis(H_VECTOR, E_VECTOR), target).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Layout: tissue, stroma and tumour polygons
# ----------------------------------------------------------------------------------------------


def _blob(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    radius: float,
    roughness: float = 0.22,
    vertices: int = 160,
) -> Polygon:
    """Irregular star-shaped blob: a circle with random low-order harmonics, stretched and turned."""
    phi = np.linspace(0, 2 * math.pi, vertices, endpoint=False)
    r = np.ones_like(phi)
    for k in range(2, 9):
        amp = roughness * rng.normal(0, 1) / k**1.1
        r += amp * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    r = np.clip(r, 0.35, None)
    stretch = rng.uniform(0.7, 1.0)
    turn = rng.uniform(0, math.pi)
    x = r * np.cos(phi)
    y = r * np.sin(phi) * stretch
    c, s = math.cos(turn), math.sin(turn)
    xs = cx + radius * (x * c - y * s)
    ys = cy + radius * (x * s + y * c)
    return Polygon(np.round(np.stack([xs, ys], axis=1), 1))


def _point_inside(
    rng: np.random.Generator, region: BaseGeometry, margin: float
) -> tuple[float, float]:
    """A random point of ``region`` at least ``margin`` from its edge (or any point of it)."""
    inner = region.buffer(-margin)
    target = inner if not inner.is_empty and inner.area > 0 else region
    minx, miny, maxx, maxy = target.bounds
    for _ in range(500):
        x, y = rng.uniform(minx, maxx), rng.uniform(miny, maxy)
        if target.contains(shapely.Point(x, y)):
            return float(x), float(y)
    point = target.representative_point()
    return float(point.x), float(point.y)


@dataclass
class SlideLayout:
    """Where each class is on one slide, in level-0 pixels.

    Attributes
    ----------
    width, height
        Slide size.
    tissue, stroma, tumour
        The primitive blobs that are painted (stroma and tumour only count inside tissue; tumour
        wins over stroma).
    """

    width: int
    height: int
    tissue: list[Polygon]
    stroma: list[Polygon] = field(default_factory=list)
    tumour: list[Polygon] = field(default_factory=list)

    @property
    def tissue_region(self) -> BaseGeometry:
        """Union of the tissue blobs."""
        return shapely.union_all(self.tissue)

    @property
    def tumour_region(self) -> BaseGeometry:
        """Painted tumour: tumour blobs inside tissue."""
        if not self.tumour:
            return Polygon()
        return shapely.intersection(shapely.union_all(self.tumour), self.tissue_region)

    @property
    def stroma_region(self) -> BaseGeometry:
        """Painted stroma: stroma blobs inside tissue and outside tumour."""
        if not self.stroma:
            return Polygon()
        region = shapely.intersection(shapely.union_all(self.stroma), self.tissue_region)
        if self.tumour:
            region = shapely.difference(region, shapely.union_all(self.tumour))
        return region


def make_layout(
    rng: np.random.Generator, width: int, height: int, positive: bool, tumour_fraction: float
) -> SlideLayout:
    """Random tissue sections with stroma regions and (for positives) tumour regions.

    Parameters
    ----------
    rng
        Random generator of this slide.
    width, height
        Slide size in level-0 pixels.
    positive
        Whether to place tumour.
    tumour_fraction
        Target tumour area as a fraction of the tissue area (positives).
    """
    # Tissue: 1-4 sections in a jittered 2 x 2 arrangement, clipped to the slide minus a margin.
    margin = 0.04 * min(width, height)
    frame = shapely.box(margin, margin, width - margin, height - margin)
    sections = int(rng.integers(1, 5))
    cells = rng.permutation(4)[:sections]
    tissue: list[Polygon] = []
    for cell in cells:
        if sections == 1:
            cx, cy, radius = width / 2, height / 2, 0.36 * min(width, height)
        else:
            cx = width * (0.27 + 0.46 * (cell % 2)) + rng.uniform(-0.05, 0.05) * width
            cy = height * (0.27 + 0.46 * (cell // 2)) + rng.uniform(-0.05, 0.05) * height
            radius = rng.uniform(0.2, 0.25) * min(width, height)
        blob = _blob(rng, cx, cy, radius)
        # Shrink a section that pokes out of the slide rather than cutting it straight.
        for _ in range(12):
            if frame.contains(blob):
                break
            blob = affinity.scale(blob, 0.92, 0.92, origin=(cx, cy))
        blob = shapely.intersection(blob, frame)
        if isinstance(blob, Polygon) and not blob.is_empty:
            tissue.append(blob)
    layout = SlideLayout(width, height, tissue)
    region = layout.tissue_region
    # Stroma: 1-3 patches of about 15-25 % of the tissue, inside and across section edges.
    stroma_target = rng.uniform(0.15, 0.25) * region.area
    count = int(rng.integers(1, 4))
    for _ in range(count):
        cx, cy = _point_inside(rng, region, 0.0)
        radius = math.sqrt(stroma_target / count / math.pi)
        layout.stroma.append(_blob(rng, cx, cy, radius, roughness=0.3))
    if positive:
        layout.tumour = place_tumour(rng, region, tumour_fraction)
    return layout


def place_tumour(
    rng: np.random.Generator,
    region: BaseGeometry,
    tumour_fraction: float,
    min_radius: float = MIN_TUMOUR_RADIUS,
    roughness: float = 0.3,
    max_count: int = 4,
) -> list[Polygon]:
    """1 to ``max_count`` tumour blobs whose union inside ``region`` covers ~``tumour_fraction``.

    Parameters
    ----------
    rng
        Random generator of the slide.
    region
        Tissue region.
    tumour_fraction
        Target share of ``region`` covered by tumour.
    min_radius
        Smallest blob radius (level-0 px).
    roughness
        Irregularity of the outlines (harmonic amplitude of :func:`_blob`).
    max_count
        Most blobs placed.
    """
    target = tumour_fraction * region.area
    largest = max(1, min(max_count, int(target / (math.pi * min_radius**2 * 1.2))))
    count = int(rng.integers(1, largest + 1))
    radius = math.sqrt(target / count / math.pi)
    shapes = []
    for _ in range(count):
        cx, cy = _point_inside(rng, region, 0.9 * radius)
        # Each blob keeps its own seed so the bisection below rescales the same shapes.
        shapes.append((cx, cy, int(rng.integers(2**32))))

    def blobs(scale: float) -> list[Polygon]:
        r = max(radius * scale, min_radius)
        return [_blob(np.random.default_rng(s), cx, cy, r, roughness) for cx, cy, s in shapes]

    def covered(scale: float) -> float:
        return shapely.intersection(shapely.union_all(blobs(scale)), region).area

    low, high = 0.5, 2.5
    for _ in range(18):  # bisection on a common scale: covered area grows with it
        mid = (low + high) / 2
        if covered(mid) < target:
            low = mid
        else:
            high = mid
    return blobs((low + high) / 2)


# ----------------------------------------------------------------------------------------------
# Tile rendering
# ----------------------------------------------------------------------------------------------


def _raster(
    polygons: Sequence[Polygon], x0: float, y0: float, scale: float, size: int
) -> np.ndarray:
    """Boolean mask of ``size`` x ``size`` pixels: which pixel centres lie in any polygon.

    Pixel ``(i, j)`` of the tile covers level-0 ``[x0 + j*scale, x0 + (j+1)*scale)``; PIL fills
    pixels whose centre (integer coordinates in its convention) is inside, hence the -0.5.
    """
    image = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(image)
    span = size * scale
    for polygon in polygons:
        minx, miny, maxx, maxy = polygon.bounds
        if maxx < x0 or maxy < y0 or minx > x0 + span or miny > y0 + span:
            continue
        coords = np.asarray(polygon.exterior.coords)
        local = (coords - (x0, y0)) / scale - 0.5
        draw.polygon([tuple(p) for p in local.tolist()], fill=1)
    return np.asarray(image, dtype=bool)


class SlidePainter:
    """Renders tiles of one synthetic slide at any pyramid level.

    Parameters
    ----------
    layout
        Class polygons.
    atlases
        Cohort textures.
    seed
        Slide seed (stain variation, thickness field, atlas offsets).
    levels
        Number of pyramid levels that will be rendered.
    """

    def __init__(
        self, layout: SlideLayout, atlases: PeriodicAtlases, seed: Sequence[int], levels: int
    ) -> None:
        rng = np.random.default_rng([*seed, 7])
        self.layout = layout
        self.atlases = atlases
        self.stain = _stain_matrix(rng)
        # Offsets are multiples of the coarsest downsample so every level samples the same
        # atlas blocks as level 0 (the pyramid stays consistent).
        factor = min(2 ** (levels - 1), atlases.size)
        self.offsets = {
            cls: (
                int(rng.integers(0, atlases.size // factor)) * factor,
                int(rng.integers(0, atlases.size // factor)) * factor,
            )
            for cls in (NORMAL, STROMA, TUMOUR)
        }
        # Smooth section-thickness field: stain intensity varies by about +-20 % over ~1 mm.
        cells_x = layout.width // FIELD_CELL + 3
        cells_y = layout.height // FIELD_CELL + 3
        coarse = rng.normal(0, 1, (cells_y // 4 + 3, cells_x // 4 + 3)).astype(np.float32)
        smooth = np.asarray(
            Image.fromarray(coarse, mode="F").resize((cells_x, cells_y), Image.Resampling.BICUBIC)
        )
        self.thickness = (1.0 + 0.12 * np.clip(smooth, -1.7, 1.7)).astype(np.float32)
        self._glass = np.ascontiguousarray(
            np.broadcast_to(np.round(GLASS).astype(np.uint8), (TILE, TILE, 3))
        )

    def _field(self, x0: float, y0: float, scale: float, size: int) -> np.ndarray:
        """Bilinear sample of the thickness field at the tile's pixel centres."""
        gx = (x0 + (np.arange(size) + 0.5) * scale) / FIELD_CELL
        gy = (y0 + (np.arange(size) + 0.5) * scale) / FIELD_CELL
        ix = np.clip(gx.astype(int), 0, self.thickness.shape[1] - 2)
        iy = np.clip(gy.astype(int), 0, self.thickness.shape[0] - 2)
        fx = (gx - ix).astype(np.float32)[None, :]
        fy = (gy - iy).astype(np.float32)[:, None]
        f = self.thickness
        top = f[iy][:, ix] * (1 - fx) + f[iy][:, ix + 1] * fx
        bottom = f[iy + 1][:, ix] * (1 - fx) + f[iy + 1][:, ix + 1] * fx
        return top * (1 - fy) + bottom * fy

    def class_map(self, level: int, x: int, y: int, size: int = TILE) -> np.ndarray:
        """Class index (0 glass, 1 normal, 2 stroma, 3 tumour) of a tile's pixels."""
        scale = 2.0**level
        x0, y0 = x * scale, y * scale
        tissue = _raster(self.layout.tissue, x0, y0, scale, size)
        out = tissue.astype(np.uint8)
        if not tissue.any():
            return out
        if self.layout.stroma:
            out[tissue & _raster(self.layout.stroma, x0, y0, scale, size)] = STROMA
        if self.layout.tumour:
            out[tissue & _raster(self.layout.tumour, x0, y0, scale, size)] = TUMOUR
        return out

    def tile(self, level: int, x: int, y: int) -> np.ndarray:
        """One ``(TILE, TILE, 3)`` uint8 RGB tile of ``level`` at level pixel ``(x, y)``."""
        classes = self.class_map(level, x, y)
        if not classes.any():
            return self._glass
        scale = 2**level
        absorb = np.zeros((TILE, TILE, 3), np.float32)
        for cls in (NORMAL, STROMA, TUMOUR):
            where = classes == cls
            if not where.any():
                continue
            ox, oy = self.offsets[cls]
            crop = self.atlases.crop(cls, level, x + ox // scale, y + oy // scale)
            if where.all():
                absorb = crop.copy()
            else:
                absorb[where] = crop[where]
        w = self.stain
        absorb = absorb[..., 0:1] * w[0] + absorb[..., 1:2] * w[1] + absorb[..., 2:3] * w[2]
        absorb *= self._field(x * scale, y * scale, scale, TILE)[..., None] / 255.0
        # Transmitted light: the glass colour times (1 - absorbed fraction).
        rgb = GLASS * (1.0 - np.clip(absorb, 0.0, 1.0)) + 0.5
        return rgb.astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Slides and cohorts
# ----------------------------------------------------------------------------------------------


def annotations_for(layout: SlideLayout) -> list[Annotation]:
    """Ground-truth annotations (``Tumor`` and ``Stroma`` polygons, one per connected part)."""
    out: list[Annotation] = []
    for cls, region in ((TUMOUR, layout.tumour_region), (STROMA, layout.stroma_region)):
        name = CLASS_NAMES[cls]
        parts = getattr(region, "geoms", [region])
        for part in parts:
            if part.geom_type != "Polygon" or part.is_empty or part.area < 64 * 64:
                continue  # slivers from clipping carry no patch-level meaning
            out.append(Annotation(part, name, DEFAULT_CLASSES[name]))
    return out


def write_slide(
    path: str | os.PathLike[str],
    layout: SlideLayout,
    atlases: TextureAtlases,
    seed: Sequence[int],
    quality: int = 85,
    progress_offset: int = 0,
    progress_total: int | None = None,
    stage: str = "synthesising slides",
) -> Generator[Progress, None, Path]:
    """Write one synthetic slide (pyramidal tiled JPEG TIFF) for ``layout``.

    Parameters
    ----------
    path
        Output ``.tif``.
    layout
        Class polygons.
    atlases
        Cohort textures.
    seed
        Slide seed sequence (e.g. ``(cohort_seed, slide_index)``).
    quality
        JPEG quality.
    progress_offset, progress_total, stage
        Passed to :func:`~pathviewer.core.tiff_writer.write_pyramid_tiff`.
    """
    sizes = pyramid_sizes(layout.width, layout.height)
    painter = SlidePainter(layout, atlases, seed, len(sizes))
    return (
        yield from write_pyramid_tiff(
            path,
            sizes,
            painter.tile,
            MPP,
            quality=quality,
            description="PathViewer synthetic H&E slide",
            stage=stage,
            progress_offset=progress_offset,
            progress_total=progress_total,
        )
    )


def _rows(size: int) -> int:
    return sum((h + TILE - 1) // TILE for _, h in pyramid_sizes(size, size))


def check_cohort_args(
    n_slides: int, size: int, tumour_fraction: float, test_fraction: float
) -> None:
    """Raise :class:`PathViewerError` naming the first cohort argument out of range."""
    if n_slides < 2:
        raise PathViewerError(f"synthetic cohort needs at least 2 slides (got {n_slides})")
    if size < 1024:
        raise PathViewerError(f"synthetic slide size must be at least 1024 px (got {size})")
    if not 0.02 <= tumour_fraction <= 0.8:
        raise PathViewerError(
            f"tumour fraction must be between 0.02 and 0.8 (got {tumour_fraction})"
        )
    if not 0.0 < test_fraction < 1.0:
        raise PathViewerError(f"test fraction must be between 0 and 1 (got {test_fraction})")


def cohort_row(name: str, label: int, split: str) -> dict[str, str]:
    """The ``cohort.csv`` row of slide ``name`` (``name.tif`` with ``name.geojson``)."""
    return {
        "slide": f"{name}.tif",
        "label": str(label),
        "split": split,
        "annotations": f"{name}.geojson",
    }


def cohort_plan(n_slides: int, seed: int, test_fraction: float = 0.5) -> list[tuple[int, str]]:
    """``(label, split)`` per slide: half positive, and both classes in both splits when n >= 4."""
    labels = [1 if i < (n_slides + 1) // 2 else 0 for i in range(n_slides)]
    positives = [i for i, label in enumerate(labels) if label == 1]
    negatives = [i for i, label in enumerate(labels) if label == 0]
    split = ["train"] * n_slides
    # Stratified: the test share of each class, at least one of each when the class has >= 2.
    for group in (positives, negatives):
        n_test = int(len(group) * test_fraction)  # round down: training gets the odd slide
        if len(group) >= 2:
            n_test = min(max(n_test, 1), len(group) - 1)
        else:
            n_test = 0
        for i in group[len(group) - n_test :]:
            split[i] = "test"
    # Interleave classes so slide names do not reveal the label.
    order = np.random.default_rng([seed, 0, 5]).permutation(n_slides)
    return [(labels[i], split[i]) for i in order]


def generate_cohort(
    out_dir: str | os.PathLike[str],
    n_slides: int = 6,
    seed: int = 0,
    size: int = 3072,
    tumour_fraction: float = 0.25,
    test_fraction: float = 0.5,
    quality: int = 85,
) -> Generator[Progress, None, Path]:
    """Generate a synthetic H&E cohort with tumour ground truth; returns ``cohort.csv``.

    Writes ``slide_NN.tif`` (pyramidal tiled JPEG TIFF, 0.5 um/px), ``slide_NN.geojson``
    (QuPath-compatible ``Tumor`` and ``Stroma`` polygons in level-0 pixels; negatives have
    ``Stroma`` only) and ``cohort.csv`` (``slide,label,split,annotations``, paths relative to
    the CSV).  ``cohort.csv`` is written last, so its presence means the cohort is complete.

    Parameters
    ----------
    out_dir
        Output folder (created).
    n_slides
        Number of slides (>= 2); half are positive (label 1).
    seed
        Random seed; one seed gives byte-identical slides.
    size
        Slide width and height in level-0 pixels (>= 1024).
    tumour_fraction
        Tumour area as a fraction of the tissue of a positive slide.
    test_fraction
        Share of each class put in the ``test`` split.
    quality
        JPEG quality.

    Yields
    ------
    Progress
        Stage ``synthesising slides``, one event per tile row of every pyramid level.

    Raises
    ------
    PathViewerError
        An argument out of range.
    """
    check_cohort_args(n_slides, size, tumour_fraction, test_fraction)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage = "synthesising slides"
    rows_each = _rows(size)
    total = rows_each * n_slides
    yield Progress(stage, 0, total, message="rendering texture atlases")
    atlases = make_atlases(seed)
    plan = cohort_plan(n_slides, seed, test_fraction)
    rows: list[dict[str, str]] = []
    for index, (label, split) in enumerate(plan):
        name = f"slide_{index + 1:02d}"
        rng = np.random.default_rng([seed, index + 1, 1])
        layout = make_layout(rng, size, size, label == 1, tumour_fraction)
        annotations = annotations_for(layout)
        geojson = out / f"{name}.geojson"
        write_geojson(geojson, annotations)
        yield from write_slide(
            out / f"{name}.tif",
            layout,
            atlases,
            (seed, index + 1),
            quality=quality,
            progress_offset=index * rows_each,
            progress_total=total,
            stage=stage,
        )
        rows.append(cohort_row(name, label, split))
    csv_path = out / "cohort.csv"
    write_cohort(csv_path, rows)
    return csv_path


def write_large_slide(
    path: str | os.PathLike[str], size: int = 20000, seed: int = 0, quality: int = 80
) -> Generator[Progress, None, Path]:
    """One large positive slide (default 20k x 20k px) for viewer benchmarks, in bounded memory.

    Parameters
    ----------
    path
        Output ``.tif``; its tumour polygons go next to it as ``.geojson``.
    size
        Width and height in level-0 pixels.
    seed
        Random seed.
    quality
        JPEG quality.
    """
    check_cohort_args(2, size, 0.25, 0.5)
    path = Path(path)
    yield Progress("synthesising slide", 0, _rows(size), message="rendering texture atlases")
    atlases = make_atlases(seed)
    layout = make_layout(np.random.default_rng([seed, 1, 1]), size, size, True, 0.25)
    write_geojson(path.with_suffix(".geojson"), annotations_for(layout))
    return (
        yield from write_slide(
            path, layout, atlases, (seed, 1), quality, stage="synthesising slide"
        )
    )
