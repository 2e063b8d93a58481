"""Colour deconvolution of brightfield stains (Ruifrok & Johnston 2001), numpy only.

Transmitted light follows Beer-Lambert: the optical density ``OD = -log10(I / I0)`` of a pixel is
a non-negative combination of one OD vector per stain.  With three stain vectors as the rows of
a 3x3 matrix ``M``, ``OD = C @ M`` and the stain concentrations are ``C = OD @ inv(M)``.

One module serves every user of stains: the synthetic slide generator, training-time stain
augmentation and normalisation, and the viewer's deconvolution display.

Stain estimation and normalisation follow Macenko et al. 2009 ("A method for normalizing
histology slides for quantitative analysis"): the tissue's OD pixels lie close to the plane
spanned by the two stain vectors, and the extreme angles of those pixels in that plane are
the (nearly) pure stains.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

#: Haematoxylin, eosin and DAB optical-density vectors (Ruifrok & Johnston 2001), unit length.
#: A slide's own stains: ``(3, 3)`` stain matrix and ``(2,)`` robust maximum H and E
#: concentrations, as :func:`estimate_stain_vectors` returns them.
SourceStains = tuple[np.ndarray, np.ndarray]
#: Scopes of :class:`StainNormalizer`.
STAIN_SCOPES = ("patch", "slide")

HED_VECTORS = np.array(
    [
        [0.650, 0.704, 0.286],
        [0.072, 0.990, 0.105],
        [0.268, 0.570, 0.776],
    ],
    np.float64,
)
HED_VECTORS /= np.linalg.norm(HED_VECTORS, axis=1, keepdims=True)

#: Smallest intensity used in OD conversions (avoids log(0) for saturated black pixels).
_MIN_INTENSITY = 1.0


def complete_stain_matrix(vectors: np.ndarray) -> np.ndarray:
    """A 3x3 stain matrix from two or three OD vectors (rows); the third is their residual.

    Parameters
    ----------
    vectors
        ``(2, 3)`` or ``(3, 3)`` stain OD vectors, one per row (any positive length).

    Returns
    -------
    numpy.ndarray
        ``(3, 3)`` float64 matrix of unit rows.  With two stains the third row is the unit
        normal of their plane (signed so that its components sum to a positive number), so
        ``OD @ inv(M)`` puts what neither stain explains there and the matrix is well
        conditioned for any two distinct stains.
    """
    rows = np.asarray(vectors, np.float64)
    if rows.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"stain vectors must be 2 or 3 rows of 3 values, got {rows.shape}")
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    if rows.shape[0] == 2:
        # The plane's normal, not its absolute value: taking |cross| breaks the orthogonality,
        # and for H-DAB it lands next to haematoxylin (cosine 0.9998, condition number ~280),
        # so uint8 rounding swamps the DAB channel.  Orthogonal, the two stains' concentrations
        # are the least-squares fit of the OD (as in Macenko et al.) for any distinct pair.
        third = np.cross(rows[0], rows[1])
        if third.sum() < 0:  # the sign is free; a mostly positive residual reads like a stain
            third = -third
        rows = np.vstack([rows, third / np.linalg.norm(third)])
    return rows


def rgb_to_od(rgb: np.ndarray, background: float | np.ndarray = 255.0) -> np.ndarray:
    """Optical density ``-log10(I / I0)`` of uint8 (or float 0-255) RGB pixels, float32."""
    intensity = np.maximum(np.asarray(rgb, np.float32), _MIN_INTENSITY)
    return -np.log10(intensity / np.asarray(background, np.float32)).astype(np.float32)


def od_to_rgb(od: np.ndarray, background: float | np.ndarray = 255.0) -> np.ndarray:
    """uint8 RGB of optical densities (inverse of :func:`rgb_to_od`, clipped to 0-255)."""
    intensity = np.asarray(background, np.float32) * np.power(10.0, -np.asarray(od, np.float32))
    return np.clip(intensity + 0.5, 0, 255).astype(np.uint8)


def separate_stains(
    rgb: np.ndarray, matrix: np.ndarray = HED_VECTORS, background: float | np.ndarray = 255.0
) -> np.ndarray:
    """Stain concentrations ``(..., 3)`` of RGB pixels ``(..., 3)`` for a 3x3 stain matrix."""
    od = rgb_to_od(rgb, background)
    inverse = np.linalg.inv(np.asarray(matrix, np.float64)).astype(np.float32)
    return od @ inverse


def combine_stains(
    concentrations: np.ndarray,
    matrix: np.ndarray = HED_VECTORS,
    background: float | np.ndarray = 255.0,
) -> np.ndarray:
    """uint8 RGB of stain concentrations ``(..., 3)`` (inverse of :func:`separate_stains`)."""
    od = np.asarray(concentrations, np.float32) @ np.asarray(matrix, np.float32)
    return od_to_rgb(od, background)


def stain_image(
    rgb: np.ndarray,
    matrix: np.ndarray,
    stains: Iterable[int],
    background: float | np.ndarray = 255.0,
) -> np.ndarray:
    """uint8 RGB of ``rgb`` as if only ``stains`` (rows of ``matrix``) had stained it.

    Deconvolves, sets the concentrations of the other stains to 0 and clips negative ones
    (noise and light that no stain explains), then recombines.  The viewer's deconvolution
    display computes the same image through lookup tables.
    """
    concentrations = separate_stains(_as_rgb(rgb), matrix, background)
    kept = np.zeros_like(concentrations)
    for stain in stains:
        kept[..., stain] = np.maximum(concentrations[..., stain], 0.0)
    return combine_stains(kept, matrix, background)


# ----------------------------------------------------------------------------------------------
# Macenko stain estimation and normalisation
# ----------------------------------------------------------------------------------------------

#: Fewest tissue pixels for a stain estimate; below it the angle percentiles are noise.
MIN_TISSUE_PIXELS = 100

#: Largest cosine between the two estimated stains; above it they are one colour, and the stain
#: matrix would be (nearly) singular.
_MAX_STAIN_COSINE = 0.999


def _as_rgb(rgb: np.ndarray) -> np.ndarray:
    """The RGB channels of an ``(..., 3)`` or ``(..., 4)`` image (alpha is dropped)."""
    array = np.asarray(rgb)
    if array.ndim < 1 or array.shape[-1] not in (3, 4):
        raise ValueError(f"expected an RGB(A) image of shape (..., 3), got {array.shape}")
    return array[..., :3]


def _tissue_od(rgb: np.ndarray, beta: float, background: float) -> np.ndarray:
    """``(n, 3)`` OD of the pixels whose OD exceeds ``beta`` in every channel."""
    od = rgb_to_od(_as_rgb(rgb), background).reshape(-1, 3)
    return od[np.all(od > beta, axis=1)]


def _macenko(od: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Stain matrix and 99th-percentile concentrations of tissue OD pixels ``(n, 3)``."""
    if od.shape[0] < MIN_TISSUE_PIXELS:
        raise ValueError(
            f"too little tissue to estimate stains: {od.shape[0]} pixels above the OD "
            f"threshold, at least {MIN_TISSUE_PIXELS} needed"
        )
    if not 0.0 <= alpha < 50.0:
        raise ValueError(f"alpha is a percentile in [0, 50), got {alpha}")
    od64 = od.astype(np.float64)
    _, eigenvectors = np.linalg.eigh(np.cov(od64, rowvar=False))
    plane = eigenvectors[:, [2, 1]]  # eigh sorts ascending: the two largest span the stains
    # Measure angles from the mean OD direction projected into the plane: every tissue pixel
    # then lies within +-90 degrees of the first axis, so angles never wrap around +-180 (the
    # sign of an eigenvector is arbitrary, and the largest one need not be the mean colour).
    mean = plane.T @ od64.mean(axis=0)
    if np.linalg.norm(mean) == 0.0:
        raise ValueError("tissue OD has no component in the stain plane")
    first = plane @ (mean / np.linalg.norm(mean))
    second = plane @ (np.array([-mean[1], mean[0]]) / np.linalg.norm(mean))
    angles = np.arctan2(od64 @ second, od64 @ first)
    low, high = np.percentile(angles, [alpha, 100.0 - alpha])
    stains = []
    for angle in (low, high):
        vector = first * np.cos(angle) + second * np.sin(angle)
        if vector.sum() < 0:
            vector = -vector
        # Optical densities are non-negative; a slightly negative component (e.g. eosin's red)
        # is estimation noise.
        vector = np.maximum(vector, 0.0)
        stains.append(vector / np.linalg.norm(vector))
    if float(stains[0] @ stains[1]) > _MAX_STAIN_COSINE:
        raise ValueError("tissue has a single colour: cannot separate two stains")
    # Haematoxylin absorbs more red light than eosin (Ruifrok: 0.65 against 0.07).
    if stains[0][0] < stains[1][0]:
        stains.reverse()
    matrix = complete_stain_matrix(np.stack(stains[:2]))
    concentrations = od64 @ np.linalg.inv(matrix)[:, :2]
    max_concentrations = np.percentile(concentrations, 99.0, axis=0)
    return matrix, max_concentrations


