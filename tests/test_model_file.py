"""Model files and scorers: every kind loads through ModelFile and scores as it always did."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pathviewer import jobs
from pathviewer.core.cohort import read_cohort, select
from pathviewer.core.errors import CheckpointError
from pathviewer.core.progress import run_job
from pathviewer.ml import checkpoint as ckpt
from pathviewer.ml.data import PatchStore, tile_cohort, to_input
from pathviewer.ml.inference import model_normalizer, run_scorer
from pathviewer.ml.model_file import (
    SCORERS,
    AttentionMILScorer,
    ModelFile,
    PatchScorer,
    pool_scores,
)
from pathviewer.ml.models import AttentionMIL, PatchClassifier, build_classifier
from pathviewer.ml.ngsd import NGSDConfig
from tests.test_ngsd import ROWS, make_png_cohort, tiny_config

METHODS = ("ngsd", "naive", "abmil")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_png_cohort(tmp_path_factory.mktemp("mf_cohort"), ROWS)


@pytest.fixture(scope="module")
def model_paths(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One model.pt per method, from two training steps of its own trainer."""
    root = tmp_path_factory.mktemp("mf_runs")
    out = {}
    for method in METHODS:
        run_job(jobs.train_slide_model(cohort, root / method, tiny_config(method=method, steps=2)))
        out[method] = root / method / "model.pt"
    return out


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 3, size, size))).to(
        torch.uint8
    )


def _reference(
    model: ModelFile, images: torch.Tensor, with_prior: bool = True
) -> tuple[np.ndarray, float]:
    """What inference computes: the per-method code, written out (with the model's stain prior)."""
    x_uint8 = images
    x = images.float().div_(255)
    cfg = model.config
    with torch.inference_mode():
        if model.method == "abmil":
            network = model.network
            assert isinstance(network, AttentionMIL)
            feats = network.instance_features(x).float().numpy()
        else:
            probs = torch.softmax(model.network(x).float(), dim=1)[:, 1].numpy()
    if model.method == "abmil":
        inst, bag = network.scores_from_features(feats)
        return inst, bag
    if with_prior and model.has_stain_prior:  # the heatmap mixes network and stain-prior log-odds
        from pathviewer.ml.stain_prior import StainPrior, input_features

        record = model.data["stain_prior"]
        prior = StainPrior.from_dict(record).logits(
            input_features(x_uint8), np.zeros(len(x_uint8), np.int64)
        )
        p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
        net = np.log(p) - np.log1p(-p) - record["net_reference"]
        mixed = record["weight"] * prior + (1 - record["weight"]) * net
        probs = (1 / (1 + np.exp(-mixed))).astype(np.float32)
    return probs, pool_scores(probs, cfg.pooling, cfg.top_k, cfg.prob_threshold)


@pytest.mark.parametrize("method", METHODS)
def test_load_reads_every_kind(model_paths: dict[str, Path], method: str) -> None:
    model = ModelFile.load(model_paths[method])
    assert model.method == method and model.path == model_paths[method]
    assert isinstance(model.config, NGSDConfig) and model.config.input_size == 32
    assert (model.patch_size, model.read_downsample) == (128, 4.0)
    assert model.data["step"] == 2 and model.device == torch.device("cpu")
    assert not model.network.training
    kind = AttentionMIL if method == "abmil" else PatchClassifier
    assert isinstance(model.network, kind)
    assert isinstance(model.scorer(), SCORERS[method])


@pytest.mark.parametrize("method", METHODS)
def test_scorer_matches_the_per_method_code(model_paths: dict[str, Path], method: str) -> None:
    model = ModelFile.load(model_paths[method])
    images = _images(12, model.config.input_size, 1)
    scorer = model.scorer()
    live = [scorer.batch(images[:5]), scorer.batch(images[5:])]
    probs, score = scorer.finish()
    expected, expected_score = _reference(model, images)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert score == pytest.approx(expected_score, abs=1e-6) and probs.dtype == np.float32
    if isinstance(scorer, AttentionMILScorer):
        assert live == [None, None]  # attention is relative to the whole slide
    else:
        assert isinstance(scorer, PatchScorer)
        network_probs, _ = _reference(ModelFile.load(model_paths[method]), images, False)
        # Live probabilities are the network's; the final ones add the slide's stain prior.
        np.testing.assert_allclose(np.concatenate(live), network_probs, rtol=1e-5, atol=1e-6)
    rest, rest_score = scorer.finish()  # nothing left
    assert rest.shape == (0,) and rest_score == 0.0


