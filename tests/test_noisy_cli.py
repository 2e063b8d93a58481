"""``pathviewer labels from-annotations`` and ``pathviewer train noisy`` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from pathviewer.cli import main


@pytest.fixture(scope="module")
def cohort_labels(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "labels.csv"
    assert (
        main(["labels", "from-annotations", "--cohort", str(small_cohort), "--out", str(out), "-q"])
        == 0
    )
    return out


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_from_annotations_labels_tissue_patches(cohort_labels: Path) -> None:
    rows = _read(cohort_labels)
    assert list(rows[0]) == ["slide", "x", "y", "width", "height", "label"]
    labels = {r["label"] for r in rows}
    assert "Normal" in labels and len(labels) >= 2  # background + at least one annotated class
    assert all(r["width"] == "256" for r in rows)
    assert all((cohort_labels.parent / r["slide"]).resolve().is_file() for r in rows)


def _tiny_table(cohort_labels: Path, tmp_path: Path) -> Path:
    rows = _read(cohort_labels)
    by_class: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_class.setdefault(r["label"], []).append(r)
    chosen = [r for group in by_class.values() for r in group[:20]]
    out = tmp_path / "tiny.csv"
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "trusted"])
        writer.writeheader()
        for i, r in enumerate(chosen):
            slide = str((cohort_labels.parent / r["slide"]).resolve())  # absolute paths work too
            writer.writerow({**r, "slide": slide, "trusted": int(i == 0)})
    return out


def test_train_noisy_writes_every_output(cohort_labels: Path, tmp_path: Path, capsys) -> None:
    table = _tiny_table(cohort_labels, tmp_path)
    run = tmp_path / "run"
    args = ["train", "noisy", "--labels", str(table), "--out", str(run), "--model", "small"]
    args += ["--input-size", "32", "--epochs", "3", "--warmup", "1", "--device", "cpu", "-q"]
    assert main(args) == 0
    for name in ("model.pt", "config.json", "metrics.jsonl", "refined_labels.csv", "flags.csv"):
        assert (run / name).is_file(), name
    state = torch.load(run / "model.pt", weights_only=True)
    assert state["classes"] == sorted({r["label"] for r in _read(table)})
    assert "state_dict" in state and state["round"] == 2
    config = json.loads((run / "config.json").read_text())
    assert config["max_rounds"] == 3 and config["warmup"] == 1
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2, 3]
    with open(run / "flags.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header == ["slide", "x", "y", "width", "height", "given", "suggested", "confidence", "g"]
    refined = _read(run / "refined_labels.csv")
    assert len(refined) == len(_read(table))
    assert refined[0]["trusted"] == "1" and refined[0]["label"] == refined[0]["given"]
    assert (run / refined[0]["slide"]).resolve().is_file()
    assert "labels flagged" in capsys.readouterr().out


def test_train_noisy_regional_order_ranks_from_the_patch_positions(
    cohort_labels: Path, tmp_path: Path
) -> None:
    table = _tiny_table(cohort_labels, tmp_path)
    run = tmp_path / "run"
    args = ["train", "noisy", "--labels", str(table), "--out", str(run), "--model", "stain"]
    args += ["--epochs", "3", "--warmup", "1", "--batch-size", "16", "--lr", "0.01"]
    args += ["--rank-by", "regional", "--device", "cpu", "-q"]
    assert main(args) == 0
    assert json.loads((run / "config.json").read_text())["rank_by"] == "regional"
    flags = _read(run / "flags.csv")
    labels = {(r["slide"], r["x"], r["y"]): r["label"] for r in _read(table)}
    for flag in flags:  # every flag is a patch of the table, its given label unchanged
        key = (str((run / flag["slide"]).resolve()), flag["x"], flag["y"])
        assert labels[key] == flag["given"] != flag["suggested"]


def test_train_noisy_bad_input_exits_2(cohort_labels: Path, tmp_path: Path, capsys) -> None:
    table = _tiny_table(cohort_labels, tmp_path)
    run = tmp_path / "run"
    code = main(
        ["train", "noisy", "--labels", str(table), "--out", str(run), "--classes", "Normal"]
    )
    assert code == 2
    assert "row" in capsys.readouterr().err and not (run / "model.pt").exists()
    empty = tmp_path / "empty.csv"
    empty.write_text("slide,x,y,width,height,label\n")
    assert main(["train", "noisy", "--labels", str(empty), "--out", str(run)]) == 2
    assert "empty label file" in capsys.readouterr().err


def test_train_noisy_stain_model_learns_from_slide_referenced_statistics(
    cohort_labels: Path, tmp_path: Path
) -> None:
    table = _tiny_table(cohort_labels, tmp_path)
    run = tmp_path / "run"
    args = ["train", "noisy", "--labels", str(table), "--out", str(run), "--model", "stain"]
    # 60 labels: small batches and a brisk learning rate give the MLP enough steps.
    args += ["--epochs", "6", "--warmup", "2", "--batch-size", "16", "--lr", "0.01"]
    args += ["--device", "cpu", "-q"]
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"] == "stain"
    state = torch.load(run / "model.pt", weights_only=True)
    # The saved network is the feature MLP (17 stain statistics in), not a pixel CNN.
    first = next(v for k, v in state["state_dict"].items() if k.endswith("weight"))
    assert first.shape[1] == 17
    assert len(_read(run / "refined_labels.csv")) == len(_read(table))
    # Resuming rebuilds the same network from the recorded model.
    assert main([*args, "--resume", "--epochs", "8"]) == 0
