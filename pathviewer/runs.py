"""The run registry: run folders, their ``run.json`` record, and listing them (Qt-free).

A run folder holds what an engine writes (``model.pt``, ``config.json``, ``metrics.jsonl``,
``checkpoints/``) plus ``run.json``: method, cohort, status (running / completed / cancelled /
failed / degenerate / collapsed), start and end time, and ``pid`` while running.  The CLI, the
Training dock and the demo read and write runs only through this module.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import TrainingError

#: Methods whose model.pt scores slides (NGSD, the naive baseline, attention MIL).
SLIDE_METHODS = ("ngsd", "naive", "abmil")
#: The run record of a run folder.
RUN_FILE = "run.json"
#: What a training engine writes into a run folder; any of the first three means the folder
#: already holds a run (config.json alone is written before the first step, and tells nothing).
RUN_MARKERS = ("model.pt", "checkpoints", "metrics.jsonl")
RUN_OUTPUTS = (*RUN_MARKERS, "config.json", "guard.json", RUN_FILE)


@dataclass
class RunInfo:
    """The record of one run folder.

    Attributes
    ----------
    path
        The run folder.
    method
        ngsd, naive, abmil, or a refinement method (noisy, refine-csv, refine-project); "?"
        when the folder does not say.
    status
        running, completed, cancelled, failed, degenerate, collapsed, interrupted (its process
        is gone) or incomplete (no record and no model).
    started
        When it started, as the record says (else the folder's time).
    cohort
        The cohort CSV it trained on (slide models).
    demo
        Whether the demo made it.
    labels
        The labels CSV it trained on (refinement runs).
    metrics
        The last metrics line of ``metrics.jsonl`` (empty when there is none).
    """

    path: Path
    method: str
    status: str
    started: str
    cohort: str = ""
    demo: bool = False
    labels: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def model_kind(self) -> str:
        """``slide`` (scores whole slides: heatmaps) or ``patch`` (a refinement classifier)."""
        return "slide" if self.method in SLIDE_METHODS else "patch"

    @property
    def model_path(self) -> Path:
        """The run's ``model.pt``."""
        return self.path / "model.pt"

    @property
    def can_score_slides(self) -> bool:
        """Whether the model scores whole slides (NGSD, naive, ABMIL; not refinement)."""
        return self.method in SLIDE_METHODS and self.model_path.is_file()


def new_run_dir(method: str, root: Path | None = None) -> Path:
    """A fresh, timestamped run folder under ``root`` (default :func:`runs_dir`)."""
    from pathviewer.paths import runs_dir

    root = root or runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{method}"
    number = 1
    while path.exists():
        number += 1
        path = root / f"{stamp}-{method}-{number}"
    path.mkdir(parents=True)
    return path


def prepare_run_dir(run_dir: str | os.PathLike[str], resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run, unless resuming it or replacing it.

    Training into such a folder used to overwrite its model and mix two runs' metrics.  With
    ``overwrite`` the engine's files (:data:`RUN_OUTPUTS`) are removed first; anything else in
    the folder (the user's own files) is kept.

    Parameters
    ----------
    run_dir
        The run folder (it need not exist).
    resume
        The run will continue the folder's run: nothing is checked.
    overwrite
        Remove the old run's files instead of refusing.

    Raises
    ------
    TrainingError
        The folder holds a run and neither ``resume`` nor ``overwrite`` is set, or both are.
    """
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite exclude each other")
    folder = Path(run_dir)
    if resume:
        return
    found = [name for name in RUN_MARKERS if os.path.lexists(folder / name)]
    if not found:
        return
    if not overwrite:
        raise TrainingError(
            f"{folder}: already holds a run ({', '.join(found)}); pass --resume to continue it "
            "or --overwrite to replace it"
        )
    for name in RUN_OUTPUTS:
        path = folder / name
        # FileNotFoundError: under torchrun every rank clears the folder before they meet.
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def write_run_info(run_dir: Path, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into ``run_dir/run.json`` (written atomically); return the result."""
    path = run_dir / RUN_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
    data.update(updates)
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2)
    return data


def read_run(path: Path) -> RunInfo | None:
    """The run in folder ``path`` (None when it is not a run folder)."""
    config = path / "config.json"
    model = path / "model.pt"
    info_path = path / RUN_FILE
    if not (config.is_file() or model.is_file() or info_path.is_file()):
        return None
    info = _read_json(info_path)
    method = str(info.get("method", ""))
    saved = _read_json(config)
    if not method:
        method = str(saved.get("method", ""))
    status = str(info.get("status", "completed" if model.is_file() else "incomplete"))
    if status == "running" and not info.get("pid") == os.getpid():
        status = "interrupted"  # a run of a process that is gone
    started = str(
        info.get("started") or time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
    )
    return RunInfo(
        path,
        method or "?",
        status,
        started,
        str(info.get("cohort", "")),
        bool(info.get("demo")),
        str(saved.get("labels", "")),
        _last_metrics(path / "metrics.jsonl"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object file's contents; empty when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _last_metrics(path: Path) -> dict[str, float]:
    """The numbers of the last complete line of a metrics.jsonl (empty when none)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            data = json.loads(line)
        except ValueError:
            continue  # a line cut short by a kill
        if isinstance(data, dict):
            return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}
    return {}


def scan_runs(root: Path | None = None) -> list[RunInfo]:
    """Run folders under ``root`` (default :func:`runs_dir`), newest first."""
    from pathviewer.paths import runs_dir

    root = root or runs_dir()
    if not root.is_dir():
        return []
    runs = [read_run(p) for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    found = [r for r in runs if r is not None]
    return sorted(found, key=lambda r: r.path.name, reverse=True)
