"""Dock panels of the main window: slide properties and the cohort list.

:class:`CohortModel` has the columns ``slide, label, split, score, pred``; the last two render
the window's :class:`~pathviewer.session.scores.CohortScores`, which the AI features write.  :class:`CohortPanel` emits ``slideActivated(str)`` with the file
path of the slide the user picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PySide6.QtCore import QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor, QPixmap, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QScrollArea,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.cohort import CohortEntry
from pathviewer.core.slide import SlideSource
from pathviewer.gui.viewer.tiles import rgb_to_qimage
from pathviewer.session.scores import CohortScores

#: Longest side of associated images in the properties panel.
ASSOCIATED_SIZE = 240

PATH_ROLE = Qt.ItemDataRole.UserRole + 1
KEY_ROLE = Qt.ItemDataRole.UserRole + 2
#: The slide label as a number (1, 0 or None) behind its text.
CLASS_ROLE = Qt.ItemDataRole.UserRole + 3


class PropertiesPanel(QWidget):
    """Every property of the slide in a table, then its label/macro/thumbnail images."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.summary = QLabel("No slide")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Property", "Value"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(0, 170)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setWordWrap(False)
        layout.addWidget(self.table, 3)
        self.images = QWidget()
        self._images_layout = QVBoxLayout(self.images)
        self._images_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.images)
        layout.addWidget(scroll, 2)

    def set_slide(self, slide: object) -> None:
        """Show ``slide`` (a :class:`SlideSource`) or clear the panel (anything else)."""
        self.table.setRowCount(0)
        while self._images_layout.count():
            item = self._images_layout.takeAt(0)
            child = item.widget() if item is not None else None
            if child is not None:
                child.deleteLater()
        # No isinstance(slide, SlideSource): a protocol check would call every property, and a
        # slide whose decoder failed raises on each of them.
        if slide is None or not hasattr(slide, "dimensions"):
            self.summary.setText("No slide")
            return
        self._fill(slide)  # type: ignore[arg-type]

    def _fill(self, slide: SlideSource) -> None:
        width, height = slide.dimensions
        mpp = slide.mpp
        power = slide.objective_power
        native = slide.native_level_count
        levels = f"{native} level(s)"
        if native < slide.level_count:
            # A file without a pyramid: zooming out reads every pixel, so say why it is slow.
            levels += f" (no pyramid: {slide.level_count - native} made on the fly)"
        self.summary.setText(
            f"<b>{slide.path.rsplit('/', 1)[-1]}</b><br>{slide.vendor} · {width} × {height} px · "
            + levels
            + (f" · {mpp[0]:.3f} µm/px" if mpp else "")
            + (f" · {power:g}×" if power else "")
        )
        properties = sorted(slide.properties.items())
        self.table.setRowCount(len(properties))
        for row, (name, value) in enumerate(properties):
            self.table.setItem(row, 0, QTableWidgetItem(name))
            item = QTableWidgetItem(value)
            item.setToolTip(value)
            self.table.setItem(row, 1, item)
        try:
            names = slide.associated_image_names
        except Exception as error:  # OpenSlide refuses every call after a decode error
            self._images_layout.addWidget(QLabel(f"associated images unavailable: {error}"))
            names = ()
        for name in names:
            caption = QLabel(name)
            caption.setStyleSheet("font-weight: bold")
            self._images_layout.addWidget(caption)
            picture = QLabel()
            try:
                pixmap = QPixmap.fromImage(rgb_to_qimage(slide.associated_image(name)))
                picture.setPixmap(
                    pixmap.scaled(
                        ASSOCIATED_SIZE,
                        ASSOCIATED_SIZE,
                        Qt.AspectRatioMode.KeepAspectRatio,
                        Qt.TransformationMode.SmoothTransformation,
                    )
                )
            except Exception as error:  # a broken label image must not stop the panel
                picture.setText(f"cannot decode: {error}")
            self._images_layout.addWidget(picture)
        self._images_layout.addStretch(1)


#: How a slide label or call reads in the cohort list (the CSV's 1 and 0).
SLIDE_CLASS_TEXT = {1: "tumour", 0: "normal"}


def slide_class_text(value: int | None) -> str:
    """``tumour`` for 1, ``normal`` for 0, nothing when unknown."""
    return "" if value is None else SLIDE_CLASS_TEXT.get(int(value), str(value))


