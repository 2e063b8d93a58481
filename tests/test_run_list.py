"""The run list model: the selected run lives outside the Training dock's widgets."""

from __future__ import annotations

from pathlib import Path

from pathviewer.runs import write_run_info
from pathviewer.session.run_list import RunList


def _run(root: Path, name: str, method: str, model: bool) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    write_run_info(folder, method=method, status="completed")
    if model:
        (folder / "model.pt").write_bytes(b"weights")
    return folder


def test_selection_survives_a_refresh_and_defaults_to_a_scoring_run(tmp_path: Path) -> None:
    scoring = _run(tmp_path, "20261201-100000-ngsd", "ngsd", model=True)
    refine = _run(tmp_path, "20261202-100000-noisy", "noisy", model=True)
    heard: list[int] = []
    runs = RunList(tmp_path)
    runs.subscribe(lambda: heard.append(1))
    runs.refresh()
    assert [r.path for r in runs.runs][:2] == [refine, scoring]  # newest first
    assert runs.selected is not None and runs.selected.path == scoring  # it can score slides
    runs.select(refine)
    runs.refresh()
    assert runs.selected is not None and runs.selected.path == refine
    runs.select(tmp_path / "gone")
    assert runs.selected is None
    count = len(heard)
    runs.select(None)  # unchanged: nobody is told
    assert len(heard) == count


def test_the_runs_list_says_each_runs_last_figure(tmp_path: Path) -> None:
    from pathviewer.runs import RunInfo
    from pathviewer.session.run_list import run_summary

    def info(metrics: dict[str, float]) -> RunInfo:
        return RunInfo(tmp_path, "ngsd", "completed", "", metrics=metrics)

    assert run_summary(info({"step": 400, "loss": 0.4, "val_instance_auc": 0.834})) == (
        "val AUC 0.83 · step 400"
    )
    assert run_summary(info({"round": 12, "val_balanced_accuracy": 0.9, "loss": 1})) == (
        "val bal. acc. 0.90 · round 12"
    )
    assert run_summary(info({"step": 5, "loss": 0.4213})) == "loss 0.421 · step 5"
    assert run_summary(info({})) == ""
