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
