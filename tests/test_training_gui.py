"""Training panel: tiny runs on a worker thread, pause/cancel, errors, Analyse this slide, latency."""

from __future__ import annotations

import csv
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt, QThread, QTimer
from PySide6.QtWidgets import QApplication

from pathviewer import runs
from pathviewer.core.cohort import read_cohort
from pathviewer.core.heatmap import load_heatmap
from pathviewer.core.progress import run_job
from pathviewer.gui.heatmap.overlay import quantise
from pathviewer.gui.training import panel as training
from pathviewer.ml.checkpoint import load_checkpoint
from pathviewer.ml.model_file import ModelFile
from pathviewer.ml.ngsd import NGSDConfig, demo_config, train


def tiny_config(**overrides: object) -> NGSDConfig:
    base: dict[str, object] = dict(
        patch_size=256,
        read_downsample=4.0,
        input_size=32,
        batch_size=8,
        steps=6,
        log_every=1,
        checkpoint_every=2,
        workers=0,
        threads=1,
        device="cpu",
    )
    base.update(overrides)
    return demo_config(**base)


@pytest.fixture
def window(qtbot, small_cohort: Path, tmp_path: Path):
    from pathviewer.gui.app import create_main_window

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = create_main_window([str(small_cohort)], settings=settings, raise_errors=True)
    qtbot.addWidget(win)
    yield win
    win.context.training.shutdown()
    demo = win.context.demo
    if demo is not None:
        demo.shutdown()


def start_tiny(panel: training.TrainingPanel, cfg: NGSDConfig) -> list[object]:
    panel.set_method("ngsd")
    panel.ngsd_form.set_value(cfg)
    panel.device_combo.setCurrentIndex(panel.device_combo.findData("cpu"))
    assert panel.problem() == ""
    assert panel.start_button.isEnabled()
    assert panel.start()
    events: list[object] = []
    assert panel.runner is not None
    panel.runner.progress.connect(events.append)
    return events


def run_info(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def test_tiny_training_emits_progress_and_finishes(qtbot, window) -> None:
    panel = window.context.training
    assert window.cohort_path is not None and panel.cohort_csv() == window.cohort_path
    events = start_tiny(panel, tiny_config())
    run_dir = panel.run_dir
    assert run_dir is not None and run_dir.parent == runs.scan_runs()[0].path.parent
    assert not panel.start_button.isEnabled() and panel.cancel_button.isEnabled()
    with qtbot.waitSignal(panel.jobStopped, timeout=120_000):
        pass
    steps = [e.done for e in events if e.stage == "training"]
    assert steps[-1] == 6 and steps == sorted(steps)
    assert {"tiling", "training"} <= {e.stage for e in events}
    xs, ys = panel.curve_data("loss")
    assert xs == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0] and all(np.isfinite(ys))
    assert len(panel.curve_data("bank_positive_fraction")[0]) == 6
    # The plot items hold the same points (the redraw timer flushed them).
    assert list(panel._curves["loss"][0].getData()[1]) == pytest.approx(ys)
    assert run_info(run_dir)["status"] == "completed"
    data = ModelFile.load(run_dir / "model.pt").data
    assert data["step"] == 6 and data["method"] == "ngsd"
    listed = {r.path: r for r in runs.scan_runs()}
    assert listed[run_dir].status == "completed" and listed[run_dir].can_score_slides
    assert panel.selected_run() is not None and panel.selected_run().path == run_dir
    assert panel.start_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert "run " in panel.log_view.toPlainText()