def estimate_stain_vectors(
    rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0, background: float = 255.0
) -> tuple[np.ndarray, np.ndarray]:
    """Macenko estimate of an image's H and E stain vectors and robust maximum concentrations.

    Parameters
    ----------
    rgb
        ``(..., 3)`` RGB image, uint8 or float on the 0-255 scale (an alpha channel is ignored).
    beta
        OD threshold: only pixels whose OD exceeds it in every channel count as tissue.
    alpha
        Percentile of the tissue pixels' angles in the stain plane taken as the pure stains
        (``alpha`` and ``100 - alpha``); a small value is robust to outliers.
    background
        Intensity of empty glass (``I0`` of the OD conversion).

    Returns
    -------
    matrix
        ``(3, 3)`` float64 stain matrix of unit rows: haematoxylin, eosin, and a residual
        orthogonal to both (so that the matrix is well conditioned; it may have a negative
        component).
    max_concentrations
        ``(2,)`` float64 99th percentiles of the tissue's H and E concentrations.

    Raises
    ------
    ValueError
        With fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels, or when the tissue has a single
        colour so that two stains cannot be told apart.
    """
    return _macenko(_tissue_od(rgb, beta, background), alpha)


@dataclass(eq=False)
class StainNormalizer:
    """Macenko stain normaliser: maps an image's stains onto a target's.

    ``fit`` estimates the target stain matrix and maximum concentrations from reference images;
    ``transform`` estimates a source image's own stains, rescales its H and E concentrations so
    that their robust maxima match the target's, and recombines them with the target matrix.

    Parameters
    ----------
    beta, alpha, background
        As in :func:`estimate_stain_vectors`; used for the target and every source image.
    max_pixels
        Most tissue pixels pooled by :meth:`fit` (a uniform random subsample beyond that).
    seed
        Seed of that subsample, so fitting is deterministic.
    stain_matrix, max_concentrations
        The target, set by :meth:`fit` or :meth:`from_dict`.

    Notes
    -----
    Two normalisers are equal when their :meth:`to_dict` are, i.e. when they transform images
    identically (``max_pixels`` and ``seed`` only matter to :meth:`fit`).
    """

    beta: float = 0.15
    alpha: float = 1.0
    background: float = 255.0
    max_pixels: int = 200_000
    seed: int = 0
    stain_matrix: np.ndarray | None = None
    max_concentrations: np.ndarray | None = None
    #: Whose stains are mapped onto the target: each patch's own ("patch"), or its slide's,
    #: estimated once from a sample of the slide's patches ("slide").  Per patch, a tumour
    #: patch's darker nuclei are scaled back to the target's maximum, erasing hyperchromasia;
    #: per slide, every patch of a slide gets the same mapping, so differences within the
    #: slide survive and differences between slides (labs, scanners) go.
    scope: str = "patch"

    #: Name of the estimation method in :meth:`to_dict`.
    method: ClassVar[str] = "macenko"

    @property
    def fitted(self) -> bool:
        """Whether a target has been set."""
        return self.stain_matrix is not None and self.max_concentrations is not None

    def fit(self, images: Iterable[np.ndarray]) -> StainNormalizer:
        """Estimate the target from the pooled tissue pixels of reference images.

        Parameters
        ----------
        images
            RGB images ``(..., 3)``, e.g. the patches of a cohort; read once, in order.

        Returns
        -------
        StainNormalizer
            ``self``, fitted.

        Raises
        ------
        ValueError
            When all images together have too little tissue, or a single colour.
        """
        self.stain_matrix, self.max_concentrations = _macenko(self._pooled_od(images), self.alpha)
        return self

    def _pooled_od(self, images: Iterable[np.ndarray]) -> np.ndarray:
        """A uniform sample of at most ``max_pixels`` tissue OD pixels of ``images``."""
        rng = np.random.default_rng(self.seed)
        # Bottom-k sampling: give every pixel a uniform random key and keep the max_pixels
        # smallest keys seen so far.  That is a uniform sample of the whole stream without
        # holding all of it, whatever the number and size of the images.
        kept = np.empty((0, 3), np.float32)
        keys = np.empty(0, np.float64)
        for image in images:
            od = _tissue_od(image, self.beta, self.background)
            kept = np.concatenate([kept, od])
            keys = np.concatenate([keys, rng.random(od.shape[0])])
            if keys.shape[0] > self.max_pixels:
                keep = np.argpartition(keys, self.max_pixels - 1)[: self.max_pixels]
                kept, keys = kept[keep], keys[keep]
        return kept

    def estimate_source(self, images: Iterable[np.ndarray]) -> SourceStains | None:
        """One slide's own stains, pooled over a sample of its patches (``scope="slide"``).

        Returns None when the images together have too little tissue or a single colour; the
        patches are then normalised one by one.
        """
        try:
            return _macenko(self._pooled_od(images), self.alpha)
        except ValueError:
            return None

    def transform(self, rgb: np.ndarray, source: SourceStains | None = None) -> np.ndarray:
        """The image with its stains mapped onto the target's.

        Parameters
        ----------
        rgb
            ``(..., 3)`` RGB image, uint8 (an alpha channel is dropped).
        source
            The stains of the slide the image comes from (:meth:`estimate_source`); None
            estimates them from the image itself.

        Returns
        -------
        numpy.ndarray
            uint8 RGB of the same shape.  An image with too little tissue (or a single colour)
            for a stain estimate is returned unchanged, as a copy.

        Raises
        ------
        RuntimeError
            When the normaliser has not been fitted.
        """
        if self.stain_matrix is None or self.max_concentrations is None:
            raise RuntimeError("StainNormalizer is not fitted: call fit() or from_dict() first")
        image = _as_rgb(rgb)
        if source is not None:
            matrix, source_max = source
        else:
            try:
                matrix, source_max = estimate_stain_vectors(
                    image, self.beta, self.alpha, self.background
                )
            except ValueError:
                # Background-only patches have no stain to normalise; leave them as they are.
                return np.array(image, np.uint8, copy=True)
        concentrations = separate_stains(image, matrix, self.background)
        scale = self.max_concentrations / np.maximum(source_max, 1e-6)
        concentrations[..., :2] *= scale.astype(np.float32)
        # The residual channel is kept: it carries what neither stain explains (pigment, dust,
        # folds), which would otherwise turn grey.
        return combine_stains(concentrations, self.stain_matrix, self.background)

    def to_dict(self) -> dict[str, Any]:
        """The target and settings as plain floats, lists of floats and the method name.

        Safe for JSON and for ``torch.load(weights_only=True)``.
        """
        if self.stain_matrix is None or self.max_concentrations is None:
            raise RuntimeError("StainNormalizer is not fitted: nothing to save")
        return {
            "method": self.method,
            "stain_matrix": [[float(v) for v in row] for row in self.stain_matrix],
            "max_concentrations": [float(v) for v in self.max_concentrations],
            "beta": float(self.beta),
            "alpha": float(self.alpha),
            "background": float(self.background),
            "scope": self.scope,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StainNormalizer:
        """A fitted normaliser from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            For another method name or a malformed target.
        """
        if d.get("method") != cls.method:
            raise ValueError(f"unknown stain normalisation method {d.get('method')!r}")
        matrix = np.array(d["stain_matrix"], np.float64)
        maxima = np.array(d["max_concentrations"], np.float64)
        if matrix.shape != (3, 3) or maxima.shape != (2,):
            raise ValueError(
                f"stain_matrix must be 3x3 and max_concentrations 2 values, got "
                f"{matrix.shape} and {maxima.shape}"
            )
        if not (np.all(np.isfinite(matrix)) and np.all(np.isfinite(maxima))):
            raise ValueError("stain normaliser target has non-finite values")
        if d.get("scope", "patch") not in STAIN_SCOPES:
            raise ValueError(f"unknown stain normalisation scope {d.get('scope')!r}")
        return cls(
            beta=float(d.get("beta", 0.15)),
            alpha=float(d.get("alpha", 1.0)),
            background=float(d.get("background", 255.0)),
            stain_matrix=matrix,
            max_concentrations=maxima,
            scope=str(d.get("scope", "patch")),
        )

    def _state(self) -> tuple[Any, ...]:
        matrix = None if self.stain_matrix is None else self.stain_matrix.tolist()
        maxima = None if self.max_concentrations is None else self.max_concentrations.tolist()
        return (
            float(self.beta),
            float(self.alpha),
            float(self.background),
            matrix,
            maxima,
            self.scope,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StainNormalizer):
            return NotImplemented
        return self._state() == other._state()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value


def stain_statistics(
    rgb: np.ndarray, threshold: float = 0.15, background: float = 255.0
) -> dict[str, float]:
    """Mean Ruifrok H and E concentrations of an image's tissue, and its tissue fraction.

    Cheap summary for telling whether a slide's staining looks unlike the training slides'.

    Parameters
    ----------
    rgb
        ``(..., 3)`` RGB image, uint8.
    threshold
        A pixel is tissue when its OD summed over the channels exceeds this.
    background
        Intensity of empty glass.

    Returns
    -------
    dict
        ``mean_h`` and ``mean_e`` (0.0 without tissue) and ``tissue_fraction`` in [0, 1].
    """
    od = rgb_to_od(_as_rgb(rgb), background).reshape(-1, 3)
    tissue = od[od.sum(axis=1) > threshold]
    fraction = tissue.shape[0] / od.shape[0] if od.shape[0] else 0.0
    if tissue.shape[0] == 0:
        return {"mean_h": 0.0, "mean_e": 0.0, "tissue_fraction": float(fraction)}
    concentrations = tissue @ np.linalg.inv(HED_VECTORS).astype(np.float32)
    mean = concentrations.mean(axis=0, dtype=np.float64)
    return {"mean_h": float(mean[0]), "mean_e": float(mean[1]), "tissue_fraction": float(fraction)}
