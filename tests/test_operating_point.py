"""The operating point: chosen on labelled slides, written with the run, used by inference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathviewer.core.operating_point import (
    OperatingPoint,
    OperatingPointError,
    choose_operating_point,
    read_operating_point,
    write_operating_point,
)


def test_youden_threshold_between_scores_and_lowest_on_ties() -> None:
    # A compressed model: every score between 0.46 and 0.52, positives a little higher.
    labels = [0, 0, 0, 1, 0, 1, 1]
    scores = [0.46, 0.47, 0.48, 0.49, 0.50, 0.51, 0.52]
    point = choose_operating_point(labels, scores, "val")
    # Cutting at 0.485 calls 3/3 positives and leaves 3/4 negatives: J = 0.75 (the best);
    # cutting at 0.505 gives 2/3 and 4/4, J = 0.67.
    assert point.threshold == pytest.approx(0.485)
    assert (point.sensitivity, point.specificity) == (1.0, 0.75)
    assert (point.split, point.positives, point.negatives) == ("val", 3, 4)
    # A perfect separation anywhere in a gap: the lowest such threshold.
    assert choose_operating_point([0, 1], [0.2, 0.8], "train").threshold == pytest.approx(0.5)
    assert choose_operating_point([0, 0, 1, 1], [0.1, 0.2, 0.7, 0.9], "t").threshold == (
        pytest.approx(0.45)
    )
    with pytest.raises(OperatingPointError, match="positive and negative"):
        choose_operating_point([1, 1], [0.3, 0.4], "val")


def test_round_trip_and_bad_files(tmp_path: Path) -> None:
    point = OperatingPoint(0.41, 0.9, 0.8, "train", 6, 6)
    write_operating_point(point, tmp_path)
    assert read_operating_point(tmp_path / "model.pt") == point
    assert "0.410" in point.describe() and "train split" in point.describe()
    assert read_operating_point(tmp_path / "other" / "model.pt") is None
    (tmp_path / "operating_point.json").write_text(json.dumps({"threshold": 2}))
    with pytest.raises(OperatingPointError, match="not an operating point"):
        read_operating_point(tmp_path / "model.pt")
    (tmp_path / "operating_point.json").write_text("{")
    with pytest.raises(OperatingPointError, match="unreadable"):
        read_operating_point(tmp_path / "model.pt")


def test_training_writes_it_and_inference_calls_slides_at_it(
    small_cohort: Path, tmp_path: Path
) -> None:
    import csv

    from pathviewer.cli import main

    tiny = ["--demo", "--steps", "2", "--batch-size", "8", "--input-size", "32"]
    tiny += ["--patch-size", "512", "--read-level", "4", "--device", "cpu", "--quiet"]
    run = tmp_path / "run"
    assert main(["train", "naive", "--cohort", str(small_cohort), "--out", str(run), *tiny]) == 0
    point = read_operating_point(run / "model.pt")
    assert point is not None and point.split == "train"  # the synthetic cohort has no val split
    assert (run / "calibration" / "slides.csv").is_file()
    pred = tmp_path / "pred"
    argv = ["infer", "--model", str(run / "model.pt"), "--cohort", str(small_cohort)]
    assert main([*argv, "--out", str(pred), "--quiet", "--device", "cpu"]) == 0
    info = json.loads((pred / "prediction.json").read_text())
    assert OperatingPoint.from_dict(info["operating_point"]) == point
    with open(pred / "slides.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(int(r["pred"]) == int(float(r["score"]) >= point.threshold) for r in rows)


def test_a_val_split_is_where_the_operating_point_is_chosen(
    small_cohort: Path, tmp_path: Path
) -> None:
    import csv

    from pathviewer.core.progress import run_job
    from pathviewer.jobs import calibrate_model, train_slide_model
    from pathviewer.ml.config import demo_config

    with open(small_cohort, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:  # the test slides become the validation split
        if row["split"] == "test":
            row["split"] = "val"
        for key in ("slide", "annotations"):
            if row.get(key):
                row[key] = str((small_cohort.parent / row[key]).resolve())
    cohort = tmp_path / "cohort.csv"
    with open(cohort, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    cfg = demo_config(steps=2, batch_size=8, input_size=32, patch_size=512, device="cpu")
    cfg.read_level = 4
    cfg.method = "naive"
    result = run_job(train_slide_model(cohort, tmp_path / "run", cfg, calibrate=False))
    point = run_job(calibrate_model(result.model_path, cohort))
    assert point is not None and point.split == "val"
    assert point.positives + point.negatives == sum(r["split"] == "val" for r in rows)
