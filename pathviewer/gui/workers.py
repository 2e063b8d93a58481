"""Run a Qt-free job generator (:mod:`pathviewer.core.progress`) on a QThread.

The engines in :mod:`pathviewer.ml` are generators that yield
:class:`~pathviewer.core.progress.Progress` and return their result.  :class:`JobRunner` pulls
such a generator on a worker thread and turns it into Qt signals:

* ``progress(Progress)`` for every event, ``finished(result)`` with the return value,
  ``failed(title, details)`` when the job raises, ``cancelled()`` after :meth:`JobRunner.cancel`;
  ``stopped()`` follows whichever of the three came last (clean-up hook).
* **pause** = the worker stops pulling (the generator waits at its ``yield``);
* **cancel** = the worker calls ``generator.close()`` *in the worker thread*, so the engine's
  ``finally`` blocks (which keep checkpoints valid) run where the job ran.

Signals are emitted from the worker thread; connections to GUI objects are therefore queued and
their slots run in the GUI thread.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal

from pathviewer.core.errors import USER_ERRORS, user_message
from pathviewer.core.progress import Progress

log = logging.getLogger(__name__)

JobFactory = Callable[[], Generator[Progress, None, Any]]


def describe_error(error: BaseException) -> tuple[str, str]:
    """A dialog title and details (message, hint, traceback) for an exception of a job."""
    text = f"{type(error).__name__}: {error}"
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    lowered = str(error).lower()
    if "out of memory" in lowered and ("cuda" in lowered or "gpu" in lowered):
        hint = "The GPU ran out of memory: lower the batch size or the input size, or use the CPU."
        return "Out of GPU memory", f"{text}\n\n{hint}\n\n{trace}"
    if isinstance(error, MemoryError):
        return "Out of memory", f"{text}\n\nLower the batch size or the preload budget.\n\n{trace}"
    if isinstance(error, USER_ERRORS):
        # Bad data or settings, a full disk, a locked database: the line the CLI prints, which
        # names the file/row/setting; the trace is secondary.
        return "The job stopped", f"{user_message(error)}\n\n{trace}"
    return "The job failed", f"{text}\n\n{trace}"


class JobWorker(QObject):
    """Pulls one job generator on the thread that calls :meth:`run` (see :class:`JobRunner`).

    Its signals are emitted from that thread; receivers in the GUI thread get them queued.

    Parameters
    ----------
    factory
        Called on the worker thread to create the generator (so the job's set-up, e.g. torch
        thread settings, happens on the thread that runs it).
    yield_gil
        Sleep this long (seconds) after each event: a Python-heavy job otherwise holds the GIL
        for long stretches and makes the GUI stutter.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    stopped = Signal()

    def __init__(self, factory: JobFactory, yield_gil: float = 0.0) -> None:
        super().__init__()
        self._factory = factory
        self._yield_gil = yield_gil
        self._resume = threading.Event()
        self._resume.set()
        self._cancel = threading.Event()

    # The three controls below are called from the GUI thread; they only flip thread-safe flags.

    def pause(self) -> None:
        """Stop pulling after the current event."""
        self._resume.clear()

    def resume(self) -> None:
        """Continue pulling."""
        self._resume.set()

    def cancel(self) -> None:
        """Close the generator at its next ``yield`` (also while paused)."""
        self._cancel.set()
        self._resume.set()

    @property
    def paused(self) -> bool:
        """Whether the worker is (or will be, after the current step) paused."""
        return not self._resume.is_set()

    def run(self) -> None:
        """Drive the generator to its end, a cancel, or an exception."""
        job: Generator[Progress, None, Any] | None = None
        try:
            job = self._factory()
            while True:
                self._resume.wait()
                if self._cancel.is_set():
                    job.close()  # runs the engine's finally blocks here, in the worker thread
                    self.cancelled.emit()
                    return
                try:
                    event = next(job)
                except StopIteration as stop:
                    self.finished.emit(stop.value)
                    return
                self.progress.emit(event)
                if self._yield_gil:
                    time.sleep(self._yield_gil)
        except Exception as error:  # noqa: BLE001 - every failure must reach the dialog
            log.exception("job failed")
            title, details = describe_error(error)
            self.failed.emit(title, details)
            if job is not None:
                job.close()
        finally:
            self.stopped.emit()


class _JobThread(QThread):
    """Runs the worker's loop as the thread's body (no event loop needed in the thread)."""

    def __init__(self, worker: JobWorker, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker

    def run(self) -> None:
        self.worker.run()


#: What jobs import: loaded on the UI thread before the first job (see :func:`import_engine`).
ENGINE_MODULES = (
    "torch",
    "torchvision",
    "sklearn.metrics",
    "scipy.ndimage",
    "pathviewer.ml.ngsd",
    "pathviewer.ml.baselines",
    "pathviewer.ml.refine",
    "pathviewer.ml.inference",
    "pathviewer.ml.model_file",
)


def import_engine() -> None:
    """Import the engine's modules on the calling (UI) thread, once, before a job starts.

    The window does not import torch at start-up (half a gigabyte and a second).  Left to the
    first job, the worker thread imported it while the UI thread ran imports of its own in
    event handlers, and the two deadlocked in the import machinery (both threads stuck, no CPU
    used; reproduced in the suite).  Importing here costs the first job two or three seconds of
    a busy window, once; later jobs find the modules loaded.
    """
    import importlib
    import sys

    for name in ENGINE_MODULES:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except ImportError:  # a job that needs it says so in its own error
            pass


class JobRunner(QObject):
    """A :class:`JobWorker` on its own QThread, with the worker's signals re-emitted.

    The thread quits by itself when the job ends; the runner can be started once.
    """

    progress = Signal(object)
    finished = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    stopped = Signal()

    def __init__(
        self, factory: JobFactory, parent: QObject | None = None, yield_gil: float = 0.0
    ) -> None:
        super().__init__(parent)
        self.worker = JobWorker(factory, yield_gil)
        self.qthread = _JobThread(self.worker, self)
        self.worker.progress.connect(self.progress)
        self.worker.finished.connect(self.finished)
        self.worker.failed.connect(self.failed)
        self.worker.cancelled.connect(self.cancelled)
        self.qthread.finished.connect(self.stopped)
        self._started = False

    def start(self) -> None:
        """Start the job on the worker thread."""
        if self._started:
            raise RuntimeError("a JobRunner runs one job; create another")
        self._started = True
        import_engine()
        self.qthread.start()

    def pause(self) -> None:
        """Pause after the current step."""
        self.worker.pause()

    def resume(self) -> None:
        """Resume pulling."""
        self.worker.resume()

    def cancel(self) -> None:
        """Cancel (the generator is closed on the worker thread)."""
        self.worker.cancel()

    @property
    def paused(self) -> bool:
        """Whether the job is paused."""
        return self.worker.paused

    def is_running(self) -> bool:
        """Whether the worker thread is still running."""
        return self.qthread.isRunning()

    def wait(self, msecs: int = 30_000) -> bool:
        """Block until the thread has finished (for shutdown and tests); True when it did."""
        return bool(self.qthread.wait(msecs))