@pytest.mark.parametrize("method", METHODS)
def test_finish_cuts_one_stream_into_slides(model_paths: dict[str, Path], method: str) -> None:
    """A batch may straddle two slides: finish(count) scores each as if it were alone."""
    model = ModelFile.load(model_paths[method])
    a, b = _images(7, 32, 2), _images(6, 32, 3)
    stream = torch.cat([a, b])
    scorer = model.scorer()
    for start in range(0, len(stream), 4):
        scorer.batch(stream[start : start + 4])
    first, second = scorer.finish(7), scorer.finish(6)
    for (probs, score), images in ((first, a), (second, b)):
        alone = model.scorer()
        alone.batch(images)
        expected, expected_score = alone.finish()
        np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
        assert score == pytest.approx(expected_score, abs=1e-6)
    with pytest.raises(ValueError):
        scorer.finish(1)


def test_pooling_override_applies_to_patch_classifiers_only(
    model_paths: dict[str, Path],
) -> None:
    images = _images(9, 32, 4)
    ngsd = ModelFile.load(model_paths["ngsd"]).scorer("max")
    ngsd.batch(images)
    probs, score = ngsd.finish()
    assert score == pytest.approx(float(probs.max()))
    abmil_model = ModelFile.load(model_paths["abmil"])
    plain, pooled = abmil_model.scorer(), abmil_model.scorer("max")
    for scorer in (plain, pooled):
        scorer.batch(images)
    assert plain.finish()[1] == pooled.finish()[1]


@pytest.mark.parametrize("method", ["ngsd", "abmil"])
def test_predict_writes_the_scores_of_the_per_method_code(
    model_paths: dict[str, Path], cohort: Path, tmp_path: Path, method: str
) -> None:
    """slides.csv / patches.csv of ``infer`` hold what the per-method code gives on its patches."""
    path = model_paths[method]
    run_job(jobs.predict_cohort(path, cohort, tmp_path / "pred", device="cpu", batch_size=8))
    with open(tmp_path / "pred" / "slides.csv", newline="") as handle:
        written = {r["slide"]: float(r["score"]) for r in csv.DictReader(handle)}
    with open(tmp_path / "pred" / "patches.csv", newline="") as handle:
        patches = [float(r["prob"]) for r in csv.DictReader(handle)]
    model = ModelFile.load(path)
    entries = select(read_cohort(cohort), "test")
    tiled = run_job(
        tile_cohort(entries, model.patch_size, model.read_downsample, model.config.threshold, None)
    )
    store = PatchStore(tiled, model_normalizer(model.data))
    try:
        every = []
        for number, tiled_slide in enumerate(tiled):
            images = torch.stack(
                [
                    to_input(store.get(i), model.config.input_size)
                    for i in range(int(store.offsets[number]), int(store.offsets[number + 1]))
                ]
            )
            probs, score = _reference(model, images)
            assert written[tiled_slide.entry.slide] == pytest.approx(score, abs=2e-6)
            every.append(probs)
    finally:
        store.close()
    np.testing.assert_allclose(patches, np.concatenate(every), atol=2e-6)


def test_run_scorer_payloads(model_paths: dict[str, Path], cohort: Path) -> None:
    """Events carry (start, probs) for patch classifiers and nothing for attention MIL."""
    for method in ("ngsd", "abmil"):
        model = ModelFile.load(model_paths[method])
        tiled = run_job(
            tile_cohort(
                select(read_cohort(cohort), "test")[:1],
                model.patch_size,
                model.read_downsample,
                model.config.threshold,
                None,
            )
        )
        store = PatchStore(tiled)
        try:
            scorer = model.scorer()
            events = list(run_scorer(scorer, store, batch_size=4))
        finally:
            store.close()
        assert [e.done for e in events][-1] == len(store)
        payloads = [e.payload for e in events]
        if method == "abmil":
            assert payloads == [None] * len(events)
        else:
            assert [p[0] for p in payloads] == list(range(0, len(store), 4))
        assert len(scorer.finish()[0]) == len(store)


