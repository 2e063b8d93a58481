"""The flags-import job (Qt-free): the Review dock and ``labels import-flags`` both run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathviewer.cli import main as cli
from pathviewer.core.errors import PathViewerError
from pathviewer.core.store import Project
from pathviewer.jobs import import_run_flags

FLAG_HEADER = "slide,x,y,width,height,given,suggested,confidence,g\n"


def _run(tmp_path: Path, labels_rows: str) -> Path:
    """A refinement run folder: its config names the training labels beside the flags."""
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "a.svs").write_bytes(b"")
    (run / "labels.csv").write_text("slide,x,y,width,height,label\n" + labels_rows)
    (run / "config.json").write_text(json.dumps({"labels": "labels.csv"}))
    (run / "flags.csv").write_text(FLAG_HEADER + "../a.svs,0,0,256,256,Normal,Tumor,0.9,0.8\n")
    return run


def test_the_runs_labels_come_along_once_and_slides_are_not_stored_twice(tmp_path: Path) -> None:
    run = _run(tmp_path, "../a.svs,0,0,256,256,Normal\n../a.svs,256,0,256,256,Tumor\n")
    with Project.create(tmp_path / "project") as project:
        project.add_slide(str(tmp_path / "a.svs"))
        assert import_run_flags(project, run / "flags.csv") == 1
        assert import_run_flags(project, run / "flags.csv") == 1  # replaces the queue
        assert len(project.review_queue()) == 1
        assert len(project.slides()) == 1
        labels = sorted((r.x, r.label, r.source) for r in project.patch_labels())
        assert labels == [(0, "Normal", "imported"), (256, "Tumor", "imported")]


def test_a_bad_labels_row_leaves_the_project_as_it_was(tmp_path: Path) -> None:
    run = _run(tmp_path, "../a.svs,0,0,256,256,Normal\n../a.svs,zero,0,256,256,Tumor\n")
    with Project.create(tmp_path / "project") as project:
        with pytest.raises(PathViewerError, match=r"labels\.csv row 3"):
            import_run_flags(project, run / "flags.csv")
        assert project.patch_labels() == []
        assert project.review_queue() == []
        assert import_run_flags(project, run / "flags.csv", with_labels=False) == 1
        assert len(project.patch_labels()) == 1  # only the flagged box, made by the flag


def test_the_command_line_runs_the_same_job(tmp_path: Path, capsys) -> None:
    run = _run(tmp_path, "../a.svs,0,0,256,256,Normal\n")
    Project.create(tmp_path / "project").close()
    args = [
        "labels",
        "import-flags",
        str(run / "flags.csv"),
        "--project",
        str(tmp_path / "project"),
    ]
    assert cli(args) == 0
    assert cli([*args, "--keep-queue"]) == 0
    assert "1 flags" in capsys.readouterr().out
    with Project.open(tmp_path / "project") as project:
        assert len(project.review_queue()) == 2
    (run / "flags.csv").write_text(FLAG_HEADER + "../a.svs,0,0,x,256,Normal,Tumor,0.9,0.8\n")
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert str(run / "flags.csv") in err and "row 2" in err and "Traceback" not in err
