"""NGSD training: configuration, reproducible resume after a kill, checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pathviewer.cli import main
from pathviewer.core.errors import CheckpointError, CohortError, TrainingError
from pathviewer.core.progress import run_job
from pathviewer.ml.checkpoint import load_checkpoint, load_model_file
from pathviewer.ml.model_file import ModelFile
from pathviewer.ml.ngsd import NGSDConfig, demo_config, train


def _write_slide(path: Path, tumour: bool, seed: int, blank: bool = False) -> None:
    """A 768 px PNG 'slide': pink noisy tissue, a dark purple tumour square on positives."""
    rng = np.random.default_rng(seed)
    image = np.full((768, 768, 3), 243, np.uint8)
    if not blank:
        tissue = rng.normal((230, 150, 190), 25, (640, 640, 3))
        image[64:704, 64:704] = np.clip(tissue, 0, 255).astype(np.uint8)
        if tumour:
            dark = rng.normal((110, 50, 140), 25, (256, 256, 3))
            image[64:320, 64:320] = np.clip(dark, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    features = []
    if tumour:
        ring = [[64, 64], [320, 64], [320, 320], [64, 320], [64, 64]]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [ring]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            }
        )
    path.with_suffix(".geojson").write_text(
        json.dumps({"type": "FeatureCollection", "features": features})
    )


def make_png_cohort(folder: Path, rows: list[tuple[str, int, str]], blank: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["slide,label,split,annotations"]
    for number, (name, label, split) in enumerate(rows):
        _write_slide(folder / f"{name}.png", bool(label), number, blank=name == blank)
        lines.append(f"{name}.png,{label},{split},{name}.geojson")
    csv = folder / "cohort.csv"
    csv.write_text("\n".join(lines) + "\n")
    return csv


ROWS = [("p1", 1, "train"), ("n1", 0, "train"), ("p2", 1, "test"), ("n2", 0, "test")]


@pytest.fixture(scope="module")
def png_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_png_cohort(tmp_path_factory.mktemp("png_cohort"), ROWS)


def tiny_config(**overrides: object) -> NGSDConfig:
    base = dict(
        patch_size=128,
        read_downsample=4.0,
        input_size=32,
        batch_size=8,
        steps=6,
        log_every=1,
        checkpoint_every=2,
        workers=0,
        device="cpu",
        threads=1,
    )
    base.update(overrides)
    return demo_config(**base)


def test_config_fields_have_metadata_and_ranges() -> None:
    for f in dataclasses.fields(NGSDConfig):
        assert f.metadata.get("help"), f.name
    defaults = NGSDConfig()
    assert (defaults.patch_size, defaults.batch_size, defaults.threshold) == (512, 64, 15.0)
    demo_config().validate()
    with pytest.raises(TrainingError, match="k=1.5"):
        NGSDConfig(k=1.5).validate()
    with pytest.raises(TrainingError, match="pooling"):
        NGSDConfig(pooling="mean").validate()
    assert NGSDConfig.from_dict({**NGSDConfig().to_dict(), "unknown": 1}) == NGSDConfig()


@pytest.fixture(scope="module")
def straight_run(png_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """One uninterrupted tiny run, shared (training is the slow part of these tests)."""
    events: list = []
    out = tmp_path_factory.mktemp("straight") / "run"
    result = run_job(train(png_cohort, out, tiny_config()), events.append)
    return result, events


def test_train_writes_run_files_and_metrics(straight_run: tuple) -> None:
    result, events = straight_run
    tmp_path = result.out_dir.parent
    assert result.completed and result.steps == 6
    stages = {e.stage for e in events}
    assert {"tiling", "training"} <= stages
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [int(x["step"]) for x in lines] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "bank_positive_fraction", "epoch", "bank_instance_auc"):
        assert key in lines[-1]
    assert 0 <= lines[-1]["bank_positive_fraction"] <= 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["k"] == 0.1 and config["method"] == "ngsd"
    # model.pt holds only tensors and plain values: the safe loader reads it.
    raw = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert raw["method"] == "ngsd" and "student" in raw and raw["step"] == 6
    assert "teacher" in load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    model = ModelFile.load(tmp_path / "run" / "model.pt").network
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 2)


def test_cancel_leaves_valid_checkpoint(png_cohort: Path, tmp_path: Path) -> None:
    job = train(png_cohort, tmp_path / "run", tiny_config(checkpoint_every=100))
    for event in job:
        if event.stage == "training" and event.done == 3:
            break
    job.close()  # the GUI's cancel
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3
    assert load_model_file(tmp_path / "run" / "model.pt")["step"] == 3
    assert not list((tmp_path / "run").glob(".*.tmp"))


KILL_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from pathviewer.ml.ngsd import train, demo_config
    cfg = demo_config(patch_size=128, read_downsample=4.0, input_size=32, batch_size=8, steps=6,
                      log_every=1, checkpoint_every=2, workers=0, device="cpu", threads=1)
    for event in train(sys.argv[1], sys.argv[2], cfg):
        if event.stage == "training" and event.done == 3:
            os._exit(9)  # a hard kill: no finally blocks run
    """
)


