"""JobRunner: a Progress generator on a QThread -> signals; pause, resume, cancel, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

from pathviewer.core.errors import TrainingError
from pathviewer.core.progress import Progress
from pathviewer.gui.workers import JobRunner, describe_error


def counting_job(
    n: int, log: dict[str, object], delay: float = 0.0
) -> Generator[Progress, None, int]:
    log["thread"] = threading.get_ident()
    try:
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield Progress("count", i + 1, n)
        return n * 10
    finally:
        log["closed_in"] = threading.get_ident()


def test_runner_emits_progress_and_result_on_a_worker_thread(qtbot) -> None:
    log: dict[str, object] = {}
    runner = JobRunner(lambda: counting_job(5, log))
    events: list[int] = []
    runner.progress.connect(lambda e: events.append(e.done))
    with qtbot.waitSignal(runner.finished, timeout=10_000) as blocker:
        runner.start()
    assert blocker.args == [50]
    assert runner.wait(5000)
    qtbot.wait(10)
    assert events == [1, 2, 3, 4, 5]
    assert log["thread"] != threading.get_ident()
    with pytest.raises(RuntimeError):
        runner.start()


def test_cancel_closes_the_generator_in_the_worker_thread(qtbot) -> None:
    log: dict[str, object] = {}
    runner = JobRunner(lambda: counting_job(10_000, log, delay=0.002))
    finished: list[object] = []
    runner.finished.connect(finished.append)
    runner.start()
    qtbot.waitUntil(lambda: "thread" in log, timeout=5000)
    with qtbot.waitSignal(runner.cancelled, timeout=10_000):
        runner.cancel()
    assert runner.wait(5000)
    assert log["closed_in"] == log["thread"]  # the engine's finally ran where the job ran
    assert finished == []


def test_pause_stops_pulling_and_resume_continues(qtbot) -> None:
    log: dict[str, object] = {}
    runner = JobRunner(lambda: counting_job(10_000, log, delay=0.002))
    events: list[int] = []
    runner.progress.connect(lambda e: events.append(e.done))
    runner.start()
    qtbot.waitUntil(lambda: len(events) >= 3, timeout=5000)
    runner.pause()
    assert runner.paused
    qtbot.wait(100)  # the step in flight may still arrive
    frozen = len(events)
    qtbot.wait(300)
    assert len(events) == frozen
    runner.resume()
    qtbot.waitUntil(lambda: len(events) > frozen + 3, timeout=5000)
    # Cancel while paused must not hang.
    runner.pause()
    with qtbot.waitSignal(runner.cancelled, timeout=10_000):
        runner.cancel()
    assert runner.wait(5000)
    assert events == list(range(1, len(events) + 1))


def failing_job(error: Exception) -> Generator[Progress, None, None]:
    yield Progress("work", 1, 2)
    raise error


@pytest.mark.parametrize(
    ("error", "title", "needle"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), "Out of GPU memory", "batch"),
        (TrainingError("cohort.csv row 3: no label"), "The job stopped", "row 3"),
        (ValueError("bad pixel"), "The job failed", "ValueError: bad pixel"),
    ],
)
def test_failures_reach_the_failed_signal_with_details(qtbot, error, title, needle) -> None:
    runner = JobRunner(lambda: failing_job(error))
    with qtbot.waitSignal(runner.failed, timeout=10_000) as blocker:
        runner.start()
    assert runner.wait(5000)
    got_title, details = blocker.args
    assert got_title == title
    assert needle in details
    assert "Traceback" in details  # the dialog's "Show Details" has the stack


def test_describe_error_names_memory_errors() -> None:
    title, details = describe_error(MemoryError())
    assert title == "Out of memory"
    assert "batch size" in details


def test_a_full_disk_in_a_job_reads_as_the_cli_says_it() -> None:
    import errno
    import os

    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/r1/model.pt")
    title, details = describe_error(error)
    assert title == "The job stopped"
    assert details.splitlines()[0] == "/runs/r1/model.pt: No space left on device"
