"""The runs the app knows about and which one is selected (Qt-free).

The Training dock's list renders a :class:`RunList` and sends the user's choice to it; "Analyse
this slide", the demo and any other feature read the selected run here, not from a widget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pathviewer.runs import RunInfo, scan_runs

#: Called after the runs or the selection changed.
Listener = Callable[[], None]


class RunList:
    """Run records (newest first) and the selected run.

    Parameters
    ----------
    root
        Folder of the runs (default :func:`pathviewer.paths.runs_dir`, read at each refresh).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._runs: list[RunInfo] = []
        self._selected: Path | None = None
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener()`` after every change."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    @property
    def runs(self) -> list[RunInfo]:
        """The runs of the last refresh, newest first."""
        return list(self._runs)

    @property
    def selected(self) -> RunInfo | None:
        """The selected run (None: none selected, or it is gone)."""
        return next((r for r in self._runs if r.path == self._selected), None)

    def refresh(self, select: Path | None = None) -> None:
        """Re-scan the runs folder; select ``select``, else keep the selection.

        When neither is there, the newest run that can score slides is selected, so that
        "Analyse this slide" works straight after training.
        """
        self._runs = scan_runs(self.root)
        wanted = select if select is not None else self._selected
        paths = [r.path for r in self._runs]
        if wanted in paths:
            self._selected = wanted
        else:
            self._selected = next((r.path for r in self._runs if r.can_score_slides), None)
        self._notify()

    def select(self, path: Path | None) -> None:
        """Select the run in folder ``path`` (a folder not in the list selects nothing)."""
        path = path if path in [r.path for r in self._runs] else None
        if path != self._selected:
            self._selected = path
            self._notify()


def run_summary(run: RunInfo) -> str:
    """The run's last figure, short enough for a list column ("val AUC 0.83 · step 400")."""
    metrics = run.metrics
    parts = []
    for key, text in (
        ("val_instance_auc", "val AUC"),
        ("val_balanced_accuracy", "val bal. acc."),
        ("loss", "loss"),
    ):
        value = metrics.get(key)
        if value is not None:
            parts.append(f"{text} {value:.3g}" if key == "loss" else f"{text} {value:.2f}")
            break
    for key in ("step", "round"):
        if key in metrics:
            parts.append(f"{key} {int(metrics[key])}")
            break
    return " · ".join(parts)
