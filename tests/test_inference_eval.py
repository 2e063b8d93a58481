"""Inference, heatmaps and evaluation, end to end through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pathviewer.cli import main
from pathviewer.core.heatmap import load_heatmap
from pathviewer.ml.inference import pool_scores
from pathviewer.ml.metrics import evaluate_predictions
from tests.test_ngsd import ROWS, make_png_cohort


def test_pooling() -> None:
    probs = np.array([0.1, 0.2, 0.9, 0.8, 0.05])
    assert pool_scores(probs, "max") == pytest.approx(0.9)
    assert pool_scores(probs, "topk", top_k=2) == pytest.approx(0.85)
    assert pool_scores(probs, "topk", top_k=50) == pytest.approx(probs.mean())
    assert pool_scores(probs, "fraction", threshold=0.5) == pytest.approx(0.4)
    assert pool_scores(np.zeros(0), "max") == 0.0
    with pytest.raises(ValueError):
        pool_scores(probs, "median")


def _write_preds(folder: Path, patches: list[tuple], slides: list[tuple]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "patches.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "x", "y", "width", "height", "prob"])
        writer.writerows(patches)
    with open(folder / "slides.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "score", "pred"])
        writer.writerows(slides)


def test_evaluate_uses_quarter_overlap_rule(tmp_path: Path) -> None:
    cohort = make_png_cohort(tmp_path / "c", ROWS)  # p2's tumour is the square [64, 320)^2
    patches = [
        ("p2.png", 64, 64, 128, 128, 0.9),  # fully inside: positive
        ("p2.png", 256, 64, 128, 128, 0.8),  # 64/128 = 50 % inside: positive
        ("p2.png", 300, 64, 128, 128, 0.3),  # 20/128 < 25 %: negative
        ("p2.png", 448, 448, 128, 128, 0.2),  # outside: negative
        ("n2.png", 64, 64, 128, 128, 0.1),  # negative slide: negative
    ]
    slides = [("p2.png", 0.9, 1), ("n2.png", 0.4, 0)]
    _write_preds(tmp_path / "pred", patches, slides)
    result = evaluate_predictions(cohort, tmp_path / "pred", "test")
    assert result["instance_auc"] == pytest.approx(1.0)
    assert result["within_slide_auc"] == pytest.approx(1.0)  # only p2 has both classes
    assert result["n_positive_patches"] == 2 and result["n_patches"] == 5
    assert result["bag_auc"] == pytest.approx(1.0) and result["bag_accuracy"] == 1.0
    # Swapping two scores across the label boundary must lower the AUC.
    patches[1] = ("p2.png", 256, 64, 128, 128, 0.25)
    _write_preds(tmp_path / "pred2", patches, [("p2.png", 0.3, 0), ("n2.png", 0.4, 0)])
    worse = evaluate_predictions(cohort, tmp_path / "pred2", "test")
    assert worse["instance_auc"] < 1.0
    assert worse["within_slide_auc"] == pytest.approx(0.75)  # p2: one pair of four inverted
    # Within-slide AUC ignores an offset between slides that spoils the pooled AUC.
    shifted = [(s, x, y, w, h, p + 0.85 * (s == "n2.png")) for s, x, y, w, h, p in patches[:2]]
    shifted += [patches[3], ("n2.png", 64, 64, 128, 128, 0.95)]
    shifted[1] = ("p2.png", 256, 64, 128, 128, 0.8)
    _write_preds(tmp_path / "pred3", shifted, slides)
    offset = evaluate_predictions(cohort, tmp_path / "pred3", "test")
    assert offset["within_slide_auc"] == pytest.approx(1.0) and offset["instance_auc"] < 1.0
    assert worse["bag_auc"] == 0.0 and worse["bag_accuracy"] == 0.5


def test_evaluate_rejects_unknown_slide_and_bad_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort = make_png_cohort(tmp_path / "c", ROWS)
    _write_preds(tmp_path / "pred", [], [("ghost.png", 0.5, 1)])
    assert main(["evaluate", "--cohort", str(cohort), "--pred", str(tmp_path / "pred")]) == 2
    assert "ghost.png" in capsys.readouterr().err
    (tmp_path / "pred" / "slides.csv").write_text("slide,prob\nx,1\n")
    assert main(["evaluate", "--cohort", str(cohort), "--pred", str(tmp_path / "pred")]) == 2
    assert "missing column(s) score, pred" in capsys.readouterr().err


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


TINY = ["--demo", "--steps", "2", "--batch-size", "8", "--input-size", "32",
        "--patch-size", "512", "--read-level", "4", "--device", "cpu", "--quiet"]  # fmt: skip


def test_cli_train_infer_evaluate_compare(
    small_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = {}
    for method in ("ngsd", "naive", "abmil"):
        run = tmp_path / f"run_{method}"
        assert main(["train", method, "--cohort", str(small_cohort), "--out", str(run), *TINY]) == 0
        assert (run / "model.pt").is_file() and (run / "config.json").is_file()
        assert (run / "metrics.jsonl").read_text().strip()
        pred = tmp_path / f"pred_{method}"
        argv = ["infer", "--model", str(run / "model.pt"), "--cohort", str(small_cohort)]
        assert main([*argv, "--out", str(pred), "--quiet", "--device", "cpu"]) == 0
        preds[method] = pred
    capsys.readouterr()
    pred = preds["ngsd"]
    columns, patches = _rows(pred / "patches.csv")
    assert columns == ["slide", "x", "y", "width", "height", "prob"]
    slide_columns, slides = _rows(pred / "slides.csv")
    assert slide_columns == ["slide", "score", "pred"]
    cohort_rows = _rows(small_cohort)[1]
    test_slides = {r["slide"] for r in cohort_rows if r["split"] == "test"}
    assert {r["slide"] for r in slides} == test_slides
    assert all(r["pred"] in ("0", "1") for r in slides)
    # One heatmap per slide, agreeing with patches.csv.
    for row in patches[:20]:
        heatmap = load_heatmap(pred / "heatmaps" / f"{Path(row['slide']).stem}.npz")
        assert heatmap.slide == row["slide"] and heatmap.patch_size == (512, 512)
        x, y = int(row["x"]) + 10, int(row["y"]) + 10
        assert heatmap.value_at(x, y) == pytest.approx(float(row["prob"]), abs=1e-5)
    assert len(list((pred / "heatmaps").glob("*.npz"))) == len(test_slides)
    # Evaluation, alone and side by side.
    assert main(["evaluate", "--cohort", str(small_cohort), "--pred", str(pred)]) == 0
    result = json.loads((pred / "evaluation.json").read_text())
    for key in ("instance_auc", "bag_auc", "bag_accuracy"):
        assert result[key] is None or 0.0 <= result[key] <= 1.0
    assert result["n_patches"] == len(patches)
    out = tmp_path / "compare.json"
    argv = ["evaluate", "--cohort", str(small_cohort), "--pred", str(pred), "--json", str(out)]
    assert main([*argv, "--compare", str(preds["naive"]), str(preds["abmil"])]) == 0
    table = capsys.readouterr().out
    assert "ngsd" in table and "naive" in table and "abmil" in table
    methods = [m["method"] for m in json.loads(out.read_text())["methods"]]
    assert methods == ["ngsd", "naive", "abmil"]


def test_infer_with_foreign_model_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    cohort = make_png_cohort(tmp_path / "c", ROWS)
    model = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, model)
    argv = ["infer", "--model", str(model), "--cohort", str(cohort), "--out", str(tmp_path / "p")]
    assert main(argv) == 2
    assert "other.pt" in capsys.readouterr().err
    assert not (tmp_path / "p" / "patches.csv").exists()
