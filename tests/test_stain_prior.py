"""The stain prior that starts NGSD's Prediction Bank: features, within-slide reference, ranking."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pathviewer.core.progress import run_job
from pathviewer.core.stain import HED_VECTORS, combine_stains
from pathviewer.ml.ngsd import train
from pathviewer.ml.stain_prior import (
    FEATURE_NAMES,
    input_features,
    patch_features,
    stain_prior_logits,
    standardise_within_slides,
)
from tests.test_ngsd import ROWS, make_png_cohort, tiny_config


def _patch(rng: np.random.Generator, h_scale: float, stain_scale: float = 1.0) -> np.ndarray:
    """A 64 px H&E-like patch: nuclei (haematoxylin blobs) in eosin, stain strength scaled."""
    conc = np.zeros((64, 64, 3), np.float32)
    conc[..., 1] = 0.3 + 0.05 * rng.standard_normal((64, 64))
    for _ in range(rng.integers(8, 16)):
        y, x = rng.integers(4, 60, 2)
        r = rng.integers(2, 4)
        conc[y - r : y + r, x - r : x + r, 0] = rng.uniform(0.5, 0.7) * h_scale
    return combine_stains(conc * stain_scale, HED_VECTORS)


def test_features_see_hyperchromasia() -> None:
    rng = np.random.default_rng(0)
    normal = patch_features(_patch(rng, 1.0))
    dark = patch_features(_patch(rng, 1.5))
    assert normal.shape == (len(FEATURE_NAMES),) and normal.dtype == np.float32
    q97 = FEATURE_NAMES.index("h_q97")
    assert dark[q97] > normal[q97] * 1.3


def test_standardised_within_each_slide() -> None:
    rng = np.random.default_rng(1)
    features = rng.normal(0, 1, (300, 4)).astype(np.float32)
    slide_of = np.repeat([0, 1, 2], 100)
    features[slide_of == 1] = features[slide_of == 1] * 5 + 3  # a slide stained otherwise
    z = standardise_within_slides(features, slide_of)
    for s in range(3):
        np.testing.assert_allclose(np.median(z[slide_of == s], axis=0), 0, atol=1e-5)
    assert abs(z[slide_of == 1].std() - z[slide_of == 0].std()) < 0.3


def test_prior_ranks_what_only_positive_slides_have() -> None:
    """Per-slide stain shifts dwarf the tumour's change; the prior still finds the tumour."""
    rng = np.random.default_rng(0)
    # Slide-wide stain strength, unrelated to the label: strong normal slides are darker
    # than weakly stained tumour.
    stains = [0.6, 0.7, 1.6, 1.5, 0.8, 0.9, 1.4, 1.3, 0.65, 1.55, 1.0, 1.1]
    rows, slide_of, positive, tumour = [], [], [], []
    for slide, stain in enumerate(stains):
        is_positive = slide % 2 == 0
        for i in range(100):
            is_tumour = is_positive and i < 10
            rows.append(patch_features(_patch(rng, 1.4 if is_tumour else 1.0, stain)))
            slide_of.append(slide)
            positive.append(is_positive)
            tumour.append(is_tumour)
    features = np.stack(rows)
    slide_of_a, positive_a, tumour_a = np.array(slide_of), np.array(positive), np.array(tumour)
    logits = stain_prior_logits(features, slide_of_a, positive_a)
    assert logits.shape == (len(rows),)
    assert abs(float(np.median(logits[~positive_a]))) < 1e-5  # referenced to the negatives
    from sklearn.metrics import roc_auc_score

    in_positive = positive_a
    assert roc_auc_score(tumour_a[in_positive], logits[in_positive]) > 0.9
    # Without the within-slide reference the same raw feature ranks the tumour far worse.
    raw = features[:, FEATURE_NAMES.index("h_q97")]
    assert roc_auc_score(tumour_a[in_positive], raw[in_positive]) < 0.8


def test_prior_needs_both_slide_labels() -> None:
    with pytest.raises(ValueError, match="positive and negative"):
        stain_prior_logits(np.zeros((4, 17)), np.zeros(4, int), np.ones(4, bool))


def test_training_starts_the_bank_from_the_prior(tmp_path: Path) -> None:
    cohort = make_png_cohort(tmp_path / "cohort", ROWS)
    events: list = []
    run_job(train(cohort, tmp_path / "run", tiny_config(bank_prior="stain")), events.append)
    assert any(e.stage == "stain prior" for e in events)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Every slot is scored from the first step (by the prior), and the prior finds the
    # dark square of the positive training slide.
    assert lines[0]["bank_seen_fraction"] == 1.0
    assert lines[0]["prior_instance_auc"] > 0.9


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prior_run")
    cohort = make_png_cohort(root / "cohort", ROWS)
    run_job(train(cohort, root / "run", tiny_config(bank_prior="stain", prior_weight=0.5)))
    return cohort, root / "run" / "model.pt"


def test_model_file_carries_the_prior_and_the_heatmap_blends_it(
    prior_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from pathviewer.ml.inference import describe_model, predict
    from pathviewer.ml.model_file import ModelFile

    cohort, model_path = prior_run
    model = ModelFile.load(model_path)
    assert model.has_stain_prior
    record = model.data["stain_prior"]
    assert record["weight"] == 0.5 and np.isfinite(record["net_reference"])
    assert "stain prior 0.5" in describe_model(model_path, model.data)
    blended = run_job(predict(model_path, cohort, tmp_path / "blend", "test"))
    alone = run_job(predict(model_path, cohort, tmp_path / "alone", "test", network_only=True))
    for b, a in zip(blended, alone, strict=True):
        assert b.probs.shape == a.probs.shape
    # The blend is the documented mix of the two log-odds, patch by patch.
    scorer = model.scorer()
    first = alone[0]
    from pathviewer.ml.data import PatchStore, to_input

    store = PatchStore([first.tiled])
    pixels = [to_input(store.get(i), model.config.input_size) for i in range(len(store))]
    store.close()
    features = input_features(torch.stack(pixels))
    expected = scorer.blend(first.probs, features)  # type: ignore[attr-defined]
    np.testing.assert_allclose(blended[0].probs, expected, atol=1e-5)
    assert not np.allclose(blended[0].probs, first.probs, atol=1e-3)


def test_unusable_prior_in_a_model_file_is_named(
    prior_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from pathviewer.core.errors import CheckpointError
    from pathviewer.ml.model_file import ModelFile

    data = torch.load(prior_run[1], weights_only=True)
    data["stain_prior"]["features"] = ["something else"]
    broken = tmp_path / "model.pt"
    torch.save(data, broken)
    with pytest.raises(CheckpointError, match="stain prior"):
        ModelFile.load(broken)


def test_batch_features_are_the_one_patch_features() -> None:
    from pathviewer.ml.stain_prior import PRIOR_VIEW, batch_features

    rng = np.random.default_rng(3)
    patches = np.stack([_patch(rng, 1.0 + 0.1 * i) for i in range(5)])
    patches[2] = 255  # glass only: no tissue
    together = batch_features(patches)
    np.testing.assert_allclose(together, np.stack([patch_features(p) for p in patches]), atol=1e-6)
    assert together[2, FEATURE_NAMES.index("tissue_share")] == 0
    # Larger network inputs are shrunk to the prior's view first: same size of features.
    big = torch.from_numpy(np.repeat(np.repeat(patches, 2, 1), 2, 2)).permute(0, 3, 1, 2)
    assert big.shape[-1] == 2 * PRIOR_VIEW
    shrunk = input_features(big)
    np.testing.assert_allclose(shrunk[:, 0], together[:, 0], rtol=0.1, atol=0.01)
