"""The embedded demo of ``pathviewer demo`` (``make run``): a heatmap on a positive slide.

Approach: the demo **trains a small NGSD model in the background** (with the Training dock showing
its progress), because a checkpoint cannot ship with the source.  The first launch:

0. opens the window at once and generates the demo cohort in it
   (:func:`pathviewer.jobs.prepare_demo_cohort` on the worker thread, progress in the status
   bar: :class:`DemoPreparation`), so nothing is a silent wait;
1. opens the demo cohort and shows a positive test slide;
2. trains :func:`demo_training_config` (NGSD, 64 px inputs, 400 steps of 32 patches; a few
   minutes on a 2-core CPU) into a run folder under :func:`pathviewer.paths.runs_dir` marked
   ``"demo": true`` in its ``run.json``;
3. runs "Analyse this slide" on the slide shown: the heatmap fills in batch by batch;
4. scores the test split into ``RUN_DIR/predictions`` (``pathviewer infer``'s folder) and loads
   it, so every test slide gets its heatmap and the cohort panel its scores.

Later launches find the finished demo run and load its predictions at once (no training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QMessageBox, QProgressBar

from pathviewer.core.cohort import CohortEntry, read_cohort
from pathviewer.core.identity import same_slide
from pathviewer.core.progress import Progress
from pathviewer.gui.workers import JobRunner
from pathviewer.jobs import (
    demo_cohort_is_complete,
    predict_cohort,
    prepare_demo_cohort,
    train_slide_model,
)
from pathviewer.runs import RunInfo, new_run_dir, scan_runs, write_run_info

if TYPE_CHECKING:
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.ml.config import NGSDConfig

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"


def demo_training_config(**overrides: Any) -> NGSDConfig:
    """The demo's NGSD settings: :func:`pathviewer.ml.ngsd.demo_config` (the engine's CPU preset).

    400 steps of 32 patches at 64 px, about 0.4 s a step on two otherwise idle CPU cores; with
    cohort generation, tiling and inference the first heatmap appears within the demo's
    5-minute budget.
    """
    from pathviewer.ml.config import demo_config

    base: dict[str, Any] = {"device": "auto"}
    base.update(overrides)
    return demo_config(**base)


def demo_slide(entries: list[CohortEntry]) -> CohortEntry:
    """The slide the demo shows: the first positive test slide (else any positive, else the first)."""
    for wanted in (
        lambda e: e.label == 1 and e.split == "test",
        lambda e: e.label == 1,
    ):
        for entry in entries:
            if wanted(entry):
                return entry
    return entries[0]


def demo_scores_text(scores: dict[str, Any]) -> str:
    """One line with the demo model's test-split AUCs (from :func:`evaluate_predictions`)."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.2f}"

    return (
        f"Demo model on the {scores.get('n_slides', 0)} test slides: patch (instance) AUC "
        f"{fmt(scores.get('instance_auc'))}, slide AUC {fmt(scores.get('bag_auc'))}, slide "
        f"accuracy {fmt(scores.get('bag_accuracy'))} (a small model trained in minutes on a CPU)"
    )


def find_demo_run(cohort_csv: str | Path) -> RunInfo | None:
    """The newest finished demo run of this cohort (None when there is none)."""
    for run in scan_runs():
        # A degenerate demo run is shown with its warning rather than trained again and again.
        finished = run.status in ("completed", "degenerate")
        if run.demo and finished and same_slide(run.cohort, cohort_csv):
            if run.model_path.is_file():
                return run
    return None


def has_predictions(run: RunInfo) -> bool:
    """Whether the run's test-split predictions folder is complete (prediction.json is last)."""
    return (run.path / PREDICTIONS / "prediction.json").is_file()