def test_pause_stops_progress_resume_continues_cancel_keeps_checkpoint(qtbot, window) -> None:
    panel = window.context.training
    events = start_tiny(panel, tiny_config(steps=400, checkpoint_every=2))
    run_dir = panel.run_dir
    assert run_dir is not None

    def training_steps() -> list[int]:
        return [e.done for e in events if e.stage == "training"]

    qtbot.waitUntil(lambda: len(training_steps()) >= 3, timeout=90_000)
    panel.toggle_pause()
    assert panel.pause_button.text() == "Resume"
    qtbot.wait(1500)  # the step in flight finishes
    frozen = len(training_steps())
    qtbot.wait(1500)
    assert len(training_steps()) == frozen, "progress continued while paused"
    panel.toggle_pause()
    qtbot.waitUntil(lambda: len(training_steps()) >= frozen + 2, timeout=60_000)
    with qtbot.waitSignal(panel.jobStopped, timeout=60_000):
        panel.cancel()
    last = training_steps()[-1]
    assert last < 400
    assert run_info(run_dir)["status"] == "cancelled"
    # The engine saved on close: model.pt and the checkpoint load and hold the last step.
    data = ModelFile.load(run_dir / "model.pt").data
    assert data["step"] >= last
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] == data["step"]
    assert not list(run_dir.rglob("*.tmp"))
    assert panel.start_button.isEnabled()


class FakeBox:
    """Stands in for QMessageBox: records what the dialog would show."""

    shown: list[FakeBox] = []
    Icon = training.QMessageBox.Icon
    StandardButton = training.QMessageBox.StandardButton

    def __init__(self, icon, title, text, buttons=None, parent=None) -> None:
        self.title, self.text, self.details = title, text, ""

    def setDetailedText(self, details: str) -> None:  # noqa: N802 - Qt name
        self.details = details

    def open(self) -> None:
        FakeBox.shown.append(self)