def _one_line_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        ModelFile.load(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    assert str(path) in message
    return message


def _save_like_a_trainer(path: Path, method: str, config: NGSDConfig, student: dict) -> None:
    ckpt.save_model(
        path,
        {
            "method": method,
            "config": config.to_dict(),
            "arch": config.arch,
            "input_size": config.input_size,
            "patch_size": config.patch_size,
            "read_downsample": 1.0,
            "num_classes": 2,
            "step": 0,
            "student": student,
        },
    )


def test_wrong_architecture_is_one_short_line(tmp_path: Path) -> None:
    resnet18 = {k: v for k, v in build_classifier(2, "resnet18", None, 32).state_dict().items()}
    # Weights of a ResNet18 in a file that says ResNet50: hundreds of keys differ.
    wrong = tmp_path / "wrong_arch.pt"
    _save_like_a_trainer(wrong, "ngsd", NGSDConfig(arch="resnet50", input_size=32), resnet18)
    message = _one_line_error(wrong)
    assert "resnet50 ngsd" in message and "missing" in message and "shape" in message
    # A patch classifier's weights in a file that says attention MIL.
    as_abmil = tmp_path / "as_abmil.pt"
    _save_like_a_trainer(as_abmil, "abmil", NGSDConfig(input_size=32), resnet18)
    assert re.search(r"\d+ missing, e\.g\. 'backbone\.", _one_line_error(as_abmil))
    # Not a state dict at all, an unknown method, an unknown architecture.
    junk = tmp_path / "junk.pt"
    _save_like_a_trainer(junk, "ngsd", NGSDConfig(input_size=32), {"x": [1, 2]})
    assert "not a state dict" in _one_line_error(junk)
    other = tmp_path / "other.pt"
    _save_like_a_trainer(other, "noisy-refine", NGSDConfig(input_size=32), resnet18)
    assert "unknown model method" in _one_line_error(other)
    arch = tmp_path / "arch.pt"
    config = NGSDConfig(input_size=32)
    config.arch = "vgg"
    _save_like_a_trainer(arch, "ngsd", config, resnet18)
    assert "settings are unusable (setting arch='vgg' is not one of" in _one_line_error(arch)


def test_a_trainer_style_file_loads(tmp_path: Path) -> None:
    """A file saved the way the trainers save loads, on the device asked for."""
    network = build_classifier(2, "resnet18", None, 32)
    path = tmp_path / "model.pt"
    _save_like_a_trainer(path, "naive", NGSDConfig(input_size=32), network.state_dict())
    model = ModelFile.load(path, torch.device("cpu"))
    for key, value in network.state_dict().items():
        torch.testing.assert_close(model.network.state_dict()[key], value, msg=key)
    assert model.provenance is None and isinstance(model.scorer(), PatchScorer)


def test_no_method_name_test_outside_the_registry() -> None:
    """Only the registry (and the trainers and CLI that own method names) compare to "abmil"."""
    root = Path(__file__).resolve().parents[1] / "pathviewer"
    owners = {"ml/model_file.py", "ml/baselines.py", "ml/ngsd.py", "commands/ngsd.py"}
    pattern = re.compile(r"""[=!]=\s*["']abmil["']|["']abmil["']\s*[=!]=""")
    found = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if str(path.relative_to(root)) not in owners and pattern.search(path.read_text())
    ]
    assert found == []


_ODD_VALUES = st.sampled_from(
    ["abc", "", None, 0, -1, 1e400, float("nan"), [1, 2], {"a": 1}, True, 2**70, 0.5, b"x"]
)
_FIELDS = st.sampled_from(
    ["method", "config", "arch", "input_size", "patch_size", "read_downsample", "num_classes",
     "student", "config.patch_size", "config.threshold", "config.input_size", "config.arch",
     "config.pooling", "config.top_k", "config.read_downsample"]
)  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(_FIELDS, _ODD_VALUES), min_size=1, max_size=3))
def test_a_model_file_with_odd_fields_loads_or_is_one_line(
    tmp_path_factory: pytest.TempPathFactory, changes: list[tuple[str, object]]
) -> None:
    """A file that passes ``weights_only`` but holds wrong types: loaded, or one short line."""
    config = NGSDConfig(input_size=32)
    data = {
        "method": "naive",
        "config": config.to_dict(),
        "arch": config.arch,
        "input_size": config.input_size,
        "patch_size": config.patch_size,
        "read_downsample": 1.0,
        "num_classes": 2,
        "step": 0,
        "student": _tiny_student(),
    }
    for name, value in changes:
        target, key = (data["config"], name[7:]) if name.startswith("config.") else (data, name)
        if isinstance(target, dict):
            target[key] = value
    path = tmp_path_factory.mktemp("odd") / "model.pt"
    ckpt.save_model(path, data)
    try:
        model = ModelFile.load(path)
    except CheckpointError as error:
        message = str(error)
        assert "\n" not in message and len(message) < 400 and str(path) in message, message
        return
    assert model.patch_size > 0 and model.network is not None


_STUDENT: dict = {}


def _tiny_student() -> dict:
    if not _STUDENT:
        _STUDENT.update(build_classifier(2, "resnet18", None, 32).state_dict())
    return dict(_STUDENT)


class _RunsCode:
    """A pickle that would call a function when loaded (what a malicious model.pt holds)."""

    def __reduce__(self):  # noqa: D105
        import os

        return (os.getcwd, ())


def test_a_file_that_asks_to_run_code_is_refused_and_named(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": "pathviewer-model", "config": _RunsCode()}, path)
    message = _one_line_error(path)
    # The refused function is named; torch's advice to load it unsafely is not repeated.
    assert "getcwd" in message and "refused" in message
    assert "weights_only" not in message
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    assert "corrupt or not a PyTorch file" in _one_line_error(garbage)
