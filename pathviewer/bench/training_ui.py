"""GUI responsiveness while training: ``python -m pathviewer.bench training_ui --json OUT.json``.

The real main window trains a small NGSD model on a generated synthetic cohort through the
Training panel (worker thread, live curves, progress bar), while a 5 ms ``QTimer`` heartbeat
records how long the GUI thread goes without serving events.  Measured side by side in one run:

``idle``
    the heartbeat with the window shown and nothing running (the machine's own jitter);
``training``
    the heartbeat from the first training step to the end of the run;
``stall_ratio_p99``
    p99 stall while training over p99 stall when idle;
``gc``
    the longest cyclic-GC pause and the number of full (generation 2) collections while
    training: a collection holds the GIL, so it stalls the GUI whichever thread ran it;
``gui_over_headless_steps_per_s``
    training steps/s through the GUI over the same job run headless (:func:`run_job`), so the
    price of the live monitor on training speed is visible too.

A stall is a heartbeat gap minus the timer interval.  Targets: ``max_stall_ms`` < 50 and
``p99_stall_ms`` < 30 while training, on an otherwise idle machine (``load_average_before``
says how idle it was).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pathviewer.bench import emit_report


def stall_summary(gaps_s: list[float], interval_s: float) -> dict[str, float]:
    """Max / p99 / median stall (gap minus interval, ms) and the share of gaps over 30 ms."""
    stalls = sorted(max(0.0, (gap - interval_s) * 1000) for gap in gaps_s)
    if not stalls:
        return {"beats": 0}
    return {
        "beats": len(stalls),
        "max_stall_ms": round(stalls[-1], 1),
        "p99_stall_ms": round(stalls[int(0.99 * (len(stalls) - 1))], 1),
        "median_stall_ms": round(statistics.median(stalls), 2),
        "stalls_over_30ms": sum(stall > 30 for stall in stalls),
    }


def _bench_config(steps: int, input_size: int) -> Any:
    from pathviewer.ml.config import demo_config

    return demo_config(
        input_size=input_size,
        batch_size=16,
        steps=steps,
        log_every=1,
        checkpoint_every=max(steps // 3, 1),
        workers=0,
        threads=1,
        device="cpu",
    )


def headless_steps_per_s(cohort: Path, out: Path, cfg: Any) -> float:
    """Steps/s of the same NGSD job driven by :func:`run_job` (no GUI), training stage only."""
    from pathviewer.core.progress import Progress
    from pathviewer.jobs import train_slide_model

    times: list[float] = []
    job = train_slide_model(cohort, out, cfg)
    try:
        while True:
            event: Progress = next(job)
            if event.stage == "training":
                times.append(time.perf_counter())
    except StopIteration:
        pass
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and optionally write the JSON figures."""
    parser = argparse.ArgumentParser(
        prog="python -m pathviewer.bench training_ui", description=__doc__
    )
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--steps", type=int, default=40, help="training steps")
    parser.add_argument("--input-size", type=int, default=64, help="network input (px)")
    parser.add_argument("--idle-seconds", type=float, default=4.0)
    parser.add_argument("--viewport", default="1600x1000", help="window size WxH")
    args = parser.parse_args(argv)

    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # Runs and settings go to the temporary folder, never to the user's own.
        os.environ["PATHVIEWER_DATA_DIR"] = str(base / "data")
        return _run(args, base)


def _run(args: argparse.Namespace, base: Path) -> int:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QDockWidget

    from pathviewer.bench.viewer import _Heartbeat, _spin
    from pathviewer.core.progress import run_job
    from pathviewer.core.synth import generate_cohort
    from pathviewer.gui.app import create_main_window, ensure_application
    from pathviewer.gui.training.panel import TrainingPanel

    cohort = run_job(generate_cohort(base / "cohort", n_slides=6, seed=7, size=3072))
    cfg = _bench_config(args.steps, args.input_size)
    results: dict[str, Any] = {
        "steps": args.steps,
        "input_size": args.input_size,
        "batch_size": cfg.batch_size,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    headless = headless_steps_per_s(cohort, base / "headless-run", cfg)

    app = ensure_application()
    results["qt_platform"] = app.platformName()
    settings = QSettings(str(base / "bench.ini"), QSettings.Format.IniFormat)
    window = create_main_window([str(cohort)], settings=settings)
    width, height = (int(v) for v in args.viewport.split("x"))
    window.resize(width, height)
    dock = window.docks.get("training")
    panel = window.context.training
    if not isinstance(dock, QDockWidget) or not isinstance(panel, TrainingPanel):
        raise SystemExit("the main window has no Training dock (pathviewer.gui.training.panel)")
    window.show()
    dock.show()
    _spin(0.5)
    gc.collect()

    gc_pauses: list[tuple[float, int]] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif step_times:  # only while training
            gc_pauses.append((time.perf_counter() - gc_started[0], info["generation"]))

    heartbeat = _Heartbeat()
    heartbeat.start()
    _spin(args.idle_seconds)
    heartbeat.stop()
    results["idle"] = stall_summary(list(heartbeat.gaps), heartbeat.interval)

    panel.set_method("ngsd")
    panel.ngsd_form.set_value(cfg)
    panel.device_combo.setCurrentIndex(panel.device_combo.findData("cpu"))
    step_times: list[float] = []
    done = [False]

    def on_event(event: Any) -> None:
        if event.stage == "training":
            if not step_times:
                heartbeat.start()  # measure from the first step, not the tiling before it
            step_times.append(time.perf_counter())

    def on_stopped() -> None:
        heartbeat.stop()
        done[0] = True

    if not panel.start():
        raise SystemExit(f"the training panel did not start: {panel.problem()}")
    assert panel.runner is not None
    panel.runner.progress.connect(on_event)
    panel.jobStopped.connect(on_stopped)
    gc.callbacks.append(on_gc)
    while not done[0]:
        _spin(0.05)
    gc.callbacks.remove(on_gc)
    results["gc"] = {
        "collections": len(gc_pauses),
        "full_collections": sum(generation == 2 for _, generation in gc_pauses),
        "max_pause_ms": round(max((p for p, _ in gc_pauses), default=0.0) * 1000, 1),
        "tracked_objects": len(gc.get_objects()),
    }
    results["training"] = stall_summary(list(heartbeat.gaps), heartbeat.interval)
    gui_rate = (len(step_times) - 1) / (step_times[-1] - step_times[0])
    results["gui_steps_per_s"] = round(gui_rate, 3)
    results["headless_steps_per_s"] = round(headless, 3)
    results["gui_over_headless_steps_per_s"] = round(gui_rate / headless, 3)
    idle_p99 = max(results["idle"].get("p99_stall_ms", 0.0), 0.1)
    results["stall_ratio_p99"] = round(results["training"]["p99_stall_ms"] / idle_p99, 2)
    panel.shutdown()
    window.close()
    app.processEvents()

    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["targets"] = {"training.max_stall_ms": "< 50", "training.p99_stall_ms": "< 30"}
    emit_report(results, args.json)
    return 0
