"""Progress reporting and cancellation for long jobs.

Every long job in ``core`` and ``ml`` is a generator that yields :class:`Progress` events and
*returns* its result (``StopIteration.value``).  This gives the callers three things for free:

* **pause**: the consumer simply stops pulling; the generator is suspended at its ``yield``;
* **cancel**: the consumer calls ``generator.close()``; the job's ``finally`` blocks run and must
  leave every file it writes valid (write to a temporary file, then ``os.replace``);
* **progress**: each event says which stage, how far, and carries metrics for live curves.

The CLI drives generators with :func:`drive` (terminal progress bars); the GUI drives them from a
QThread worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Progress:
    """One progress event of a long job.

    Parameters
    ----------
    stage
        Short name of the current stage (``"tiling"``, ``"training"``, ...).  A new stage name
        starts a new progress bar.
    done, total
        Units done so far and total units of the stage (``total`` None when unknown).
    message
        Free text for a log view.
    metrics
        Numbers for live curves (``{"loss": 0.3, "step": 12}``).
    payload
        Optional object for the GUI (e.g. a partial heatmap); never required by the CLI.
    """

    stage: str
    done: int = 0
    total: int | None = None
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    payload: Any = None

    @property
    def fraction(self) -> float | None:
        """Fraction done in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


Job = Generator[Progress, None, T]


def run_job(
    job: Generator[Progress, None, T], on_progress: Callable[[Progress], object] | None = None
) -> T:
    """Run a job generator to completion and return its result.

    Parameters
    ----------
    job
        The generator.
    on_progress
        Called with every event (optional).
    """
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)


def warning_of(event: Progress) -> str | None:
    """The warning an event carries (stage ``warning`` or a ``warning:`` message), else None."""
    if event.stage == "warning":
        return event.message
    if event.message.startswith("warning:"):
        return event.message.removeprefix("warning:").strip()
    return None


def drive(job: Generator[Progress, None, T], quiet: bool = False) -> T:
    """Run a job with terminal progress bars (tqdm on stderr), one bar per stage.

    Warnings (:func:`warning_of`) are printed to stderr once each, also when ``quiet``.

    Parameters
    ----------
    job
        The generator.
    quiet
        No bars (for tests and pipes).
    """
    said: set[str] = set()

    def warn(event: Progress) -> bool:
        text = warning_of(event)
        if text is None:
            return False
        if text not in said:
            said.add(text)
            print(f"pathviewer: warning: {text}", file=sys.stderr)
        return event.stage == "warning"

    if quiet:
        return run_job(job, warn)
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    current: list[Any] = [None]

    def show(event: Progress) -> None:
        if warn(event):
            return
        bar = bars.get(event.stage)
        if bar is None:
            if current[0] is not None:
                current[0].close()
            bar = tqdm(
                total=event.total, desc=event.stage, file=sys.stderr, leave=True, dynamic_ncols=True
            )
            bars[event.stage] = bar
            current[0] = bar
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        bar.n = event.done
        if event.metrics:
            bar.set_postfix(
                {k: f"{v:.4g}" for k, v in event.metrics.items() if isinstance(v, (int, float))},
                refresh=False,
            )
        bar.refresh()

    try:
        return run_job(job, show)
    finally:
        for bar in bars.values():
            bar.close()
