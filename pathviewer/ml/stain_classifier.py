"""A patch classifier on slide-referenced stain statistics (label refinement's CPU model).

A network trained from scratch on a few thousand noisy, imbalanced patch labels learns the
slides' stain as much as the tissue: every slide is stained and scanned differently, and the
difference between slides is larger than the difference between tumour and normal tissue on one.
The statistics of :mod:`pathviewer.ml.stain_prior`, standardised within each patch's slide
(median and MAD over the slide's patches), remove that difference before anything is learned;
a small network on those 17 numbers trains in seconds on a CPU and, on the realistic benchmark
(docs/label-refinement.md), separates tumour from normal better than the CNN on pixels does.

The label-refinement engine trains it exactly as it trains any classifier: only the samples are
feature vectors instead of images.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from pathviewer.core.progress import Progress
from pathviewer.ml.stain_prior import (
    FEATURE_NAMES,
    PRIOR_VIEW,
    compute_features,
    standardise_within_slides,
)

#: Side at which the patches are read for their statistics (the stain prior's view).
FEATURE_VIEW = PRIOR_VIEW

#: Hidden units of :class:`StainFeatureClassifier` (0: a linear model).
DEFAULT_HIDDEN = 32


class StainFeatureClassifier(nn.Module):
    """A one-hidden-layer perceptron on standardised stain statistics.

    Parameters
    ----------
    num_classes
        Output classes.
    hidden
        Hidden units (0: logistic regression).
    num_features
        Input features (the stain prior's statistics by default).
    """

    def __init__(
        self, num_classes: int, hidden: int = DEFAULT_HIDDEN, num_features: int = len(FEATURE_NAMES)
    ) -> None:
        super().__init__()
        if hidden > 0:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(num_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
            )
        else:
            self.net = nn.Linear(num_features, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, num_classes)`` of features ``(n, num_features)``."""
        return self.net(features)


class FeatureDataset(Dataset):
    """Rows of a feature matrix as a dataset of 1-D float tensors.

    Parameters
    ----------
    features
        ``(n, f)``.
    """

    def __init__(self, features: np.ndarray) -> None:
        array = np.asarray(features, np.float32)
        if array.ndim != 2:
            raise ValueError(f"features must be 2-D, got shape {array.shape}")
        self.features = torch.from_numpy(array.copy())

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.features[index]


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    # Patch datasets give floats in [0, 1]; the statistics are defined on 8-bit RGB.
    return (image * 255.0).round().clamp(0, 255).to(torch.uint8)


def iter_slide_features(
    images: Dataset[Any], slide_of: Sequence[Any]
) -> Generator[Progress, None, np.ndarray]:
    """Stain statistics of every patch, standardised within its slide.

    Parameters
    ----------
    images
        ``(3, S, S)`` float patches in [0, 1] (read at :data:`FEATURE_VIEW` px: larger ones are
        shrunk to it first, as the stain prior does).
    slide_of
        Each patch's slide (any hashable: a path, a number).

    Returns
    -------
    numpy.ndarray
        ``(n, len(FEATURE_NAMES))`` float32.
    """
    n = len(slide_of)
    raw = yield from compute_features(n, lambda i: _as_uint8(images[i]))
    _, codes = np.unique(np.array([str(s) for s in slide_of]), return_inverse=True)
    return standardise_within_slides(raw, codes)