class CohortModel(QStandardItemModel):
    """Slides of a cohort: ``slide, label, split, score, pred`` (the last two filled later)."""

    COLUMNS = ("slide", "label", "split", "score", "pred")
    SLIDE, LABEL, SPLIT, SCORE, PRED = range(5)

    def __init__(self, scores: CohortScores, parent: QWidget | None = None) -> None:
        super().__init__(0, len(self.COLUMNS), parent)
        self.setHorizontalHeaderLabels(list(self.COLUMNS))
        self._rows: dict[str, int] = {}
        self.scores = scores
        scores.subscribe(self._render_scores)

    def set_entries(self, entries: Sequence[CohortEntry]) -> None:
        """Replace the rows with the entries of a cohort CSV."""
        self.removeRows(0, self.rowCount())
        self._rows.clear()
        for entry in entries:
            # Show the file name; the CSV key (what predictions are keyed by) stays in KEY_ROLE.
            slide = QStandardItem(Path(entry.slide).name)
            slide.setData(str(entry.path), PATH_ROLE)
            slide.setData(entry.slide, KEY_ROLE)
            slide.setToolTip(str(entry.path))
            label = QStandardItem(slide_class_text(entry.label))
            label.setData(entry.label, CLASS_ROLE)
            label.setToolTip("" if entry.label is None else f"slide label {entry.label}")
            if entry.label == 1:
                label.setForeground(QColor(230, 90, 90))
            items = [slide, label, QStandardItem(entry.split), QStandardItem(""), QStandardItem("")]
            for item in items:
                item.setEditable(False)
            for item in items[1:]:
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            self._rows[entry.slide] = self.rowCount()
            self.appendRow(items)
        self._render_scores(frozenset(self._rows))

    def slide_keys(self) -> list[str]:
        return list(self._rows)

    def path_of(self, row: int) -> str:
        """File path of the slide in ``row``."""
        return str(self.item(row, self.SLIDE).data(PATH_ROLE))

    def row_of(self, slide: str) -> int | None:
        return self._rows.get(slide)

    def _render_scores(self, keys: frozenset[str]) -> None:
        """Show the scores of ``keys`` (numbers in ``Qt.UserRole``, so sorting is numeric)."""
        for slide in keys:
            row = self._rows.get(slide)
            if row is None:
                continue
            value = self.scores.get(slide)
            score_item = self.item(row, self.SCORE)
            pred_item = self.item(row, self.PRED)
            if value is None:
                score_item.setText("")
                score_item.setData(None, Qt.ItemDataRole.UserRole)
                pred_item.setText("")
                continue
            score, pred = value.score, value.pred
            score_item.setText(f"{score:.3f}")
            score_item.setData(float(score), Qt.ItemDataRole.UserRole)
            score_item.setToolTip(value.source)
            pred_item.setText(slide_class_text(pred))
            pred_item.setData(pred, Qt.ItemDataRole.UserRole)
            label = self.item(row, self.LABEL).data(CLASS_ROLE)
            if pred is not None and label is not None and label != pred:
                pred_item.setForeground(QColor(255, 170, 0))  # disagreement with the label
            else:
                pred_item.setForeground(QColor(200, 205, 210))


class CohortPanel(QWidget):
    """A sortable table of the cohort; a click opens the slide (``slideActivated(path)``)."""

    slideActivated = Signal(str)
    #: The cohort shown changed (a cohort CSV was opened).
    entriesChanged = Signal()

    def __init__(self, scores: CohortScores, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = CohortModel(scores, self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        self.view.setAlternatingRowColors(True)
        header = self.view.horizontalHeader()
        header.setMinimumSectionSize(36)
        # The name takes what the other columns leave, so no column is cut at the dock's edge.
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setStretchLastSection(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        for column in range(1, len(CohortModel.COLUMNS)):
            self.view.horizontalHeader().setSectionResizeMode(
                column, QHeaderView.ResizeMode.ResizeToContents
            )
        self.view.clicked.connect(self._on_clicked)
        self.view.activated.connect(self._on_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.title = QLabel("No cohort")
        layout.addWidget(self.title)
        layout.addWidget(self.view)

    def set_entries(self, entries: Sequence[CohortEntry], title: str = "") -> None:
        self.model.set_entries(entries)
        # Sort keys for the proxy: text columns sort by text.
        for row in range(self.model.rowCount()):
            for column in (CohortModel.SLIDE, CohortModel.SPLIT):
                item = self.model.item(row, column)
                item.setData(item.text(), Qt.ItemDataRole.UserRole)
            label = self.model.item(row, CohortModel.LABEL)
            label.setData(label.data(CLASS_ROLE), Qt.ItemDataRole.UserRole)
        # The cohort's own order until a header is clicked (not a descending sort by name).
        self.view.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.view.setSortingEnabled(True)
        self.title.setText(title or f"{len(entries)} slides")
        self.entriesChanged.emit()

    def select_path(self, path: str) -> None:
        """Highlight the row of ``path`` (when listed), without emitting ``slideActivated``."""
        for row in range(self.model.rowCount()):
            if self.model.path_of(row) == path:
                index = self.proxy.mapFromSource(self.model.index(row, 0))
                self.view.selectRow(index.row())
                return

    def _on_clicked(self, index) -> None:
        source = self.proxy.mapToSource(index)
        self.slideActivated.emit(self.model.path_of(source.row()))
