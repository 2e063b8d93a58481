"""The Triage dock: the open cohort's slides in the order a pathologist should look at them.

What the window gains (``install(window, project, heatmap, ensure_project)``)
-----------------------------------------------------------------------------
* ``window.context.triage`` (:class:`TriagePanel`): the cohort ranked by model score, by
  disagreement with the slide label, or by uncertainty (:mod:`pathviewer.session.triage`),
  each slide with a thumbnail carrying its heatmap.
* Keys on the slide view and the list: **N** next undecided slide, **Shift+N** the previous
  one, **T** the next top region of the slide at the chosen magnification.
* Agree / Disagree / Reviewed with a note, stored in the project (``slide_reviews``), with the
  score the pathologist saw.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QIcon, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.errors import PathViewerError
from pathviewer.core.heatmap import blend_heatmap
from pathviewer.core.identity import slide_path_key
from pathviewer.core.predictions import load_slide_heatmap
from pathviewer.core.slide import open_slide
from pathviewer.core.store import Project
from pathviewer.gui.heatmap.overlay import colormap
from pathviewer.gui.viewer.tiles import rgb_to_qimage
from pathviewer.session.triage import (
    DEFAULT_THRESHOLD,
    TRIAGE_ORDERS,
    TriageItem,
    next_item,
    summary,
    triage_order,
)

if TYPE_CHECKING:
    from pathviewer.gui.heatmap.controller import HeatmapController
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.project import ProjectController

log = logging.getLogger(__name__)

#: Longest side of a slide's thumbnail in the queue.
THUMB_PX = 96

#: Magnifications offered for walking through a slide's top regions.
REGION_MAGNIFICATIONS = (5.0, 10.0, 20.0)

_STATUS_MARK = {"agree": "✓ agree", "disagree": "✗ disagree", "reviewed": "• reviewed"}


class TriagePanel(QWidget):
    """The Triage dock's contents (see the module docstring).

    Parameters
    ----------
    ensure_project
        Returns the open project, opening the default one when none is (decisions need one).
    """

    def __init__(
        self,
        window: MainWindow,
        project: ProjectController,
        heatmap: HeatmapController,
        ensure_project: Callable[[], Project],
    ) -> None:
        super().__init__(window)
        self.main_window = window
        self.project_controller = project
        self.heatmap = heatmap
        self.ensure_project = ensure_project
        self.threshold = DEFAULT_THRESHOLD
        self.items: list[TriageItem] = []
        self._region_index = -1
        self._thumbs: dict[tuple[str, str], QIcon] = {}
        self._pending_thumbs: list[TriageItem] = []
        self._thumb_timer = QTimer(self)
        self._thumb_timer.setInterval(0)
        self._thumb_timer.timeout.connect(self._make_next_thumbnail)

        self.order_combo = QComboBox()
        for index, (name, (label, description)) in enumerate(TRIAGE_ORDERS.items()):
            self.order_combo.addItem(label, name)
            self.order_combo.setItemData(index, description, Qt.ItemDataRole.ToolTipRole)
        self.order_hint = QLabel(TRIAGE_ORDERS["score"][1])
        self.order_hint.setWordWrap(True)
        self.order_hint.setStyleSheet("color: palette(mid);")
        self.summary_label = QLabel("Open a cohort and load its predictions to triage it")
        self.summary_label.setWordWrap(True)
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMB_PX, THUMB_PX))
        self.list.setUniformItemSizes(True)
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Note (saved with the decision)")
        self.agree_button = QPushButton("Agree")
        self.disagree_button = QPushButton("Disagree")
        self.reviewed_button = QPushButton("Reviewed")
        for button, status in (
            (self.agree_button, "agree"),
            (self.disagree_button, "disagree"),
            (self.reviewed_button, "reviewed"),
        ):
            button.clicked.connect(lambda _checked=False, s=status: self.decide(s))
        self.next_button = QPushButton("Next slide (N)")
        self.region_button = QPushButton("Next region (T)")
        self.magnification_combo = QComboBox()
        for magnification in REGION_MAGNIFICATIONS:
            self.magnification_combo.addItem(f"{magnification:g}×", magnification)
        self.magnification_combo.setCurrentIndex(1)

        order_row = QHBoxLayout()
        order_row.addWidget(QLabel("Order"))
        order_row.addWidget(self.order_combo, 1)
        decide_row = QHBoxLayout()
        for button in (self.agree_button, self.disagree_button, self.reviewed_button):
            decide_row.addWidget(button)
        walk_row = QHBoxLayout()
        walk_row.addWidget(self.next_button)
        walk_row.addWidget(self.region_button)
        walk_row.addWidget(self.magnification_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(order_row)
        layout.addWidget(self.order_hint)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.list, 1)
        layout.addLayout(walk_row)
        layout.addWidget(self.note_edit)
        layout.addLayout(decide_row)

        self.order_combo.currentIndexChanged.connect(lambda _index: self.refresh())
        self.list.itemActivated.connect(self._on_activated)
        self.list.itemClicked.connect(self._on_activated)
        self.next_button.clicked.connect(lambda: self.go_next(1))
        self.region_button.clicked.connect(self.next_region)
        window.scores.subscribe(lambda _changed: self.refresh())
        project.projectChanged.connect(lambda _project: self.refresh())
        window.slide_view.slideChanged.connect(self._on_slide_changed)
        heatmap.heatmapChanged.connect(lambda _heatmap: self._on_heatmap_changed())

    # -- the queue ---------------------------------------------------------------------------

    @property
    def order(self) -> str:
        """The order shown (a key of :data:`TRIAGE_ORDERS`)."""
        return str(self.order_combo.currentData())

    def set_order(self, order: str) -> None:
        """Show the queue in ``order``."""
        index = self.order_combo.findData(order)
        if index < 0:
            raise ValueError(f"unknown triage order {order!r}")
        self.order_combo.setCurrentIndex(index)

    def update_threshold(self) -> None:
        """Call slides at the operating point of the predictions shown (else 0.5)."""
        point = self.heatmap.operating_point
        self.threshold = point.threshold if point is not None else DEFAULT_THRESHOLD

    def build_items(self) -> list[TriageItem]:
        """The cohort's slides with their scores, labels and decisions, in cohort order."""
        project = self.project_controller.project
        decisions = project.slide_reviews() if project is not None else {}
        items = []
        for entry in self.main_window.cohort_entries:
            score = self.main_window.scores.get(entry.slide)
            status, note = "", ""
            if project is not None:
                slide_id = project.slide_id(slide_path_key(entry.path))
                record = decisions.get(slide_id) if slide_id is not None else None
                if record is not None:
                    status, note = record.status, record.note
            items.append(
                TriageItem(
                    entry.slide,
                    str(entry.path),
                    entry.label,
                    None if score is None else score.score,
                    status,
                    note,
                )
            )
        return items

    def refresh(self) -> None:
        """Rebuild the list from the cohort, the scores and the project."""
        current = self.current_key()
        self.order_hint.setText(TRIAGE_ORDERS[self.order][1])
        self.update_threshold()
        self.items = triage_order(self.build_items(), self.order, self.threshold)
        self.list.blockSignals(True)
        self.list.clear()
        for item in self.items:
            row = QListWidgetItem(self._text(item))
            row.setData(Qt.ItemDataRole.UserRole, item.key)
            icon = self._thumbs.get(self._thumb_key(item))
            if icon is not None:
                row.setIcon(icon)
            self.list.addItem(row)
            if item.key == current:
                self.list.setCurrentItem(row)
        self.list.blockSignals(False)
        self.summary_label.setText(
            summary(self.items, self.threshold) if self.items else "Open a cohort to triage it"
        )
        self._queue_thumbnails()

    def _text(self, item: TriageItem) -> str:
        score = "not scored" if item.score is None else f"score {item.score:.2f}"
        label = {None: "label ?", 0: "label negative", 1: "label positive"}[item.label]
        lines = [item.key, f"{score} · {label}"]
        if item.disagrees(self.threshold):
            lines[1] += " · model disagrees"
        if item.status:
            lines.append(_STATUS_MARK[item.status] + (f": {item.note}" if item.note else ""))
        return "\n".join(lines)

    def current_key(self) -> str | None:
        """The cohort name of the slide shown, when it is in the queue."""
        slide = self.main_window.slide_view.current_slide
        if slide is None:
            return None
        key = slide_path_key(slide.path)
        for item in self.items:
            if slide_path_key(item.path) == key:
                return item.key
        return None

    def item(self, key: str) -> TriageItem | None:
        return next((item for item in self.items if item.key == key), None)

    # -- moving ------------------------------------------------------------------------------

    def go_next(self, step: int = 1) -> TriageItem | None:
        """Open the next (``step`` 1) or previous (-1) undecided slide of the queue."""
        target = next_item(self.items, self.current_key(), step)
        if target is None:
            self.main_window.statusBar().showMessage(
                "No undecided slide left in this direction", 5000
            )
            return None
        self.main_window.open_slide(target.path)
        return target

    def next_region(self) -> bool:
        """Centre the view on the slide's next top region at the chosen magnification."""
        regions = self.heatmap.top_regions()
        if not regions:
            self.main_window.statusBar().showMessage("This slide has no region above 0.5", 5000)
            return False
        self._region_index = (self._region_index + 1) % len(regions)
        region = regions[self._region_index]
        x, y = self.heatmap.region_centre(region)
        view = self.main_window.slide_view
        magnification = float(self.magnification_combo.currentData())
        if view.magnification() is not None:
            view.center_on(x, y, magnification)
        else:
            view.center_on(x, y)
        self.main_window.statusBar().showMessage(
            f"Region {self._region_index + 1} of {len(regions)}: max {region.max_prob:.2f}", 5000
        )
        return True

    # -- deciding ----------------------------------------------------------------------------

    def decide(self, status: str) -> None:
        """Record ``status`` for the slide shown (with the note and the score it has now)."""
        key = self.current_key()
        item = self.item(key) if key is not None else None
        if item is None:
            QMessageBox.information(self, "Triage", "Open a slide of the cohort first.")
            return
        try:
            project = self.ensure_project()
            slide_id = project.slide_id(slide_path_key(item.path))
            if slide_id is None:
                slide_id = project.add_slide(slide_path_key(item.path), name=item.key)
            project.record_slide_review(slide_id, status, self.note_edit.text().strip(), item.score)
        except PathViewerError as error:
            QMessageBox.critical(self, "Cannot save the decision", str(error))
            return
        self.note_edit.clear()
        self.refresh()

    # -- events ------------------------------------------------------------------------------

    def _on_activated(self, row: QListWidgetItem) -> None:
        item = self.item(str(row.data(Qt.ItemDataRole.UserRole)))
        if item is not None and item.key != self.current_key():
            self.main_window.open_slide(item.path)

    def _on_slide_changed(self, _slide: object) -> None:
        self._region_index = -1
        key = self.current_key()
        for index in range(self.list.count()):
            row = self.list.item(index)
            if row.data(Qt.ItemDataRole.UserRole) == key:
                self.list.blockSignals(True)
                self.list.setCurrentItem(row)
                self.list.blockSignals(False)
                item = self.item(key) if key else None
                self.note_edit.setText(item.note if item is not None else "")

    def _on_heatmap_changed(self) -> None:
        self._region_index = -1
        self._queue_thumbnails()

    # -- thumbnails --------------------------------------------------------------------------

    def _thumb_key(self, item: TriageItem) -> tuple[str, str]:
        return item.key, str(self.heatmap.pred_dir or "")

    def _queue_thumbnails(self) -> None:
        self._pending_thumbs = [i for i in self.items if self._thumb_key(i) not in self._thumbs]
        if self._pending_thumbs and self.isVisible():
            self._thumb_timer.start()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self._queue_thumbnails()

    def _make_next_thumbnail(self) -> None:
        # One slide per event-loop pass, so the window stays responsive on a long cohort.
        if not self._pending_thumbs:
            self._thumb_timer.stop()
            return
        item = self._pending_thumbs.pop(0)
        key = self._thumb_key(item)
        icon = QIcon()
        try:
            slide = open_slide(item.path)
            try:
                rgb = slide.thumbnail((THUMB_PX, THUMB_PX))
            finally:
                slide.close()
            if self.heatmap.pred_dir is not None:
                try:
                    heatmap = load_slide_heatmap(self.heatmap.pred_dir, item.path, item.key)
                    lut = colormap(self.heatmap.display.colormap).getLookupTable(0.0, 1.0, 256)
                    rgb = blend_heatmap(rgb, heatmap, np.asarray(lut)[:, :3].astype(np.uint8))
                except PathViewerError:
                    pass  # a slide without a heatmap shows as scanned
            icon = QIcon(QPixmap.fromImage(rgb_to_qimage(np.ascontiguousarray(rgb))))
        except (PathViewerError, OSError) as error:
            log.info("no thumbnail for %s: %s", item.path, error)
        self._thumbs[key] = icon
        for index in range(self.list.count()):
            row = self.list.item(index)
            if row.data(Qt.ItemDataRole.UserRole) == item.key:
                row.setIcon(icon)


