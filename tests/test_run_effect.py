"""What reviewed labels changed between two label-refinement runs (labels effect)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathviewer.core.errors import PathViewerError
from pathviewer.core.run_effect import compare_refinement_runs
from pathviewer.core.store import Project


def _run(folder: Path, flagged: list[int], refined: dict[int, str]) -> Path:
    folder.mkdir()
    header = "slide,x,y,width,height,given,suggested,confidence,g\n"
    flags = [f"/s/a.svs,{x},0,10,10,Normal,Tumor,0.9,0.8" for x in flagged]
    (folder / "flags.csv").write_text(header + "\n".join(flags) + "\n")
    rows = [f"/s/a.svs,{x},0,10,10,{label}" for x, label in refined.items()]
    (folder / "refined_labels.csv").write_text("slide,x,y,width,height,label\n" + "\n".join(rows))
    return folder


def test_flags_that_disappeared_and_accuracy_on_the_trusted_labels(tmp_path: Path, capsys) -> None:
    from pathviewer.cli import main

    before = _run(
        tmp_path / "r1", [0, 10, 20], {0: "Normal", 10: "Normal", 20: "Normal", 30: "Tumor"}
    )
    after = _run(tmp_path / "r2", [20, 40], {0: "Tumor", 10: "Tumor", 20: "Normal", 30: "Tumor"})
    trusted = {("/s/a.svs", 0, 0, 10, 10): "Tumor", ("/s/a.svs", 10, 0, 10, 10): "Tumor"}
    report = compare_refinement_runs(before, after, trusted)
    assert report["flags"] == {"before": 3, "after": 2, "disappeared": 2, "new": 1, "kept": 1}
    assert report["refined_changed"] == 2
    assert report["trusted_patches"] == 2
    assert report["trusted_accuracy"] == {"before": 0.0, "after": 1.0}
    # The command reads the trusted labels from a project.
    project = Project.create(tmp_path / "p")
    project.add_patch_labels(
        [("/s/a.svs", 0, 0, 10, 10, "Tumor"), ("/s/a.svs", 10, 0, 10, 10, "Tumor")],
        source="annotator",
    )
    project.close()
    capsys.readouterr()
    argv = ["labels", "effect", str(before), str(after), "--project", str(tmp_path / "p")]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["trusted_accuracy"]["after"] == 1.0
    (before / "flags.csv").write_text(
        "slide,x,y,width,height,given,suggested\n/s/a.svs,x,0,1,1,A,B\n"
    )
    with pytest.raises(
        PathViewerError, match="row 2: x, y, width and height must be whole numbers"
    ):
        compare_refinement_runs(before, after)
    assert main(["labels", "effect", str(before), str(tmp_path / "none")]) == 2


def test_the_training_dock_reports_the_effect_of_corrections(tmp_path, monkeypatch, qtbot) -> None:
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from pathviewer.gui.app import create_main_window
    from pathviewer.paths import runs_dir
    from pathviewer.runs import write_run_info

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    runs_dir().mkdir(parents=True)
    before = _run(
        runs_dir() / "20261201-100000-refine-project", [0, 10], {0: "Normal", 10: "Normal"}
    )
    after = _run(runs_dir() / "20261202-100000-refine-project", [10], {0: "Tumor", 10: "Normal"})
    for run, started in ((before, "2026-12-01 10:00:00"), (after, "2026-12-02 10:00:00")):
        write_run_info(run, method="refine-project", status="completed", started=started)
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(window)
    project = window.context.project.open(tmp_path / "p", create=True)
    project.add_patch_labels([("/s/a.svs", 0, 0, 10, 10, "Tumor")], source="annotator")
    text = window.context.training.correction_effect(after)
    assert text.startswith("against 20261201-100000-refine-project: 1 flags gone, 0 new, 1 kept")
    assert "agreement with the 1 trusted labels 0% -> 100%" in text
    window.close()
