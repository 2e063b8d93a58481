"""The run registry (pathviewer.runs): run records as the CLI, the dock and the demo read them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pathviewer.cli import main
from pathviewer.runs import new_run_dir, read_run, scan_runs, write_run_info


def test_run_record_reads_method_labels_metrics_and_status(tmp_path: Path) -> None:
    run = new_run_dir("noisy", tmp_path)
    (run / "config.json").write_text(json.dumps({"method": "noisy", "labels": "/data/l.csv"}))
    # The last line was cut short by a kill: the record takes the last complete one.
    (run / "metrics.jsonl").write_text('{"round": 1, "val_accuracy": 0.8}\n{"round": 2, "val_ac')
    info = read_run(run)
    assert info is not None
    assert (info.method, info.labels, info.model_kind) == ("noisy", "/data/l.csv", "patch")
    assert info.metrics == {"round": 1.0, "val_accuracy": 0.8}
    assert info.status == "incomplete" and not info.can_score_slides

    slide_run = new_run_dir("ngsd", tmp_path)
    write_run_info(slide_run, method="ngsd", status="running", pid=os.getpid(), cohort="c.csv")
    (slide_run / "model.pt").write_bytes(b"x")
    live = read_run(slide_run)
    assert live is not None and live.status == "running" and live.model_kind == "slide"
    write_run_info(slide_run, pid=-1)  # the process that ran it is gone
    gone = read_run(slide_run)
    assert gone is not None and gone.status == "interrupted" and gone.cohort == "c.csv"
    assert gone.can_score_slides

    (tmp_path / "not-a-run").mkdir()
    assert read_run(tmp_path / "not-a-run") is None
    assert [r.path for r in scan_runs(tmp_path)] == sorted([run, slide_run], reverse=True)


def test_broken_record_files_do_not_hide_a_run(tmp_path: Path) -> None:
    run = new_run_dir("ngsd", tmp_path)
    (run / "run.json").write_text("{not json")
    (run / "config.json").write_text("[1, 2]")
    (run / "model.pt").write_bytes(b"x")
    info = read_run(run)
    assert info is not None and info.method == "?" and info.status == "completed"


# --------------------------------------------------------------------------- training over a run


def _old_run(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.pt").write_bytes(b"old checkpoint")
    (folder / "model.pt").write_bytes(b"old model")
    (folder / "metrics.jsonl").write_text('{"step": 5}\n')
    (folder / "config.json").write_text("{}")
    (folder / "notes.txt").write_text("the user's own file")
    return folder


def _fake_training(monkeypatch: pytest.MonkeyPatch) -> list[set[str]]:
    """Replace the training job by one that records what the run folder held when it started."""
    from pathviewer import jobs

    seen: list[set[str]] = []

    def train(cohort, run_dir, config, resume=False, dist=None):  # type: ignore[no-untyped-def]
        seen.append({p.name for p in Path(run_dir).iterdir()} if Path(run_dir).exists() else set())
        return SimpleNamespace(
            model_path=Path(run_dir) / "model.pt", steps=0, seconds=0.0, metrics={}
        )
        yield  # a generator, as the real job

    monkeypatch.setattr(jobs, "train_slide_model", train)
    return seen


@pytest.mark.parametrize("method", ["ngsd", "naive", "abmil"])
def test_train_refuses_a_folder_that_holds_a_run(
    tmp_path: Path,
    method: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Issue 15 item 4: re-running train into a run folder used to overwrite model.pt silently.
    seen = _fake_training(monkeypatch)
    out = _old_run(tmp_path / "run")
    argv = ["train", method, "--cohort", str(tmp_path / "c.csv"), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"pathviewer: error: {out}: already holds a run (")
    assert "--overwrite" in err
    assert (out / "model.pt").read_bytes() == b"old model" and seen == []
    for marker in ("model.pt", "checkpoints", "metrics.jsonl"):  # each one alone is a run
        only = tmp_path / f"only-{marker}"
        (only / "checkpoints").mkdir(parents=True)
        if marker != "checkpoints":
            (only / "checkpoints").rmdir()
            (only / marker).write_text("")
        assert main([*argv[:4], "--out", str(only), "--quiet"]) == 2
        assert f"already holds a run ({marker})" in capsys.readouterr().err
    assert seen == []


def test_train_overwrite_removes_the_old_run_files_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _fake_training(monkeypatch)
    out = _old_run(tmp_path / "run")
    argv = ["train", "ngsd", "--cohort", str(tmp_path / "c.csv"), "--out", str(out), "--quiet"]
    assert main([*argv, "--overwrite"]) == 0
    assert seen == [{"notes.txt"}]  # the engine's files are gone, the user's own file is kept
    assert main([*argv, "--overwrite", "--resume"]) == 2
    assert "--resume and --overwrite" in capsys.readouterr().err


def test_train_resume_and_fresh_folders_are_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _fake_training(monkeypatch)
    out = _old_run(tmp_path / "run")
    assert (
        main(["train", "ngsd", "--cohort", "c.csv", "--out", str(out), "--resume", "--quiet"]) == 0
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "cohort.csv").write_text("")
    for folder in (empty, tmp_path / "new"):
        assert main(["train", "ngsd", "--cohort", "c.csv", "--out", str(folder), "--quiet"]) == 0
    assert len(seen) == 3 and "model.pt" in seen[0]