def test_resume_after_kill_matches_uninterrupted_run(
    png_cohort: Path, straight_run: tuple, tmp_path: Path
) -> None:
    straight = straight_run[0]
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(png_cohort), str(killed)], env=env, timeout=120
    )
    assert proc.returncode == 9
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["step"] == 2
    assert main(["train", "ngsd", "--cohort", str(png_cohort), "--out", str(killed),
                 "--resume", "--quiet", "--device", "cpu"]) == 0  # fmt: skip
    steps = [json.loads(x)["step"] for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the killed step 3 is logged once
    a = load_model_file(straight.model_path)["student"]
    b = load_model_file(killed / "model.pt")["student"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_resume_without_checkpoint_is_an_error(png_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        run_job(train(png_cohort, tmp_path / "none", tiny_config(), resume=True))


def test_foreign_and_corrupt_model_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt"):
        ModelFile.load(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 not a zip")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        ModelFile.load(corrupt)
    with pytest.raises(CheckpointError, match="missing.pt"):
        ModelFile.load(tmp_path / "missing.pt")


def _cli_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    return err


def test_bad_cohorts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = make_png_cohort(tmp_path / "c", ROWS)
    out = tmp_path / "run"
    args = ["train", "ngsd", "--out", str(out), "--demo", "--steps", "1", "--quiet", "--cohort"]
    bad = tmp_path / "c" / "nolabel.csv"
    bad.write_text("slide,split\np1.png,train\n")
    assert "missing column(s) label" in _cli_error(capsys, [*args, str(bad)])
    bad.write_text("slide,label,split\np1.png,maybe,train\n")
    assert "row 2" in _cli_error(capsys, [*args, str(bad)])
    bad.write_text("slide,label,split\ngone.png,1,train\nn1.png,0,train\n")
    assert "gone.png" in _cli_error(capsys, [*args, str(bad)])
    bad.write_text("slide,label,split\np1.png,1,train\np2.png,1,train\n")
    assert "negative" in _cli_error(capsys, [*args, str(bad)])
    assert not out.exists() or not (out / "model.pt").exists()
    assert "Traceback" not in str(cohort)


def test_slide_without_tissue_is_named(tmp_path: Path) -> None:
    rows = [("p1", 1, "train"), ("blank", 0, "train")]
    cohort = make_png_cohort(tmp_path / "c", rows, blank="blank")
    with pytest.raises(TrainingError, match=r"blank.png \(cohort row 3\): no tissue"):
        run_job(train(cohort, tmp_path / "run", tiny_config()))
    assert not (tmp_path / "run" / "model.pt").exists()


def test_unlabelled_training_slide(tmp_path: Path) -> None:
    cohort = make_png_cohort(tmp_path / "c", ROWS)
    text = cohort.read_text().replace("p1.png,1,train", "p1.png,,train")
    cohort.write_text(text)
    with pytest.raises((TrainingError, CohortError), match="p1"):
        run_job(train(cohort, tmp_path / "run", tiny_config()))


def test_validation_instance_auc_is_logged(tmp_path: Path) -> None:
    rows = [*ROWS, ("p3", 1, "val"), ("n3", 0, "val")]
    cohort = make_png_cohort(tmp_path / "c", rows)
    cfg = tiny_config(steps=2, eval_every=2)
    events = []
    run_job(train(cohort, tmp_path / "run", cfg), events.append)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "val_instance_auc" not in lines[0]  # first evaluation after eval_every steps
    assert 0.0 <= lines[-1]["val_instance_auc"] <= 1.0
    assert "val_instance_auc" in events[-1].metrics


def test_mining_draws_likely_positives() -> None:
    from pathviewer.ml.data import BalancedBatchSampler

    positives, negatives = np.arange(100), np.arange(100, 200)
    weights = np.zeros(100)
    weights[:5] = 1.0  # the bank thinks patches 0-4 are tumour
    sampler = BalancedBatchSampler(
        positives, negatives, 32, 0.5, 0, 10, seed=1, mined=0.5, weights=lambda step: weights
    )
    batch = sampler.batch(3)
    pos = batch[:16]
    assert np.isin(pos[:8], np.arange(5)).all()  # the mined half
    assert np.isin(batch[16:], negatives).all()
    uniform = BalancedBatchSampler(positives, negatives, 32, 0.5, 0, 10, seed=1)
    np.testing.assert_array_equal(uniform.batch(3)[8:16], pos[8:])  # the uniform half as before


def test_resume_with_mining_matches_uninterrupted_run(png_cohort: Path, tmp_path: Path) -> None:
    """Mining reads bank snapshots; a resumed run must read the same ones as an unbroken run."""
    from pathviewer.ml.ngsd import MINING_BLOCK

    steps = 2 * MINING_BLOCK + 10
    cfg = tiny_config(steps=steps, mining=0.5, checkpoint_every=MINING_BLOCK + 5, log_every=50)
    straight = run_job(train(png_cohort, tmp_path / "a", cfg))
    job = train(png_cohort, tmp_path / "b", cfg)
    for event in job:
        if event.stage == "training" and event.done == MINING_BLOCK + 5:
            break
    job.close()
    resumed = run_job(train(png_cohort, tmp_path / "b", cfg, resume=True))
    a = load_model_file(straight.model_path)["student"]
    b = load_model_file(resumed.model_path)["student"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def test_plain_teacher_view_is_the_inference_view() -> None:
    """teacher_view plain: the bank is filled from the patch as inference sees it."""
    from pathviewer.ml.data import TwoViewDataset, to_input

    class Store:
        def get(self, i: int) -> np.ndarray:
            return np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8)

        def __len__(self) -> int:
            return 4

    plain = TwoViewDataset(Store(), 64, 0, 2, 0.25, plain_teacher=True)  # type: ignore[arg-type]
    augmented = TwoViewDataset(Store(), 64, 0, 2, 0.25)  # type: ignore[arg-type]
    teacher, student, _ = plain[(3, 0, 2)]
    assert torch.equal(teacher, to_input(Store().get(2), 64))
    # The student's view is augmented either way, and the same for the same key.
    assert torch.equal(student, augmented[(3, 0, 2)][1])
    assert not torch.equal(augmented[(3, 0, 2)][0], teacher)
