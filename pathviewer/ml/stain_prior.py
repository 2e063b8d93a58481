"""A first ranking of positive-slide patches that does not come from the network (NGSD's bank).

The Prediction Bank turns the teacher's scores into pseudo-labels, so the self-distillation can
only be as good as the teacher's first ranking, and an untrained network's ranking is noise (on
realistic cohorts it even starts inverted: docs/ngsd.md).  The stain prior ranks the patches
before any network has trained, guided by the negative slides, as the method is:

1. Every training patch is described by a few stain statistics: haematoxylin and eosin
   concentrations (colour deconvolution, :mod:`pathviewer.core.stain`) and their quantiles,
   the share of nuclear pixels, nuclear texture and size (grey openings), tissue share.
2. Each feature is standardised *within its slide* (median and MAD over the slide's patches).
   Stain, scanner and thickness differ between slides far more than tumour differs from normal
   tissue within one; referenced to its own slide, normal tissue looks alike on every slide,
   and tumour (a small share of a positive slide) stands out.
3. A logistic regression separates positive-slide from negative-slide patches on those
   standardised features.  Normal tissue is on both sides, so the direction it finds is what
   only positive slides have: the tumour.

Its score (log-odds relative to the median negative-slide patch, the same reference as the
bank's teacher scores) starts the bank, and is blended into the teacher's scores while the
student learns (:class:`~pathviewer.ml.config.NGSDConfig` ``bank_prior``, ``prior_weight``).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from pathviewer.core.progress import Progress
from pathviewer.core.stain import separate_stains

#: Names of the columns of :func:`patch_features`, in order.
FEATURE_NAMES = (
    "h_mean",
    "e_mean",
    "h_q50",
    "h_q75",
    "h_q90",
    "h_q97",
    "e_q25",
    "e_q50",
    "e_q90",
    "h_area_0.3",
    "h_area_0.5",
    "h_area_0.7",
    "h_opening_2",
    "h_opening_4",
    "h_laplacian",
    "tissue_share",
    "h_share",
)

#: Inverse regularisation of the logistic regression (strong: ~5,000 patches, 17 features,
#: and the slide labels say little about any one patch).
PRIOR_C = 0.01


def patch_features(pixels: np.ndarray) -> np.ndarray:
    """Stain statistics of one RGB patch, ``(len(FEATURE_NAMES),)`` float32.

    Parameters
    ----------
    pixels
        ``(s, s, 3)`` uint8 RGB.
    """
    return batch_features(np.asarray(pixels)[None])[0]


def batch_features(pixels: np.ndarray) -> np.ndarray:
    """:func:`patch_features` of a stack of patches at once, ``(n, len(FEATURE_NAMES))``.

    Parameters
    ----------
    pixels
        ``(n, s, s, 3)`` uint8 RGB.
    """
    c = separate_stains(pixels)
    h, e = c[..., 0], c[..., 1]
    n = len(h)
    tissue = c.sum(-1) > 0.15
    # Filters act within each patch (size 1 along the stack axis).
    smooth = ndimage.uniform_filter(h, size=(1, 3, 3))
    laplacian = sum(
        ndimage.correlate1d(smooth, [1.0, -2.0, 1.0], axis=axis, mode="reflect") for axis in (1, 2)
    )
    share = h / (h + e + 1e-3)
    tissue_count = tissue.sum(axis=(1, 2))
    flat_h, flat_e = h.reshape(n, -1), e.reshape(n, -1)
    columns = [
        flat_h.mean(axis=1),
        flat_e.mean(axis=1),
        *np.quantile(flat_h, [0.5, 0.75, 0.9, 0.97], axis=1),
        *np.quantile(flat_e, [0.25, 0.5, 0.9], axis=1),
        *((flat_h > t).mean(axis=1) for t in (0.3, 0.5, 0.7)),
        # Nuclei wider than 2 (4) px survive the opening: a measure of nuclear size.
        ndimage.grey_opening(smooth, size=(1, 2, 2)).mean(axis=(1, 2)),
        ndimage.grey_opening(smooth, size=(1, 4, 4)).mean(axis=(1, 2)),
        np.abs(laplacian).mean(axis=(1, 2)),
        tissue.mean(axis=(1, 2)),
        np.where(
            tissue_count > 0,
            (share * tissue).sum(axis=(1, 2)) / np.maximum(tissue_count, 1),
            0.0,
        ),
    ]
    return np.stack(columns, axis=1).astype(np.float32)


def spread_floor(features: np.ndarray) -> np.ndarray:
    """The smallest within-slide spread of each feature: a tenth of its cohort-wide spread.

    A feature nearly constant on one slide (no pixel above a threshold on a pale slide) has a
    MAD of ~0 there; the floor keeps its noise from reading as ten-sigma outliers.
    """
    return (0.1 * np.asarray(features, np.float32).std(axis=0) + 1e-6).astype(np.float32)


def standardise_within_slides(
    features: np.ndarray, slide_of: np.ndarray, floor: np.ndarray | None = None
) -> np.ndarray:
    """Features minus their slide's median, over their slide's MAD (clipped to +-10).

    Parameters
    ----------
    features
        ``(n, f)`` per patch.
    slide_of
        ``(n,)`` slide number of each patch.
    floor
        Smallest spread per feature (:func:`spread_floor` of the training cohort; computed
        from ``features`` when None).
    """
    out = np.empty(features.shape, np.float32)
    floor = spread_floor(features) if floor is None else floor
    for slide in np.unique(slide_of):
        rows = slide_of == slide
        block = features[rows]
        median = np.median(block, axis=0)
        spread = 1.4826 * np.median(np.abs(block - median), axis=0)
        out[rows] = (block - median) / np.maximum(spread, floor)
    return np.clip(out, -10.0, 10.0)


@dataclass
class StainPrior:
    """A fitted stain prior: what turns a slide's patch features into tumour log-odds.

    Attributes
    ----------
    coef, intercept
        The logistic regression on within-slide standardised features.
    floor
        Per-feature floor of the within-slide spread (from the training cohort).
    reference, scale
        The median and spread of the training negative-slide patches' decision values: the
        logits are ``(decision - reference) / scale``.
    """

    coef: np.ndarray
    intercept: float
    floor: np.ndarray
    reference: float
    scale: float

    def logits(self, features: np.ndarray, slide_of: np.ndarray) -> np.ndarray:
        """Tumour log-odds of patches, each referenced to the other patches of its slide.

        Parameters
        ----------
        features
            ``(n, f)`` :func:`patch_features`.
        slide_of
            ``(n,)`` slide number of each patch (one slide: all equal).
        """
        z = standardise_within_slides(np.asarray(features, np.float32), slide_of, self.floor)
        decision = z.astype(np.float64) @ self.coef + self.intercept
        return ((decision - self.reference) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats (what a weights-only ``torch.load`` reads back)."""
        return {
            "features": list(FEATURE_NAMES),
            "coef": [float(v) for v in self.coef],
            "intercept": float(self.intercept),
            "floor": [float(v) for v in self.floor],
            "reference": float(self.reference),
            "scale": float(self.scale),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StainPrior:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ValueError
            The prior was fitted on other features than this version computes.
        """
        if list(data.get("features", [])) != list(FEATURE_NAMES):
            raise ValueError("the stain prior was fitted on other features")
        return cls(
            np.asarray(data["coef"], np.float64),
            float(data["intercept"]),
            np.asarray(data["floor"], np.float32),
            float(data["reference"]),
            float(data["scale"]),
        )


def fit_stain_prior(
    features: np.ndarray, slide_of: np.ndarray, slide_positive: np.ndarray
) -> StainPrior:
    """Fit the prior on training patches: positive- against negative-slide patches.

    Parameters
    ----------
    features
        ``(n, f)`` :func:`patch_features` of every training patch.
    slide_of
        ``(n,)`` slide number of each patch.
    slide_positive
        ``(n,)`` bool, whether the patch's slide is labelled positive.

    Raises
    ------
    ValueError
        The patches do not come from both positive and negative slides.
    """
    from sklearn.linear_model import LogisticRegression

    positive = np.asarray(slide_positive, bool)
    if positive.all() or not positive.any():
        raise ValueError("the stain prior needs patches of positive and negative slides")
    features = np.asarray(features, np.float32)
    floor = spread_floor(features)
    z = standardise_within_slides(features, np.asarray(slide_of), floor)
    model = LogisticRegression(C=PRIOR_C, class_weight="balanced", max_iter=2000)
    model.fit(z, positive.astype(np.int64))
    decision = model.decision_function(z)
    reference = float(np.median(decision[~positive]))
    # On the scale of the teacher's logits: a negative-slide patch one spread above the
    # median is about as unusual as a logit of 1.
    scale = 1.4826 * float(np.median(np.abs(decision[~positive] - reference)))
    return StainPrior(
        model.coef_[0].astype(np.float64),
        float(model.intercept_[0]),
        floor,
        reference,
        max(scale, 1e-6),
    )


def stain_prior_logits(
    features: np.ndarray, slide_of: np.ndarray, slide_positive: np.ndarray
) -> np.ndarray:
    """Fit the prior (:func:`fit_stain_prior`) and return the training patches' log-odds.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32 logits; 0 is a typical negative-slide patch.
    """
    prior = fit_stain_prior(features, slide_of, slide_positive)
    return prior.logits(features, np.asarray(slide_of))


#: Side of the view the features are computed on: patches larger than this as the network
#: sees them are shrunk first, so the prior costs ~1 ms a patch at any network input size.
PRIOR_VIEW = 64


def input_features(images: torch.Tensor) -> np.ndarray:
    """:func:`batch_features` of network inputs, the same in training and at inference.

    Parameters
    ----------
    images
        ``(n, 3, s, s)`` uint8 patches as the network sees them (``pathviewer.ml.data.to_input``).
    """
    view = images
    if images.shape[-1] > PRIOR_VIEW:
        view = torch.nn.functional.interpolate(
            images.float(), size=(PRIOR_VIEW, PRIOR_VIEW), mode="bilinear", antialias=True
        )
        view = view.round().clamp(0, 255).to(torch.uint8)
    return batch_features(view.permute(0, 2, 3, 1).cpu().numpy())


def compute_features(
    n_patches: int, get: Callable[[int], torch.Tensor], every: int = 256
) -> Generator[Progress, None, np.ndarray]:
    """:func:`input_features` of patches ``0 .. n_patches - 1``; ``get`` gives network inputs."""
    out = np.empty((n_patches, len(FEATURE_NAMES)), np.float32)
    for start in range(0, n_patches, every):
        stop = min(n_patches, start + every)
        out[start:stop] = input_features(torch.stack([get(i) for i in range(start, stop)]))
        yield Progress("stain prior", stop, n_patches, "stain statistics of the patches")
    return out