def test_worker_exception_reaches_the_dialog(qtbot, window, small_cohort, tmp_path, monkeypatch):
    monkeypatch.setattr(training, "QMessageBox", FakeBox)
    FakeBox.shown = []
    bad = tmp_path / "negatives_only.csv"
    with open(bad, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slide", "label", "split"])
        for entry in read_cohort(small_cohort):
            if entry.label == 0:
                writer.writerow([str(entry.path), 0, "train"])
    panel = window.context.training
    panel.cohort_edit.setText(str(bad))
    start_tiny(panel, tiny_config())
    with qtbot.waitSignal(panel.jobStopped, timeout=60_000):
        pass
    assert len(FakeBox.shown) == 1
    box = FakeBox.shown[0]
    assert box.title == "The job stopped"
    assert "negatives_only.csv" in box.text and "Traceback" in box.details
    assert run_info(panel.run_dir)["status"] == "failed"
    assert panel.start_button.isEnabled()  # the app keeps going


def test_invalid_settings_disable_start_with_a_message(window) -> None:
    panel = window.context.training
    panel.set_method("ngsd")
    lr = panel.ngsd_form.widgets["lr"]
    lr.setText("fast")
    assert not panel.start_button.isEnabled()
    assert "lr" in panel.message_label.text() and "not a number" in panel.message_label.text()
    lr.setText("2")
    assert "above the maximum" in panel.message_label.text()
    assert not panel.start()
    lr.setText("0.001")
    assert panel.start_button.isEnabled() and panel.message_label.text() == ""
    panel.set_method("refine-csv")
    assert not panel.start_button.isEnabled() and "labels.csv" in panel.message_label.text()
    assert panel.ngsd_form.value().lr == pytest.approx(0.001)


@pytest.fixture(scope="module")
def trained_run(small_cohort: Path) -> Path:
    """A finished tiny NGSD run in runs_dir(), as the panel would leave it."""
    run_dir = runs.new_run_dir("ngsd")
    run_job(train(small_cohort, run_dir, tiny_config()))
    runs.write_run_info(run_dir, method="ngsd", status="completed", cohort=str(small_cohort))
    return run_dir


def test_analyse_this_slide_fills_the_heatmap_with_the_inference_values(
    qtbot, window, small_cohort, trained_run, tmp_path
) -> None:
    from pathviewer.ml.inference import predict

    panel = window.context.training
    entry = next(e for e in read_cohort(small_cohort) if e.label == 1)
    window.open_slide(str(entry.path), raise_errors=True)
    panel.select_run(trained_run)
    assert panel.analyse_button.isEnabled() and window.context.training.analyse_action.isEnabled()
    controller = window.context.heatmap
    seen: list[tuple[int, int]] = []  # (finite cells when set, ...) per update
    controller.heatmapChanged.connect(
        lambda h: seen.append((-1, int(np.isfinite(h.probs).sum()))) if h is not None else None
    )
    updates: list[int] = []
    original = controller.update_patches

    def spy(rows, cols, probs) -> None:
        updates.append(len(probs))
        original(rows, cols, probs)

    monkeypatch_update = pytest.MonkeyPatch()
    monkeypatch_update.setattr(controller, "update_patches", spy)
    panel.analysis_batch_size = 16
    try:
        with qtbot.waitSignal(panel.analysisFinished, timeout=60_000) as blocker:
            window.context.training.analyse_action.trigger()
    finally:
        monkeypatch_update.undo()
    result = blocker.args[0]
    assert seen[0] == (-1, 0)  # the heatmap starts empty ...
    assert len(updates) >= 2 and all(n <= 16 for n in updates)  # ... and fills batch by batch
    # Same model, same slide through the CLI's inference: identical values on the overlay.
    predict_dir = tmp_path / "pred"
    run_job(predict(trained_run / "model.pt", small_cohort, predict_dir, split=None))
    expected = load_heatmap(predict_dir / "heatmaps" / f"{Path(entry.slide).stem}.npz")
    shown = controller.heatmap
    assert shown.slide == entry.slide and shown.shape == expected.shape
    assert np.isfinite(expected.probs).sum() == sum(updates)
    np.testing.assert_allclose(shown.probs, expected.probs, atol=1e-5, equal_nan=True)
    pixels = controller._pixels(controller.image)[:, : shown.shape[1]]
    np.testing.assert_array_equal(pixels, quantise(expected.probs))
    assert result.out_dir == trained_run / "analyses" / Path(entry.slide).stem
    assert (result.out_dir / "slides.csv").is_file()
    qtbot.waitUntil(lambda: panel.analysis_runner is None, timeout=10_000)
    assert panel.stage_label.text() == "analysis finished"  # not stuck at "inference n/n"
    # The cohort list shows the analysis' score, and still does after the cohort is re-opened
    # (the table is rebuilt; the score used to live only in the old table).
    model = window.cohort_panel.model
    row = model.row_of(entry.slide)
    assert row is not None
    assert model.item(row, model.SCORE).text() == f"{result.score:.3f}"
    window.open_cohort(str(small_cohort))
    row = model.row_of(entry.slide)
    assert row is not None
    assert model.item(row, model.SCORE).text() == f"{result.score:.3f}"


def test_event_loop_keeps_running_while_training(qtbot, window) -> None:
    """Training runs off the GUI thread: timers keep firing between its progress events.

    How long the GUI may stall is a benchmark figure (``python -m pathviewer.bench training_ui``),
    not a timed assertion here: on a shared 2-core machine any wall-clock bound is about load.
    """
    window.show()
    window.docks["training"].show()
    panel = window.context.training
    beats_at_event: list[int] = []
    beats = [0]
    threads: set[object] = set()

    def beat() -> None:
        beats[0] += 1

    heartbeat = QTimer()
    heartbeat.setInterval(10)
    heartbeat.timeout.connect(beat)
    heartbeat.start()
    events = start_tiny(panel, tiny_config(steps=10))
    runner = panel.runner
    assert runner is not None

    def on_event(event) -> None:
        if event.stage == "training":
            beats_at_event.append(beats[0])

    def on_worker_event(_event) -> None:  # direct connection: runs on the emitting thread
        threads.add(QThread.currentThread())

    runner.progress.connect(on_event)
    runner.worker.progress.connect(on_worker_event, Qt.ConnectionType.DirectConnection)
    with qtbot.waitSignal(panel.jobStopped, timeout=120_000):
        pass
    heartbeat.stop()
    assert [e.done for e in events if e.stage == "training"][-1] == 10
    assert threads and QApplication.instance().thread() not in threads
    # Ten training steps take seconds; a 10 ms timer that was starved would barely tick.
    assert len(beats_at_event) >= 10
    ticks_during_training = beats_at_event[-1] - beats_at_event[0]
    assert ticks_during_training > 20, ticks_during_training
    assert sum(b > a for a, b in pairwise(beats_at_event)) >= 5


def test_demo_second_launch_loads_the_saved_demo_run_without_training(
    qtbot, window, small_cohort, trained_run
) -> None:
    from pathviewer.gui import demo
    from pathviewer.ml.inference import predict

    demo_run = runs.new_run_dir("ngsd-demo")
    for name in ("model.pt", "config.json"):
        (demo_run / name).write_bytes((trained_run / name).read_bytes())
    run_job(predict(demo_run / "model.pt", small_cohort, demo_run / demo.PREDICTIONS, "test"))
    runs.write_run_info(
        demo_run, method="ngsd", status="completed", cohort=str(small_cohort), demo=True
    )
    assert demo.find_demo_run(small_cohort).path == demo_run
    controller = demo.start_demo(window, small_cohort)
    with qtbot.waitSignal(controller.completed, timeout=20_000):
        pass
    assert window.context.training.runner is None  # nothing trains
    entry = demo.demo_slide(read_cohort(small_cohort))
    assert entry.label == 1
    assert Path(window.slide_view.current_slide.path).resolve() == entry.path.resolve()
    heatmaps = window.context.heatmap
    assert heatmaps.pred_dir == demo_run / demo.PREDICTIONS
    assert heatmaps.heatmap is not None and heatmaps.heatmap.slide == entry.slide
    assert np.isfinite(heatmaps.heatmap.probs).any()


def test_a_collapsed_refinement_run_is_marked_and_explained(qtbot, window, tmp_path) -> None:
    from types import SimpleNamespace

    panel = window.context.training
    run_dir = tmp_path / "runs" / "noisy-1"
    run_dir.mkdir(parents=True)
    panel.run_dir = run_dir
    panel._on_finished(SimpleNamespace(collapsed=True, lost_classes=["Tumor"]))
    assert run_info(run_dir)["status"] == "collapsed"
    assert "predicts almost no Tumor" in panel.message_label.text()
    assert not panel.message_label.isHidden()


def test_quitting_during_training_asks_and_keeps_running_on_no(qtbot, window, monkeypatch) -> None:
    panel = window.context.training
    window.show()
    start_tiny(panel, tiny_config(steps=400))
    assert panel.busy()
    asked: list[str] = []
    answer = training.QMessageBox.StandardButton.No

    def question(_parent, title, text, *_args):
        asked.append(text)
        return answer

    monkeypatch.setattr(training.QMessageBox, "question", question)
    assert not window.close_by_user()  # "No": the window stays, the job goes on
    assert window.isVisible() and panel.busy()
    assert asked and "last checkpoint" in asked[0]
    answer = training.QMessageBox.StandardButton.Yes
    assert window.close_by_user()
    assert not panel.busy()  # cancelled and waited for
    assert len(asked) == 2


def test_settings_have_plain_labels_and_the_runs_curves_say_what_they_are(qtbot) -> None:
    import dataclasses

    from PySide6.QtWidgets import QFormLayout

    from pathviewer.ml.config import NGSDConfig
    from pathviewer.ml.refine_config import RefineConfig

    for config in (NGSDConfig, RefineConfig):
        assert {f.name for f in dataclasses.fields(config)} == set(config.LABELS)
    panel = training.TrainingPanel()
    qtbot.addWidget(panel)
    form = panel.refine_form
    layout = form.layout()
    assert isinstance(layout, QFormLayout)
    label = layout.labelForField(form.widgets["mu"])
    assert label is not None and label.text() == "Gaussian weight centre μ"  # type: ignore[attr-defined]
    assert "(mu)" in form.widgets["mu"].toolTip() and "gradient" in form.widgets["mu"].toolTip()
    panel.set_method("refine-csv")
    panel._reset_monitor()
    assert panel.loss_plot.titleLabel.text == "training loss"
    assert panel.loss_plot.getAxis("bottom").labelText == "round"
    panel.set_method("ngsd")
    panel._reset_monitor()
    assert panel.fraction_plot.getAxis("bottom").labelText == "step"
    panel.shutdown()
