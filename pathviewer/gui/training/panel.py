"""Training panel: train NGSD / label refinement from the viewer, list runs, analyse a slide.

What the window gains (``install(window)``)
-------------------------------------------
* ``window.context.training`` (:class:`TrainingPanel`) in a **Training** dock: cohort CSV (default:
  the open cohort), method (NGSD, naive baseline, label refinement from a labels.csv or from the
  open project), a settings form built from :class:`~pathviewer.ml.ngsd.NGSDConfig` /
  :class:`~pathviewer.ml.refine.RefineConfig`, device choice, Start / Pause / Cancel, progress bars
  (step, epoch, ETA), live curves (pyqtgraph), a log view that mirrors the ``pathviewer`` logger,
  and the list of runs saved under :func:`pathviewer.paths.runs_dir`.
* **Tools > Train a model…** and **Tools > Analyse this slide**: scores the open slide with the
  selected run's model on a worker thread; the heatmap fills in as batches are scored.

Every job is one of the engines' generators (:func:`pathviewer.ml.ngsd.train`,
:func:`pathviewer.ml.refine.iter_train_refine`, :func:`pathviewer.ml.inference.score_patches`)
driven by a :class:`~pathviewer.gui.workers.JobRunner`; the GUI thread never trains.

Run folders
-----------
``runs_dir()/<YYYYmmdd-HHMMSS>-<method>/`` holds what the engine writes (``model.pt``,
``config.json``, ``metrics.jsonl``, ``checkpoints/``) plus ``run.json`` (method, cohort, status:
running / completed / cancelled / failed, start and end time) and ``analyses/<slide>/``
(predictions folders of "Analyse this slide").
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence, QStandardItemModel
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.errors import PathViewerError
from pathviewer.core.operating_point import read_operating_point
from pathviewer.core.progress import Progress
from pathviewer.gui import file_dialogs
from pathviewer.gui.training.settings_form import SettingsForm
from pathviewer.gui.workers import JobRunner
from pathviewer.jobs import (
    SlideAnalysis,
    analyse_slide,
    label_project_patches,
    refine_run,
    slide_entry,
    train_slide_model,
)
from pathviewer.runs import RunInfo, new_run_dir, scan_runs, write_run_info
from pathviewer.session.eta import EtaEstimator
from pathviewer.session.run_list import RunList, run_summary

if TYPE_CHECKING:
    from pathviewer.gui.heatmap.controller import HeatmapController
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.project import ProjectController

log = logging.getLogger(__name__)

#: Methods of the panel: key -> (label, engine).
METHODS = {
    "ngsd": "NGSD (weak slide labels)",
    "naive": "Naive baseline (slide label per patch)",
    "refine-csv": "Label refinement (labels.csv)",
    "refine-project": "Label refinement (open project)",
}
REDRAW_MS = 250
#: Metrics drawn on the loss plot / the [0, 1] plot; other numbers are ignored.
LOSS_METRICS = ("loss", "val_loss")
FRACTION_METRICS = (
    "bank_positive_fraction",
    "bank_instance_auc",
    "val_instance_auc",
    "val_accuracy",
    "changed",
)
CURVE_COLOURS = {
    "loss": "#4c9be8",
    "val_loss": "#f0ad4e",
    "bank_positive_fraction": "#5cb85c",
    "bank_instance_auc": "#e8604c",
    "val_instance_auc": "#f0ad4e",
    "val_accuracy": "#e8604c",
    "changed": "#b07cd8",
}


# --------------------------------------------------------------------------- devices


def device_choices() -> list[tuple[str, str, bool]]:
    """``(value, text, enabled)`` for the device combo: auto, CPU, and CUDA when available."""
    name = cuda_device_name()
    cpu_text = f"CPU ({os.cpu_count() or 1} cores)"
    if name is not None:
        return [
            ("auto", f"Auto — CUDA: {name}", True),
            ("cpu", cpu_text, True),
            ("cuda", f"CUDA: {name}", True),
        ]
    return [
        ("auto", "Auto — CPU (CUDA not available)", True),
        ("cpu", cpu_text, True),
        ("cuda", "CUDA (not available)", False),
    ]


def cuda_device_name() -> str | None:
    """The first CUDA GPU's name, or None, without importing torch when it is not loaded yet.

    Importing torch costs about 500 MB and a second at start-up, for a dock that may never
    train; the NVIDIA driver lists its GPUs under ``/proc`` on Linux.  Once torch is loaded
    (a job ran), its own answer is used.
    """
    if "torch" in sys.modules:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "Model" and value.strip():
                    return value.strip()
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- run folders


# --------------------------------------------------------------------------- jobs


# --------------------------------------------------------------------------- log mirror


class _LogBridge(QObject):
    message = Signal(str)


class QtLogHandler(logging.Handler):
    """A logging handler that forwards formatted records to a Qt signal (any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.bridge = _LogBridge()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bridge.message.emit(self.format(record))
        except RuntimeError:  # the bridge was deleted with the window
            pass


# --------------------------------------------------------------------------- the panel


def _fmt_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainingPanel(QWidget):
    """The Training dock's widget (see the module docstring).

    Signals
    -------
    trainingFinished(object)
        A training run ended normally; the argument is the run folder.
    analysisFinished(object)
        "Analyse this slide" finished; the argument is the :class:`SlideAnalysis`.
    jobStopped()
        Any job of the panel ended (finished, cancelled or failed).
    """

    trainingFinished = Signal(object)
    analysisFinished = Signal(object)
    #: Patch labels were made from the project's regions (how many).
    labelsMade = Signal(int)
    jobStopped = Signal()

    def __init__(
        self,
        window: MainWindow | None = None,
        parent: QWidget | None = None,
        project: ProjectController | None = None,
        heatmap: HeatmapController | None = None,
    ) -> None:
        super().__init__(parent)
        from pathviewer.ml.config import demo_config as ngsd_demo
        from pathviewer.ml.refine_config import demo_config as refine_demo

        self.main_window = window
        self.project_controller = project
        self.heatmap_controller = heatmap
        # Set by install(): Tools > Analyse this slide, enabled with the panel's button.
        self.analyse_action: QAction | None = None
        self.runner: JobRunner | None = None
        self.analysis_runner: JobRunner | None = None
        self.labels_runner: JobRunner | None = None
        self.run_dir: Path | None = None
        self.run_method = ""
        self._curves: dict[str, tuple[pg.PlotDataItem, list[float], list[float]]] = {}
        self._stage = ""
        self._eta = EtaEstimator()
        self._dialog: QMessageBox | None = None
        self.yield_gil = 0.0
        self.analysis_batch_size = 64
        # Curves and bars are redrawn at most every REDRAW_MS: repainting the plots for every
        # event would cost the GUI thread more than the events are worth.
        self._dirty: set[str] = set()
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)

        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)
        top = QFormLayout()
        self.cohort_edit = QLineEdit()
        self.cohort_edit.setPlaceholderText("the open cohort")
        browse = QPushButton("…")
        browse.setFixedWidth(28)
        browse.clicked.connect(self._choose_cohort)
        row = QHBoxLayout()
        row.addWidget(self.cohort_edit, 1)
        row.addWidget(browse)
        top.addRow("Cohort CSV", row)
        self.method_combo = QComboBox()
        for key, text in METHODS.items():
            self.method_combo.addItem(text, key)
        top.addRow("Method", self.method_combo)
        self.labels_edit = QLineEdit()
        self.labels_edit.setPlaceholderText("slide,x,y,width,height,label[,trusted]")
        labels_browse = QPushButton("…")
        labels_browse.setFixedWidth(28)
        labels_browse.clicked.connect(self._choose_labels)
        labels_row = QHBoxLayout()
        labels_row.addWidget(self.labels_edit, 1)
        labels_row.addWidget(labels_browse)
        self.labels_row_widget = QWidget()
        self.labels_row_widget.setLayout(labels_row)
        labels_row.setContentsMargins(0, 0, 0, 0)
        top.addRow("Labels CSV", self.labels_row_widget)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(["Demo (CPU, minutes)", "Paper defaults (GPU)"])
        top.addRow("Preset", self.preset_combo)
        self.device_combo = QComboBox()
        for value, text, enabled in device_choices():
            self.device_combo.addItem(text, value)
            if not enabled:
                model = self.device_combo.model()
                if isinstance(model, QStandardItemModel):  # a plain QComboBox's model
                    item = model.item(self.device_combo.count() - 1)
                    if item is not None:
                        item.setEnabled(False)
        top.addRow("Device", self.device_combo)
        outer.addLayout(top)

        self._ngsd_demo, self._refine_demo = ngsd_demo, refine_demo
        self.ngsd_form = SettingsForm(ngsd_demo(), exclude=("device", "method"))
        self.refine_form = SettingsForm(refine_demo(), exclude=("device",))
        self.forms = QTabWidget()
        for name, form in (("NGSD settings", self.ngsd_form), ("Refinement", self.refine_form)):
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(form)
            self.forms.addTab(scroll, name)
        self.runs_tree = QTreeWidget()
        self.runs_tree.setHeaderLabels(["Run", "Method", "Started", "Status", "Result"])
        self.runs_tree.setRootIsDecorated(False)
        self.runs_tree.itemSelectionChanged.connect(self._on_run_clicked)
        #: The runs and the selected one (the list renders it).
        self.run_list = RunList()
        self.run_list.subscribe(self._render_runs)
        runs_box = QWidget()
        runs_layout = QVBoxLayout(runs_box)
        runs_layout.setContentsMargins(0, 0, 0, 0)
        runs_layout.addWidget(self.runs_tree, 1)
        runs_buttons = QHBoxLayout()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_runs)
        self.analyse_button = QPushButton("Analyse this slide")
        self.analyse_button.setToolTip("Score the open slide with the selected run's model")
        self.analyse_button.clicked.connect(self.analyse_current_slide)
        runs_buttons.addWidget(self.refresh_button)
        runs_buttons.addStretch(1)
        runs_buttons.addWidget(self.analyse_button)
        runs_layout.addLayout(runs_buttons)
        self.forms.addTab(runs_box, "Runs")

        controls = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.cancel_button = QPushButton("Cancel")
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel)
        for button in (self.start_button, self.pause_button, self.cancel_button):
            controls.addWidget(button)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        self.message_label.setStyleSheet("color: #f0ad4e;")

        monitor = QWidget()
        mon = QVBoxLayout(monitor)
        mon.setContentsMargins(0, 0, 0, 0)
        mon.addLayout(controls)
        mon.addWidget(self.message_label)
        self.stage_label = QLabel("Idle")
        self.step_bar = QProgressBar()
        self.step_bar.setFormat("%v / %m")
        self.step_bar.setValue(0)
        self.epoch_label = QLabel("")
        self.eta_label = QLabel("")
        # Fixed widths: a changing text must not re-layout the dock on every event.
        self.epoch_label.setMinimumWidth(90)
        self.eta_label.setMinimumWidth(90)
        status_row = QHBoxLayout()
        status_row.addWidget(self.stage_label, 1)
        status_row.addWidget(self.epoch_label)
        status_row.addWidget(self.eta_label)
        mon.addLayout(status_row)
        mon.addWidget(self.step_bar)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setBackground("#1d1f22")
        self.plots.setMinimumHeight(180)
        self.loss_plot = self.plots.addPlot(title="loss")
        legend_brush = pg.mkBrush(29, 31, 34, 210)  # legends stay readable over the curves
        self.loss_plot.addLegend(offset=(-5, 5), brush=legend_brush)
        self.loss_plot.showGrid(x=True, y=True, alpha=0.2)
        self.loss_plot.setLabel("bottom", "step")
        self.fraction_plot = self.plots.addPlot(title="bank / validation")
        self.fraction_plot.addLegend(offset=(5, -5), brush=legend_brush)
        self.fraction_plot.showGrid(x=True, y=True, alpha=0.2)
        self.fraction_plot.setYRange(0, 1)
        self.fraction_plot.setLabel("bottom", "step")
        mon.addWidget(self.plots, 2)
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("log")
        # At least five lines: a one-line log hides what a run just said.
        self.log_view.setMinimumHeight(5 * self.log_view.fontMetrics().lineSpacing() + 12)
        mon.addWidget(self.log_view, 1)

        splitter = QSplitter(Qt.Orientation.Vertical)
        splitter.addWidget(self.forms)
        splitter.addWidget(monitor)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        outer.addWidget(splitter, 1)

        self.log_handler = QtLogHandler()
        self.log_handler.bridge.message.connect(self.append_log)
        logging.getLogger("pathviewer").addHandler(self.log_handler)
        if logging.getLogger("pathviewer").level == logging.NOTSET:
            logging.getLogger("pathviewer").setLevel(logging.INFO)
        self.destroyed.connect(lambda *_: self._remove_log_handler())

        self.method_combo.currentIndexChanged.connect(self._on_method_changed)
        self.preset_combo.currentIndexChanged.connect(self._on_preset_changed)
        self.ngsd_form.validityChanged.connect(lambda *_: self._update_buttons())
        self.refine_form.validityChanged.connect(lambda *_: self._update_buttons())
        self.cohort_edit.textChanged.connect(lambda *_: self._update_buttons())
        self.labels_edit.textChanged.connect(lambda *_: self._update_buttons())
        if window is not None:
            window.slide_view.slideChanged.connect(lambda *_: self._update_buttons())
        # Long choices ("Auto — CPU (CUDA not available)") must not set the dock's width: they
        # are elided in a narrow dock and shown whole in the open list.
        for combo in self.findChildren(QComboBox):
            combo.setSizeAdjustPolicy(
                QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.setMinimumContentsLength(8)
        self._on_method_changed()
        self.refresh_runs()

    # -- inputs ------------------------------------------------------------------------------

    def _remove_log_handler(self) -> None:
        logging.getLogger("pathviewer").removeHandler(self.log_handler)

    @property
    def method(self) -> str:
        """The chosen method key (see :data:`METHODS`)."""
        return str(self.method_combo.currentData())

    def set_method(self, key: str) -> None:
        """Choose a method by key."""
        self.method_combo.setCurrentIndex(self.method_combo.findData(key))

    @property
    def device(self) -> str:
        """The chosen device (``auto``, ``cpu`` or ``cuda``)."""
        return str(self.device_combo.currentData())

    def cohort_csv(self) -> Path | None:
        """The cohort to train on: the typed path, else the window's open cohort."""
        text = self.cohort_edit.text().strip()
        if text:
            return Path(text)
        if self.main_window is not None and self.main_window.cohort_path is not None:
            return Path(self.main_window.cohort_path)
        return None

    def project_dir(self) -> Path | None:
        """The open project's folder, when the window has a project open."""
        controller = self.project_controller
        project = controller.project if controller is not None else None
        return project.folder if project is not None else None

    def _settings(self) -> QSettings:
        """The window's settings (the application's when the panel stands alone)."""
        return self.main_window.settings if self.main_window is not None else QSettings()

    def _choose_cohort(self) -> None:
        path = file_dialogs.open_file(
            self, self._settings(), "cohorts", "Cohort CSV", "Cohort CSV (*.csv)"
        )
        if path:
            self.cohort_edit.setText(path)

    def _choose_labels(self) -> None:
        path = file_dialogs.open_file(
            self, self._settings(), "labels", "Patch labels", "Labels CSV (*.csv)"
        )
        if path:
            self.labels_edit.setText(path)

    def _on_method_changed(self, *_args: object) -> None:
        refine = self.method.startswith("refine")
        self.forms.setCurrentIndex(1 if refine else 0)
        self.labels_row_widget.setEnabled(self.method == "refine-csv")
        self._update_buttons()

    def _on_preset_changed(self, index: int) -> None:
        from pathviewer.ml.config import NGSDConfig
        from pathviewer.ml.refine_config import RefineConfig

        if index == 0:
            self.ngsd_form.set_value(self._ngsd_demo())
            self.refine_form.set_value(self._refine_demo())
        else:
            self.ngsd_form.set_value(NGSDConfig(magnification=20.0))
            self.refine_form.set_value(RefineConfig())

    def config(self) -> Any:
        """The settings of the chosen method (raises ValueError/TrainingError when invalid)."""
        if self.method.startswith("refine"):
            cfg = self.refine_form.value()
        else:
            cfg = self.ngsd_form.value()
            cfg.method = self.method
        cfg.device = self.device
        return cfg

    def problem(self) -> str:
        """Why Start is disabled ('' when a run can start)."""
        form = self.refine_form if self.method.startswith("refine") else self.ngsd_form
        if not form.is_valid:
            return form.message
        if self.method == "refine-csv":
            text = self.labels_edit.text().strip()
            if not text:
                return "Choose a labels.csv for label refinement."
            if not Path(text).is_file():
                return f"{text}: no such labels file"
        elif self.method == "refine-project":
            if self.project_dir() is None:
                return "Open a project (File > Open project) to refine its labels."
        else:
            cohort = self.cohort_csv()
            if cohort is None:
                return "Open a cohort or choose a cohort CSV."
            if not cohort.is_file():
                return f"{cohort}: no such cohort CSV"
        return ""

    def _update_buttons(self) -> None:
        busy = self.runner is not None
        problem = "" if busy else self.problem()
        self.start_button.setEnabled(not busy and not problem)
        self.pause_button.setEnabled(busy)
        self.cancel_button.setEnabled(busy)
        if not busy:
            self.pause_button.setText("Pause")
        self.show_message(problem)
        run = self.selected_run()
        slide_open = (
            self.main_window is not None and self.main_window.slide_view.current_slide is not None
        )
        self.analyse_button.setEnabled(
            self.analysis_runner is None and run is not None and run.can_score_slides and slide_open
        )
        if self.analyse_action is not None:
            self.analyse_action.setEnabled(self.analyse_button.isEnabled())

    def show_message(self, text: str) -> None:
        """Show why Start is disabled (or another hint); hidden when empty."""
        self.message_label.setText(text)
        self.message_label.setVisible(bool(text))

    # -- runs --------------------------------------------------------------------------------

    def refresh_runs(self, select: Path | None = None) -> None:
        """Re-scan :func:`runs_dir` and fill the runs list (``select`` a folder)."""
        self.run_list.refresh(select)

    def _render_runs(self) -> None:
        selected = self.run_list.selected
        # Rebuilding the tree must not send selections back to the model.
        self.runs_tree.blockSignals(True)
        try:
            self.runs_tree.clear()
            for run in self.run_list.runs:
                item = QTreeWidgetItem(
                    [run.path.name, run.method, run.started, run.status, run_summary(run)]
                )
                item.setData(0, Qt.ItemDataRole.UserRole, str(run.path))
                item.setToolTip(0, str(run.path))
                self.runs_tree.addTopLevelItem(item)
                if selected is not None and run.path == selected.path:
                    item.setSelected(True)
                    self.runs_tree.setCurrentItem(item)
        finally:
            self.runs_tree.blockSignals(False)
        for column in range(3):
            self.runs_tree.resizeColumnToContents(column)
        self._update_buttons()

    def _on_run_clicked(self) -> None:
        item = self.runs_tree.currentItem()
        self.run_list.select(Path(item.data(0, Qt.ItemDataRole.UserRole)) if item else None)
        self._update_buttons()

    def selected_run(self) -> RunInfo | None:
        """The selected run (the run list's selection)."""
        return self.run_list.selected

    def select_run(self, path: Path) -> None:
        """Select the run in folder ``path`` (re-scanning the folder)."""
        self.refresh_runs(select=path)

    # -- training ----------------------------------------------------------------------------

    def start(self) -> bool:
        """Start a run with the panel's settings; False (with the reason shown) when it cannot."""
        problem = self.problem()
        if problem or self.runner is not None:
            self.show_message(problem or "A run is in progress.")
            return False
        try:
            cfg = self.config()
        except Exception as error:  # noqa: BLE001 - shown to the user, nothing started
            self.show_message(str(error))
            return False
        method = self.method
        cohort = self.cohort_csv()
        engine_method = "refine" if method.startswith("refine") else method
        run_dir = new_run_dir(engine_method)
        factory: Callable[[], Generator[Progress, None, Any]]
        if method.startswith("refine"):
            labels = Path(self.labels_edit.text().strip()) if method == "refine-csv" else None
            project = self.project_dir() if method == "refine-project" else None
            source = str(labels or project)

            def factory() -> Generator[Progress, None, Any]:
                return refine_run(run_dir, cfg, labels, project)

        else:
            assert cohort is not None
            source = str(cohort)

            def factory() -> Generator[Progress, None, Any]:
                return train_slide_model(cohort, run_dir, cfg)

        self.start_job(factory, run_dir, engine_method, source)
        return True

    def start_job(
        self,
        factory: Callable[[], Generator[Progress, None, Any]],
        run_dir: Path,
        method: str,
        source: str,
        demo: bool = False,
    ) -> JobRunner:
        """Run a training job generator into ``run_dir`` with the panel's progress display."""
        if self.runner is not None:
            raise RuntimeError("a run is in progress")
        self.run_dir, self.run_method = run_dir, method
        write_run_info(
            run_dir,
            method=method,
            cohort=source,
            status="running",
            started=time.strftime("%Y-%m-%d %H:%M:%S"),
            pid=os.getpid(),
            demo=demo,
        )
        self._reset_monitor()
        self.append_log(f"run {run_dir.name}: {method} on {source}")
        runner = JobRunner(factory, self, yield_gil=self.yield_gil)
        runner.progress.connect(self._on_progress)
        runner.finished.connect(self._on_finished)
        runner.failed.connect(self._on_failed)
        runner.cancelled.connect(self._on_cancelled)
        runner.stopped.connect(self._on_stopped)
        self.runner = runner
        self._update_buttons()
        self.refresh_runs(select=run_dir)
        runner.start()
        return runner

    def toggle_pause(self) -> None:
        """Pause or resume the run."""
        if self.runner is None:
            return
        if self.runner.paused:
            self.runner.resume()
            self._eta.reset()  # the pause must not count in the ETA
            self.pause_button.setText("Pause")
            self.append_log("resumed")
        else:
            self.runner.pause()
            self.pause_button.setText("Resume")
            self.stage_label.setText(f"{self._stage} (paused)")
            self.append_log("paused")

    def cancel(self) -> None:
        """Cancel the run (the engine keeps its last checkpoint valid)."""
        if self.runner is not None:
            self.append_log("cancelling…")
            self.runner.cancel()

    def _reset_monitor(self) -> None:
        self.loss_plot.clear()
        self.fraction_plot.clear()
        for plot in (self.loss_plot, self.fraction_plot):
            if plot.legend is not None:
                plot.legend.clear()
        self._curves = {}
        self._dirty.clear()
        self._stage = ""
        self._eta.reset()
        self.step_bar.setRange(0, 1)
        self.step_bar.setValue(0)
        self.epoch_label.setText("")
        self.eta_label.setText("")
        # Titles and axes say what this run's curves are; the last run's ranges do not stay.
        refine = self.method.startswith("refine")
        titles = (
            ("training loss", "labels / validation") if refine else ("loss", "bank / validation")
        )
        for plot, title in zip((self.loss_plot, self.fraction_plot), titles, strict=True):
            plot.setTitle(title)
            plot.setLabel("bottom", "round" if refine else "step")
            plot.enableAutoRange()
        self.fraction_plot.setYRange(0, 1)

    def _on_progress(self, event: Progress) -> None:
        if event.message.startswith("warning:") or event.stage == "warning":
            # The engine's own warnings (degeneration guard, slide unlike the training slides).
            self.append_log(event.message)
            self.show_message(event.message.removeprefix("warning: "))
            if event.stage == "warning":
                return
        if event.stage != self._stage:
            self._stage = event.stage
            self._eta.reset()
            if event.message:
                self.append_log(f"{event.stage}: {event.message}")
        total = event.total or 0
        self.step_bar.setRange(0, max(total, 1) if total else 0)
        self.step_bar.setValue(min(event.done, total) if total else 0)
        paused = " (paused)" if self.runner is not None and self.runner.paused else ""
        self.stage_label.setText(f"{event.stage}{paused}")
        eta = self._eta.update(time.perf_counter(), event.done, total)
        self.eta_label.setText(f"ETA {_fmt_duration(eta)}" if eta is not None else "")
        metrics = event.metrics or {}
        if "epoch" in metrics:
            self.epoch_label.setText(f"epoch {metrics['epoch']:.2f}")
        elif "round" in metrics:
            self.epoch_label.setText(f"round {int(metrics['round'])}")
        if metrics:
            self._add_points(event, metrics)

    def _add_points(self, event: Progress, metrics: dict[str, float]) -> None:
        x = float(metrics.get("step", metrics.get("round", event.done)))
        names = [n for n in (*LOSS_METRICS, *FRACTION_METRICS) if n in metrics]
        for name in names:
            value = float(metrics[name])
            if not math.isfinite(value):
                continue
            if name not in self._curves:
                plot = self.loss_plot if name in LOSS_METRICS else self.fraction_plot
                pen = pg.mkPen(CURVE_COLOURS.get(name, "#dddddd"), width=2)
                curve = plot.plot([], [], pen=pen, name=name.replace("_", " "), antialias=True)
                self._curves[name] = (curve, [], [])
            _curve, xs, ys = self._curves[name]
            if xs and xs[-1] == x and ys[-1] == value:
                continue  # the engine repeats its last metrics between log steps
            xs.append(x)
            ys.append(value)
            self._dirty.add(name)
        if self._dirty and not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw(self) -> None:
        for name in self._dirty:
            curve, xs, ys = self._curves[name]
            curve.setData(xs, ys)
        self._dirty.clear()

    def curve_data(self, name: str) -> tuple[list[float], list[float]]:
        """The points received for a live curve: (x, y)."""
        _curve, xs, ys = self._curves.get(name, (None, [], []))
        return list(xs), list(ys)

    def _on_finished(self, result: object) -> None:
        completed = bool(getattr(result, "completed", True))
        status = "completed" if completed else "stopped early"
        guard = list(getattr(result, "guard", []) or [])
        if getattr(result, "degenerate", False):
            status = "degenerate"
            self.show_message(
                "Training degenerated; do not trust this model's heatmaps: " + "; ".join(guard)
            )
        if getattr(result, "collapsed", False):
            status = "collapsed"
            lost = ", ".join(getattr(result, "lost_classes", []) or [])
            self.show_message(
                f"The label-refinement model collapsed: it predicts almost no {lost}. "
                "No labels were flagged; check that class's labels, or train longer."
            )
        assert self.run_dir is not None
        write_run_info(self.run_dir, status=status, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        self.stage_label.setText(f"finished: {self.run_dir.name}")
        self.eta_label.setText("")
        self.append_log(f"run {self.run_dir.name} {status}")
        if self.method == "refine-project" and status == "completed":
            self.append_log(self.correction_effect(self.run_dir))
        self.trainingFinished.emit(self.run_dir)

    def correction_effect(self, run_dir: Path) -> str:
        """One paragraph: what this refinement run changed against the previous one on the
        same project (flags gone and new, agreement with the trusted labels)."""
        from pathviewer.core.run_effect import compare_refinement_runs

        previous = [
            r
            for r in scan_runs()
            if r.path != run_dir
            and r.method == "refine-project"
            and r.status == "completed"
            and (r.path / "flags.csv").is_file()
        ]
        if not previous:
            return "first refinement run of this project: nothing to compare with yet"
        before = max(previous, key=lambda r: r.started).path
        project = self.project_controller.project if self.project_controller else None
        trusted = None
        if project is not None:
            trusted = {
                (str(Path(r.slide_path)), r.x, r.y, r.width, r.height): r.label
                for r in project.patch_labels(trusted=True)
            }
        try:
            report = compare_refinement_runs(before, run_dir, trusted)
        except PathViewerError as error:
            return f"cannot compare with {before.name}: {error}"
        flags = report["flags"]
        text = (
            f"against {before.name}: {flags['disappeared']} flags gone, {flags['new']} new,"
            f" {flags['kept']} kept; {report['refined_changed']} refined labels changed"
        )
        accuracy = report.get("trusted_accuracy")
        if accuracy and accuracy["after"] is not None:
            text += (
                f"; agreement with the {report['trusted_patches']} trusted labels"
                f" {accuracy['before']:.0%} -> {accuracy['after']:.0%}"
            )
        return text

    def _on_cancelled(self) -> None:
        if self.run_dir is not None:
            write_run_info(
                self.run_dir, status="cancelled", finished=time.strftime("%Y-%m-%d %H:%M:%S")
            )
            self.append_log(f"run {self.run_dir.name} cancelled; its last checkpoint is kept")
        self.stage_label.setText("cancelled")
        self.eta_label.setText("")

    def _on_failed(self, title: str, details: str) -> None:
        if self.run_dir is not None:
            write_run_info(
                self.run_dir,
                status="failed",
                error=details.splitlines()[0] if details else title,
                finished=time.strftime("%Y-%m-%d %H:%M:%S"),
            )
        self.stage_label.setText("failed")
        self.append_log(f"{title}: {details.splitlines()[0] if details else ''}")
        self.show_error(title, details)

    def show_error(self, title: str, details: str) -> None:
        """A non-modal error dialog: the first line, with the rest under "Show Details"."""
        first = details.splitlines()[0] if details else title
        box = QMessageBox(
            QMessageBox.Icon.Critical, title, first, QMessageBox.StandardButton.Ok, self
        )
        box.setDetailedText(details)
        box.open()
        self._dialog = box

    def _on_stopped(self) -> None:
        self._redraw()
        if self.runner is not None:
            self.runner.deleteLater()  # its thread has finished
        self.runner = None
        self.refresh_runs(select=self.run_dir)
        self._update_buttons()
        self.jobStopped.emit()

    # -- patch labels from drawn regions -------------------------------------------------------

    def make_patch_labels(
        self, patch_size: int = 256, background_class: str = "Normal"
    ) -> JobRunner | None:
        """Patch labels from the open project's regions (what label refinement trains on)."""
        project = self.project_dir()
        if project is None:
            self.show_message("Open a project (File > Open project) to make its patch labels.")
            return None
        if self.labels_runner is not None:
            return None

        def factory() -> Any:
            return label_project_patches(project, patch_size, background_class)

        runner = JobRunner(factory, self, yield_gil=self.yield_gil)
        runner.progress.connect(
            lambda event: self.stage_label.setText(f"patch labels: {event.message}")
        )
        runner.finished.connect(self._on_labels_finished)
        runner.failed.connect(self.show_error)
        runner.stopped.connect(self._on_labels_stopped)
        self.labels_runner = runner
        self.append_log(f"making patch labels of {patch_size} px from the project's regions…")
        runner.start()
        return runner

    def _on_labels_finished(self, count: object) -> None:
        self.append_log(
            f"{count} patch labels made from the drawn regions; Label refinement (open project)"
            " can train on them"
        )
        self.stage_label.setText(f"{count} patch labels made")
        self.labelsMade.emit(int(count))  # type: ignore[call-overload]

    def _on_labels_stopped(self) -> None:
        if self.labels_runner is not None:
            self.labels_runner.deleteLater()
        self.labels_runner = None

    def choose_and_make_patch_labels(self) -> None:
        """Tools > Patch labels from annotations…: ask the patch size and background class."""
        size, ok = QInputDialog.getInt(
            self, "Patch labels from annotations", "Patch side (level-0 px):", 256, 32, 4096, 32
        )
        if not ok:
            return
        project = self.project_controller.project if self.project_controller else None
        classes = list(project.classes()) if project is not None else ["Normal"]
        default = classes.index("Normal") if "Normal" in classes else 0
        background, ok = QInputDialog.getItem(
            self,
            "Patch labels from annotations",
            "Class of tissue outside every region:",
            classes,
            default,
            False,
        )
        if ok:
            self.make_patch_labels(size, background)

    # -- inference ---------------------------------------------------------------------------

    def analyse_current_slide(self, run: RunInfo | None = None) -> JobRunner | None:
        """Score the open slide with ``run``'s model (default: the selected run)."""
        window = self.main_window
        run = run or self.selected_run()
        if window is None or window.slide_view.current_slide is None:
            self.show_message("Open a slide to analyse.")
            return None
        if run is None or not run.can_score_slides:
            self.show_message("Select a finished NGSD / naive run in the Runs tab.")
            return None
        if self.analysis_runner is not None:
            return self.analysis_runner
        slide = window.slide_view.current_slide
        controller = self.heatmap_controller
        cohort_entry = controller.cohort_entry(slide) if controller is not None else None
        entry = slide_entry(slide.path, cohort_entry)
        out_dir = run.path / "analyses" / Path(entry.slide).stem
        model_path, device, batch = run.model_path, self.device, self.analysis_batch_size
        self.append_log(f"analysing {entry.slide} with {run.path.name}")

        def factory() -> Generator[Progress, None, SlideAnalysis]:
            return analyse_slide(model_path, entry, out_dir, device, batch)

        runner = JobRunner(factory, self, yield_gil=self.yield_gil)
        runner.progress.connect(self._on_analysis_progress)
        runner.finished.connect(self._on_analysis_finished)
        runner.failed.connect(self.show_error)
        runner.stopped.connect(self._on_analysis_stopped)
        self.analysis_runner = runner
        self._update_buttons()
        runner.start()
        return runner

    def _on_analysis_progress(self, event: Progress) -> None:
        controller = self.heatmap_controller
        if event.stage == "heatmap" and controller is not None:
            controller.set_heatmap(event.payload, source="analysis (in progress)")
        elif event.stage == "inference" and controller is not None and event.payload:
            controller.update_patches(
                event.payload["rows"], event.payload["cols"], event.payload["probs"]
            )
        if self.runner is None:  # the progress bar is free: show the analysis on it
            self.stage_label.setText(f"analysing: {event.stage}")
            self.step_bar.setRange(0, max(event.total or 0, 1))
            self.step_bar.setValue(event.done)

    def _on_analysis_finished(self, result: SlideAnalysis) -> None:
        controller = self.heatmap_controller
        run_dir = result.out_dir.parent.parent
        try:
            point = read_operating_point(run_dir / "model.pt")
        except PathViewerError as error:
            self.append_log(f"operating point ignored: {error}")
            point = None
        threshold = point.threshold if point is not None else 0.5
        if controller is not None:
            # The final values replace the progressive ones (identical for patch classifiers;
            # ABMIL's attention scores only exist at the end).
            controller.pred_dir = None
            controller.operating_point = point
            controller.model_path = run_dir / "model.pt"
            controller.set_heatmap(result.heatmap, source=f"{run_dir.name}")
        if self.main_window is not None:
            self.main_window.scores.update(
                {result.heatmap.slide: (result.score, int(result.score >= threshold))},
                source=f"analysis by {run_dir.name}",
            )
        self.append_log(f"slide score {result.score:.3f}; predictions in {result.out_dir}")
        self.analysisFinished.emit(result)

    def _on_analysis_stopped(self) -> None:
        if self.analysis_runner is not None:
            self.analysis_runner.deleteLater()
        self.analysis_runner = None
        if self.runner is None:  # the bar showed the analysis: say it is over
            self.stage_label.setText("analysis finished")
            self.step_bar.setRange(0, 1)
            self.step_bar.setValue(1)
        self._update_buttons()
        self.jobStopped.emit()

    # -- log ---------------------------------------------------------------------------------

    def append_log(self, text: str) -> None:
        """Add a line to the log view (which follows the newest line)."""
        self.log_view.appendPlainText(text)
        bar = self.log_view.verticalScrollBar()
        bar.setValue(bar.maximum())

    def busy(self) -> bool:
        """Whether a training run or an analysis is running."""
        return any(
            runner is not None and runner.is_running()
            for runner in (self.runner, self.analysis_runner)
        )

    def confirm_close(self) -> bool:
        """Ask whether to cancel the running job and close (True: close)."""
        answer = QMessageBox.question(
            self,
            "A job is running",
            f"{self._stage or 'A job'} is still running. Cancel it and close PathViewer?\n\n"
            "A training run keeps its last checkpoint: Train > Resume (or `pathviewer train"
            " --resume`) continues it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def shutdown(self, wait_ms: int = 30_000) -> None:
        """Cancel running jobs and wait for their threads (window closing)."""
        for runner in (self.runner, self.analysis_runner, self.labels_runner):
            if runner is not None:
                runner.cancel()
                runner.wait(wait_ms)
        self._remove_log_handler()


def install(
    window: MainWindow, project: ProjectController, heatmap: HeatmapController
) -> TrainingPanel:
    """Add the Training dock and its Tools menu actions; return the dock's panel.

    Parameters
    ----------
    project
        Refinement runs read the open project's labels.
    heatmap
        Analyses and predictions show their heatmaps there.
    """
    panel = TrainingPanel(window, project=project, heatmap=heatmap)
    dock = QDockWidget("Training", window)
    dock.setObjectName("dock-training")
    dock.setWidget(panel)
    # Left, under the cohort list: the right side holds the properties/heatmap/annotation docks.
    window.add_dock(dock, Qt.DockWidgetArea.LeftDockWidgetArea, "training")
    dock.hide()

    def show_dock() -> None:
        dock.show()
        dock.raise_()

    train = QAction("&Train a model…", window)
    train.triggered.connect(show_dock)
    analyse = QAction("&Analyse this slide", window)
    analyse.setShortcut(QKeySequence("Ctrl+Shift+A"))
    analyse.setToolTip("Score the open slide with the selected run's model; the heatmap fills in")
    analyse.triggered.connect(lambda: panel.analyse_current_slide())
    tools = window.menu("tools")
    tools.addSeparator()
    tools.addAction(train)
    tools.addAction(analyse)
    panel.analyse_action = analyse
    labels = QAction("&Patch labels from annotations…", window)
    labels.setToolTip(
        "Label the tissue patches of the project's slides by the regions drawn on them, so"
        " that label refinement can train on them and flag the doubtful ones"
    )

    def make_labels() -> None:
        show_dock()
        panel.choose_and_make_patch_labels()

    labels.triggered.connect(make_labels)
    tools.addAction(labels)
    panel._update_buttons()
    # Closing the window must not leave a worker thread running (Qt aborts on that).
    window.installEventFilter(_CloseFilter(panel, window))
    return panel


class _CloseFilter(QObject):
    """Asks before a user's close cancels a running job, then stops the job threads."""

    def __init__(self, panel: TrainingPanel, parent: QObject) -> None:
        super().__init__(parent)
        self.panel = panel

    def eventFilter(self, watched: QObject, event: Any) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.Close:
            # Only a close the user asked for (the title bar, File > Quit) asks; a program
            # closing its window (tests, a screenshot) does not wait for an answer.
            by_user = event.spontaneous() or bool(watched.property("closing_by_user"))
            if by_user and self.panel.busy() and not self.panel.confirm_close():
                event.ignore()
                return True
            self.panel.shutdown()
        return False
