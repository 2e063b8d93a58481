"""The run registry (pathviewer.runs): run records as the CLI, the dock and the demo read them."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