def install(
    window: MainWindow,
    project: ProjectController,
    heatmap: HeatmapController,
    ensure_project: Callable[[], Project],
) -> TriagePanel:
    """Add the Triage dock and its keys (N, Shift+N, T); return its panel."""
    panel = TriagePanel(window, project, heatmap, ensure_project)
    dock = QDockWidget("Triage", window)
    dock.setObjectName("dock-triage")
    dock.setWidget(panel)
    window.add_dock(dock, Qt.DockWidgetArea.LeftDockWidgetArea, "triage", tab_with="cohort")
    dock.hide()
    context = Qt.ShortcutContext.WidgetWithChildrenShortcut
    for text, key, slot in (
        ("Next slide to triage", "N", lambda: panel.go_next(1)),
        ("Previous slide to triage", "Shift+N", lambda: panel.go_next(-1)),
        ("Next top region", "T", panel.next_region),
    ):
        action = QAction(text, window)
        action.setShortcut(QKeySequence(key))
        action.setShortcutContext(context)
        action.triggered.connect(slot)
        window.slide_view.addAction(action)
        panel.list.addAction(action)
        window.menu("tools").addAction(action)

    def on_cohort() -> None:
        panel.refresh()
        if window.cohort_entries and not dock.isVisible():
            dock.show()

    window.cohort_panel.entriesChanged.connect(on_cohort)
    panel.refresh()
    return panel