class DemoController(QObject):
    """Drives the demo in a window (see the module docstring).

    Signals
    -------
    heatmapShown(float)
        The first heatmap is over the slide; seconds since :meth:`start`.
    completed(float)
        Everything is done (predictions of the test split loaded); seconds since :meth:`start`.
    """

    heatmapShown = Signal(float)
    completed = Signal(float)

    def __init__(self, window: MainWindow, cohort_csv: str | Path) -> None:
        super().__init__(window)
        self.window = window
        self.cohort_csv = Path(cohort_csv)
        self.panel = window.context.training
        self.heatmap = window.context.heatmap
        self.run: RunInfo | None = None
        self.predict_runner: JobRunner | None = None
        self.started = 0.0
        self.trained = False
        self._heatmap_seen = False

    def elapsed(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self.started

    def start(self) -> None:
        """Show the demo slide, then load the demo run or train one."""
        if not self.started:
            self.started = time.perf_counter()
        entries = read_cohort(self.cohort_csv)
        entry = demo_slide(entries)
        if self.window.cohort_path is None or not same_slide(
            self.window.cohort_path, self.cohort_csv
        ):
            self.window.open_cohort(str(self.cohort_csv))
        self.window.open_slide(str(entry.path))
        controller = self.heatmap
        controller.heatmapChanged.connect(self._on_heatmap)
        self.run = find_demo_run(self.cohort_csv)
        if self.run is not None and has_predictions(self.run):
            log.info("demo: loading the predictions of %s", self.run.path.name)
            self.panel.select_run(self.run.path)
            controller.load_path(self.run.path / PREDICTIONS)
            self._show_test_scores(self.run.path / PREDICTIONS)
            self.completed.emit(self.elapsed())
            return
        if self.run is not None:
            self._analyse(self.run.path)
            return
        self._train()

    def _on_heatmap(self, heatmap: object) -> None:
        if heatmap is not None and not self._heatmap_seen:
            self._heatmap_seen = True
            self.heatmapShown.emit(self.elapsed())

    def _train(self) -> None:
        dock = self.window.docks.get("training")
        if dock is not None:
            dock.show()
            dock.raise_()
        run_dir = new_run_dir("ngsd-demo")
        cfg = demo_training_config()
        cohort = self.cohort_csv
        self.panel.append_log(
            "Demo: training a small NGSD model on the demo cohort (a few minutes on a CPU); "
            "the heatmap of the slide shown appears when it is done."
        )

        def factory() -> Generator[Progress, None, Any]:
            return train_slide_model(cohort, run_dir, cfg)

        self.panel.trainingFinished.connect(self._on_trained)
        self.panel.start_job(factory, run_dir, "ngsd", str(cohort.resolve()), demo=True)

    def _on_trained(self, run_dir: Path) -> None:
        self.panel.trainingFinished.disconnect(self._on_trained)
        self.trained = True
        self._analyse(run_dir)

    def _analyse(self, run_dir: Path) -> None:
        self.panel.select_run(run_dir)
        run = self.panel.selected_run()
        self.run = run
        self.panel.analysisFinished.connect(self._on_analysed)
        if self.panel.analyse_current_slide(run) is None:
            self.panel.analysisFinished.disconnect(self._on_analysed)
            self._predict_test()

    def _on_analysed(self, _result: object) -> None:
        self.panel.analysisFinished.disconnect(self._on_analysed)
        self._predict_test()

    def _predict_test(self) -> None:
        assert self.run is not None
        model, cohort, out = self.run.model_path, self.cohort_csv, self.run.path / PREDICTIONS

        def factory() -> Generator[Progress, None, Any]:
            return predict_cohort(model, cohort, out, "test")

        runner = JobRunner(factory, self)
        runner.finished.connect(lambda _r: self._on_predicted(out))
        runner.failed.connect(self.panel.show_error)
        runner.stopped.connect(self._on_predict_stopped)
        self.predict_runner = runner
        self.panel.append_log("Demo: scoring the test slides…")
        runner.start()

    def _on_predicted(self, out: Path) -> None:
        assert self.run is not None
        write_run_info(self.run.path, predictions=str(out))
        self.heatmap.load_path(out)
        self.panel.append_log(f"Demo: test-split predictions in {out}")
        self._show_test_scores(out)
        self.completed.emit(self.elapsed())

    def _show_test_scores(self, predictions: Path) -> None:
        """Say how good the demo model is on the test slides (their annotations are known)."""
        from pathviewer.core.errors import PathViewerError
        from pathviewer.ml.metrics import evaluate_predictions

        try:
            scores = evaluate_predictions(self.cohort_csv, predictions, "test")
        except PathViewerError as error:
            log.warning("demo: cannot evaluate the test predictions: %s", error)
            return
        text = demo_scores_text(scores)
        assert self.run is not None
        write_run_info(self.run.path, test_scores=scores)
        self.panel.append_log(text)
        self.panel.show_message(text)

    def _on_predict_stopped(self) -> None:
        self.predict_runner = None

    def shutdown(self) -> None:
        """Cancel the demo's own job (the panel cancels its jobs itself)."""
        if self.predict_runner is not None:
            self.predict_runner.cancel()
            self.predict_runner.wait()


def start_demo(window: MainWindow, cohort_csv: str | Path) -> DemoController:
    """Start the demo in ``window`` once the event loop runs (returns the controller at once)."""
    demo = DemoController(window, cohort_csv)
    window.context.demo = demo
    demo.started = time.perf_counter()
    # Started from the event loop: the window paints first, and callers can connect the
    # signals after this returns.
    QTimer.singleShot(0, demo.start)
    return demo


class DemoPreparation(QObject):
    """Generating the demo cohort in an open window, with progress in the status bar.

    Signals
    -------
    ready(object)
        The cohort is complete: the path of its ``cohort.csv``.
    """

    ready = Signal(object)

    def __init__(self, window: MainWindow, regenerate: bool = False) -> None:
        super().__init__(window)
        self.window = window
        self.label = QLabel("Preparing the demo slides (first launch only)…")
        self.bar = QProgressBar()
        self.bar.setMaximumWidth(220)
        self.bar.setRange(0, 0)  # busy until the first count arrives
        # Also in the middle of the empty view, where a new user looks.
        self.notice = QLabel(
            "Preparing the demo slides — first launch only, about a minute.\n"
            "They open here when ready; then a small model trains and its heatmap appears.",
            window.slide_view,
        )
        self.notice.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.notice.setWordWrap(True)
        self.notice.setStyleSheet("color: #d8d8d8; font-size: 15px; padding: 18px;")
        self.notice.hide()
        window.slide_view.installEventFilter(self)
        self.runner = JobRunner(lambda: prepare_demo_cohort(regenerate), self)
        self.runner.progress.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)

    def start(self) -> None:
        """Show the progress and start generating on the worker thread."""
        status = self.window.statusBar()
        status.addPermanentWidget(self.label)
        status.addPermanentWidget(self.bar)
        self._place_notice()
        self.notice.show()
        self.runner.start()

    def _place_notice(self) -> None:
        view = self.window.slide_view
        width = min(view.width() - 40, 620)
        self.notice.resize(max(width, 200), 110)
        self.notice.move((view.width() - self.notice.width()) // 2, view.height() // 2 - 55)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if watched is self.window.slide_view and event.type() == QEvent.Type.Resize:
            self._place_notice()
        return False

    def _on_progress(self, event: object) -> None:
        if not isinstance(event, Progress) or not event.total:
            return
        self.bar.setRange(0, int(event.total))
        self.bar.setValue(int(event.done))

    def _remove_progress(self) -> None:
        self.window.slide_view.removeEventFilter(self)
        self.notice.hide()
        self.notice.deleteLater()
        status = self.window.statusBar()
        for widget in (self.label, self.bar):
            status.removeWidget(widget)
            widget.deleteLater()

    def _on_finished(self, cohort_csv: object) -> None:
        self._remove_progress()
        self.ready.emit(cohort_csv)

    def _on_failed(self, message: str, _details: str) -> None:
        self._remove_progress()
        QMessageBox.critical(self.window, "Demo", f"The demo slides could not be made: {message}")

    def shutdown(self) -> None:
        """Cancel a generation still running (its temporary folder is removed) and wait."""
        if self.runner.is_running():
            self.runner.cancel()
            self.runner.wait()


def run_demo_app(regenerate: bool = False) -> int:
    """``pathviewer demo``'s GUI: the viewer on the demo cohort with the embedded demo.

    The window opens at once; on a first launch (or with ``regenerate``) it generates the demo
    cohort in it first (:class:`DemoPreparation`).
    """
    from pathviewer.gui.app import create_main_window, ensure_application
    from pathviewer.paths import demo_cohort_dir

    app = ensure_application()
    cohort_csv = demo_cohort_dir() / "cohort.csv"
    if not regenerate and demo_cohort_is_complete(cohort_csv.parent):
        window = create_main_window([str(cohort_csv)])
        window.show()
        demo = start_demo(window, cohort_csv)
        app.aboutToQuit.connect(demo.shutdown)
        return int(app.exec())
    window = create_main_window([])
    window.show()
    preparation = DemoPreparation(window, regenerate)
    app.aboutToQuit.connect(preparation.shutdown)

    def begin(path: object) -> None:
        demo = start_demo(window, Path(str(path)))
        app.aboutToQuit.connect(demo.shutdown)

    preparation.ready.connect(begin)
    QTimer.singleShot(0, preparation.start)  # after the window has painted
    return int(app.exec())
