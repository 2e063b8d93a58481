"""The refinement model on slide-referenced stain statistics (``--model stain``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathviewer.core.progress import run_job
from pathviewer.ml.patch_data import ArrayDataset
from pathviewer.ml.refine import RefineConfig, _augment, train_refine
from pathviewer.ml.stain_classifier import (
    FeatureDataset,
    StainFeatureClassifier,
    iter_slide_features,
)
from tests.test_stain_prior import _patch


def _cohort(
    rng: np.random.Generator, per_slide: int, stains: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patches of slides stained with different strengths; a tenth of each is hyperchromatic."""
    images, labels, slide = [], [], []
    for number, stain in enumerate(stains):
        for i in range(per_slide):
            tumour = i % 10 == 0
            images.append(_patch(rng, 1.6 if tumour else 1.0, stain))
            labels.append(int(tumour))
            slide.append(number)
    return np.stack(images), np.array(labels), np.array(slide)


def test_features_are_referenced_to_their_slide() -> None:
    rng = np.random.default_rng(0)
    images, labels, slide = _cohort(rng, 30, (0.7, 1.4))
    features = run_job(iter_slide_features(ArrayDataset(images), slide.tolist()))
    assert features.shape == (60, 17) and np.isfinite(features).all()
    # A pale and a dark slide's normal patches look alike once referenced to their slides ...
    normal = labels == 0
    pale, dark = features[normal & (slide == 0)], features[normal & (slide == 1)]
    assert np.abs(np.median(pale, 0) - np.median(dark, 0)).max() < 0.5
    # ... and the hyperchromatic (tumour-like) patches stand out on every slide.
    h_column = 0
    assert np.median(features[~normal, h_column]) > np.median(features[normal, h_column]) + 1


def test_stain_classifier_trains_in_the_refinement_engine() -> None:
    rng = np.random.default_rng(1)
    images, labels, slide = _cohort(rng, 60, (0.7, 1.0, 1.4))
    features = run_job(iter_slide_features(ArrayDataset(images), slide.tolist()))
    noisy = labels.copy()
    flip = rng.choice(len(noisy), 12, replace=False)
    noisy[flip] = 1 - noisy[flip]
    config = RefineConfig(max_rounds=6, warmup=2, batch_size=32, device="cpu", seed=0)
    result = train_refine(
        FeatureDataset(features), noisy, 2, lambda: StainFeatureClassifier(2), config
    )
    with torch.no_grad():
        predicted = result.model(torch.from_numpy(features)).argmax(1).numpy()
    assert not result.collapsed
    assert (predicted[labels == 1] == 1).mean() > 0.8 and (predicted[labels == 0] == 0).mean() > 0.8


def test_feature_dataset_wants_a_matrix() -> None:
    with pytest.raises(ValueError, match="2-D"):
        FeatureDataset(np.zeros((4, 3, 2)))


def test_augment_leaves_feature_batches_alone() -> None:
    # A batch of 17 feature vectors of 17 features is square; rotating it would mix samples.
    batch = torch.arange(17 * 17, dtype=torch.float32).reshape(17, 17)
    generator = torch.Generator().manual_seed(0)
    for _ in range(8):
        assert torch.equal(_augment(batch, generator), batch)
