"""Side-by-side views: 2, 3 or 4 slide views in a grid with linked navigation.

What the window gains (``install(window, heatmap)``)
----------------------------------------------------
* ``window.context.compare`` (:class:`CompareController`): ``set_layout(n)`` shows 1, 2, 3 or
  4 views; ``compare_runs(a, b, difference)`` shows run A's heatmap in the main view, run B's
  in the second and, optionally, B - A in a third.
* **View > Layout** (single, two side by side, four), **Tools > Compare runs…**.

The main view keeps every feature (heatmap dock, annotations, review).  Each further view has
its own slide (the main view's by default: run A against run B of one slide) or another one
(H&E against IHC of the same block), and its own heatmap.  All views follow one another: the
same level-0 centre and magnification after a pan or zoom in any of them, and a crosshair
where the cursor is in the others.  The slides are not registered to each other: serial
sections line up only as well as they were scanned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QPointF, QRectF, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QPainter, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QFrame,
    QGraphicsItem,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QStyleOptionGraphicsItem,
    QVBoxLayout,
    QWidget,
)

from pathviewer.core.errors import PathViewerError, SlideError
from pathviewer.core.heatmap import DIFFERENCE_SPAN, Heatmap, HeatmapError, difference_heatmap
from pathviewer.core.predictions import load_slide_heatmap
from pathviewer.core.slide import SLIDE_SUFFIXES
from pathviewer.gui import file_dialogs
from pathviewer.gui.heatmap.dock import ColorLegend, LegendSpec
from pathviewer.gui.heatmap.overlay import (
    HeatmapOverlay,
    color_table,
    difference_color_table,
    heatmap_image,
)
from pathviewer.gui.viewer.slide_view import SlideView, open_slide_checked
from pathviewer.session.heatmap import heatmap_misfit

if TYPE_CHECKING:
    from pathviewer.gui.heatmap.controller import HeatmapController
    from pathviewer.gui.main_window import MainWindow

log = logging.getLogger(__name__)

#: Grid shape (rows, columns) of each number of views.
LAYOUTS: dict[int, tuple[int, int]] = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 2)}

#: Colormaps of a further view's heatmap: probabilities, and the difference of two runs.
PANE_COLORMAP = "viridis"
DIFFERENCE_COLORMAP = "coolwarm"

#: Height of each view's title line, the same for all so that the views line up.
HEADER_PX = 30

#: z-value of the crosshair (above heatmaps and annotations).
CROSSHAIR_Z = 50.0


class Crosshair(QGraphicsItem):
    """A cross of fixed screen size marking where the cursor is in another view."""

    ARM = 14.0

    def __init__(self) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
        self.setZValue(CROSSHAIR_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)
        self.hide()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return QRectF(-self.ARM - 2, -self.ARM - 2, 2 * self.ARM + 4, 2 * self.ARM + 4)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        for colour, width in ((QColor(0, 0, 0, 180), 4.0), (QColor(255, 255, 255), 2.0)):
            pen = QPen(colour, width)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawLine(QPointF(-self.ARM, 0), QPointF(self.ARM, 0))
            painter.drawLine(QPointF(0, -self.ARM), QPointF(0, self.ARM))


class ViewLink(QObject):
    """Keeps slide views on one level-0 centre and magnification, with linked crosshairs.

    Views whose slides both know their resolution are matched by magnification (so slides
    scanned at different resolutions show the same field); otherwise by zoom factor.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.views: list[SlideView] = []
        self._crosshairs: dict[int, Crosshair] = {}
        self._syncing = False

    def add(self, view: SlideView) -> None:
        """Link ``view`` to the others (it takes the position of the first)."""
        self.views.append(view)
        view.viewChanged.connect(lambda v=view: self.follow(v))
        view.cursorMoved.connect(lambda x, y, v=view: self._cursor(v, x, y))
        view.slideChanged.connect(lambda _slide, v=view: self._slide_changed(v))
        self._slide_changed(view)
        if len(self.views) > 1:
            self.follow(self.views[0])

    def remove(self, view: SlideView) -> None:
        """Unlink ``view`` (it is being closed)."""
        if view in self.views:
            self.views.remove(view)
        self._crosshairs.pop(id(view), None)

    def follow(self, source: SlideView) -> None:
        """Move every other view to ``source``'s centre and magnification."""
        if self._syncing or source.current_slide is None:
            return
        centre = source.visible_level0_rect().center()
        magnification = source.magnification()
        self._syncing = True
        try:
            for target in self.views:
                if target is source or target.current_slide is None:
                    continue
                if magnification and target.magnification():
                    target.center_on(centre.x(), centre.y(), magnification)
                else:
                    target.set_scale(source.scale_factor())
                    target.center_on(centre.x(), centre.y())
        finally:
            self._syncing = False

    def _cursor(self, source: SlideView, x: float, y: float) -> None:
        for view in self.views:
            crosshair = self._crosshairs.get(id(view))
            if crosshair is None:
                continue
            if view is source:
                crosshair.hide()
            else:
                crosshair.setPos(x, y)
                crosshair.show()

    def _slide_changed(self, view: SlideView) -> None:
        # The view detached its overlays (the old crosshair with them): add a new one.
        self._crosshairs.pop(id(view), None)
        if view.current_slide is not None:
            crosshair = Crosshair()
            view.add_overlay(crosshair)
            self._crosshairs[id(view)] = crosshair

    def crosshair(self, view: SlideView) -> Crosshair | None:
        """The crosshair drawn in ``view`` (tests)."""
        return self._crosshairs.get(id(view))


class ComparePane(QFrame):
    """A further view of the grid: a title line, its slide view and its heatmap."""

    def __init__(self, window: MainWindow, number: int) -> None:
        super().__init__(window)
        self.number = number
        self.settings = window.settings
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.view = SlideView(self, window.settings, threads=2)
        self.title = QLabel()
        self.title.setFixedHeight(HEADER_PX)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.slide_button = QPushButton("Slide…")
        self.slide_button.setToolTip("Show another slide here (e.g. the IHC of the same block)")
        self.heatmap_button = QPushButton("Heatmap…")
        self.heatmap_button.setToolTip("A predictions folder or heatmap .npz for this view")
        head = QHBoxLayout()
        head.setContentsMargins(6, 2, 6, 2)
        head.addWidget(self.title, 1)
        head.addWidget(self.slide_button)
        head.addWidget(self.heatmap_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addLayout(head)
        layout.addWidget(self.view, 1)
        self.heatmap: Heatmap | None = None
        self.heatmap_label = ""
        self.colormap = PANE_COLORMAP
        self.opacity = 0.6
        self.item: HeatmapOverlay | None = None
        self.legend = ColorLegend(self.view, self.legend_spec)
        self.view.slideChanged.connect(self._on_slide_changed)
        self.slide_button.clicked.connect(self._choose_slide)
        self.heatmap_button.clicked.connect(self._choose_heatmap)
        self._update_title()

    def open_slide(self, path: str) -> None:
        """Show the slide at ``path`` here.

        Raises
        ------
        SlideError
            It cannot be opened.
        """
        self.view.set_slide(open_slide_checked(path))

    def set_heatmap(
        self, heatmap: Heatmap | None, label: str = "", colormap: str = PANE_COLORMAP
    ) -> None:
        """Show ``heatmap`` over this view's slide (None removes it)."""
        self.heatmap = heatmap
        self.heatmap_label = label if heatmap is not None else ""
        self.colormap = colormap
        self._add_item()
        self._update_title()

    @property
    def is_difference(self) -> bool:
        """Whether the heatmap shown is a difference of two runs (0.5 = no change)."""
        return self.heatmap is not None and self.heatmap.method == "difference"

    def legend_spec(self) -> LegendSpec | None:
        """The colour bar of this view's heatmap (None without one)."""
        if self.heatmap is None:
            return None
        if self.is_difference:
            span = f"{DIFFERENCE_SPAN:g}"
            return LegendSpec(
                self.colormap, "Change B − A (red: B higher)", (f"−{span}", "0", f"+{span}")
            )
        return LegendSpec(self.colormap)

    def load_heatmap(self, source: str) -> None:
        """Show the heatmap of this view's slide from a predictions folder or ``.npz``.

        Raises
        ------
        HeatmapError
            No slide is shown, or the source has no heatmap of it.
        """
        slide = self.view.current_slide
        if slide is None:
            raise HeatmapError("open a slide in this view first")
        self.set_heatmap(load_slide_heatmap(source, slide.path), run_label(source))

    def shutdown(self) -> None:
        self.view.shutdown()

    def _add_item(self) -> None:
        self.view.remove_overlay(self.item)
        self.item = None
        if self.heatmap is None or self.view.current_slide is None:
            self.legend.refresh()
            return
        table = (
            difference_color_table(self.colormap, self.opacity)
            if self.is_difference
            else color_table(self.colormap, self.opacity, 0.0)
        )
        image = heatmap_image(self.heatmap, table)
        self.item = HeatmapOverlay(image, self.heatmap.origin, self.heatmap.patch_size)
        self.view.add_overlay(self.item)
        self.legend.refresh()

    def _on_slide_changed(self, slide: object) -> None:
        self.item = None  # gone with the scene
        if self.heatmap is not None and heatmap_misfit(self.heatmap, self.view.current_slide):
            self.heatmap = None  # another slide's heatmap would be misplaced
        self._add_item()
        self._update_title()

    def _update_title(self) -> None:
        slide = self.view.current_slide
        name = Path(slide.path).name if slide is not None else "no slide"
        text = f"<b>{self.number}</b> · {name}"
        if self.heatmap_label:
            text += f" · {self.heatmap_label}"
        self.title.setText(text)
        self.title.setToolTip(text)

    def _choose_slide(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in SLIDE_SUFFIXES)
        path = file_dialogs.open_file(
            self, self.settings, "slides", "Slide for this view", f"Slides ({patterns})"
        )
        if not path:
            return
        try:
            self.open_slide(path)
        except SlideError as error:
            QMessageBox.critical(self, "Cannot open slide", str(error))

    def _choose_heatmap(self) -> None:
        path = file_dialogs.choose_folder(
            self, self.settings, "predictions", "Predictions folder for this view"
        )
        if not path:
            return
        try:
            self.load_heatmap(path)
        except PathViewerError as error:
            QMessageBox.critical(self, "Cannot load heatmap", str(error))


class CompareRunsDialog(QDialog):
    """Tools > Compare runs: two predictions folders and whether to show B - A."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Compare runs")
        self.run_a = QLineEdit()
        self.run_b = QLineEdit()
        self.difference = QCheckBox("Also show the difference B − A (red: B higher)")
        self.difference.setChecked(True)
        form = QFormLayout(self)
        for label, edit in (("Run A (predictions folder)", self.run_a), ("Run B", self.run_b)):
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _checked=False, e=edit: self._browse(e))
            row.addWidget(browse)
            form.addRow(label, row)
        form.addRow(self.difference)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self, edit: QLineEdit) -> None:
        path = file_dialogs.choose_folder(
            self, self.settings, "predictions", "Predictions folder (pathviewer infer)"
        )
        if path:
            edit.setText(path)


class CompareController(QObject):
    """The grid of views (see the module docstring)."""

    #: The number of views changed.
    layoutChanged = Signal(int)

    def __init__(self, window: MainWindow, heatmap: HeatmapController) -> None:
        super().__init__(window)
        self.window = window
        self.heatmap = heatmap
        self.link = ViewLink(self)
        self.panes: list[ComparePane] = []
        self.layout_actions: dict[int, QAction] = {}
        main = window.takeCentralWidget()
        assert main is window.slide_view
        self.grid_widget = QWidget(window)
        self.grid = QGridLayout(self.grid_widget)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(3)
        self.main_title = QLabel()
        self.main_title.setFixedHeight(HEADER_PX)
        self.main_title.setContentsMargins(6, 4, 6, 4)
        self.main_box = QWidget()
        box = QVBoxLayout(self.main_box)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addWidget(self.main_title)
        box.addWidget(window.slide_view, 1)
        self.main_title.hide()
        self.grid.addWidget(self.main_box, 0, 0)
        window.setCentralWidget(self.grid_widget)
        self.link.add(window.slide_view)
        window.slide_view.slideChanged.connect(lambda _slide: self._update_main_title())
        heatmap.heatmapChanged.connect(lambda _heatmap: self._update_main_title())

    @property
    def count(self) -> int:
        """Views shown (1 to 4)."""
        return 1 + len(self.panes)

    def set_layout(self, count: int) -> None:
        """Show ``count`` views (1, 2, 3 or 4); new views open the main view's slide."""
        if count not in LAYOUTS:
            raise ValueError(f"layouts have 1 to 4 views, not {count}")
        while len(self.panes) > count - 1:
            pane = self.panes.pop()
            self.link.remove(pane.view)
            self.grid.removeWidget(pane)
            pane.shutdown()
            pane.hide()
            pane.deleteLater()
        main_slide = self.window.slide_view.current_slide
        while len(self.panes) < count - 1:
            pane = ComparePane(self.window, len(self.panes) + 2)
            if main_slide is not None:
                try:
                    pane.open_slide(main_slide.path)
                except SlideError as error:  # e.g. an in-memory slide: the pane stays empty
                    log.info("view %d left empty: %s", pane.number, error)
            self.panes.append(pane)
            self.link.add(pane.view)
        rows, cols = LAYOUTS[count]
        for index, widget in enumerate([self.main_box, *self.panes]):
            # Ignored size hints: the stretch factors alone share the space, so every view
            # gets the same size whatever its title line holds.
            widget.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
            self.grid.addWidget(widget, index // cols, index % cols)
        for row in range(2):
            self.grid.setRowStretch(row, 1 if row < rows else 0)
        for col in range(3):
            self.grid.setColumnStretch(col, 1 if col < cols else 0)
        self.main_title.setVisible(count > 1)
        self._update_main_title()
        for n, action in self.layout_actions.items():
            action.setChecked(n == count)  # three views (compare runs) has no menu entry
        self.link.follow(self.window.slide_view)
        self.layoutChanged.emit(count)

    def compare_runs(self, run_a: str, run_b: str, difference: bool = True) -> None:
        """Run A's heatmap in the main view, run B's beside it, optionally B - A in a third.

        Raises
        ------
        HeatmapError
            No slide is open, a folder has no heatmap of it, or the two grids differ (with
            ``difference``).
        """
        slide = self.window.slide_view.current_slide
        if slide is None:
            raise HeatmapError("open a slide first, then compare two runs on it")
        entry = self.heatmap.cohort_entry(slide)
        name = entry.slide if entry is not None else None
        heatmap_a = load_slide_heatmap(run_a, slide.path, name)
        heatmap_b = load_slide_heatmap(run_b, slide.path, name)
        change = difference_heatmap(heatmap_a, heatmap_b) if difference else None
        self.set_layout(3 if difference else 2)
        self.heatmap.pred_dir = None  # the main view shows run A for this slide only
        self.heatmap.set_heatmap(heatmap_a, source=f"A: {run_label(run_a)}")
        self.panes[0].set_heatmap(heatmap_b, f"B: {run_label(run_b)}")
        if change is not None:
            self.panes[1].set_heatmap(change, "B − A (red: B higher)", DIFFERENCE_COLORMAP)

    def _update_main_title(self) -> None:
        slide = self.window.slide_view.current_slide
        name = Path(slide.path).name if slide is not None else "no slide"
        text = f"<b>1</b> · {name}"
        if self.heatmap.heatmap is not None and self.heatmap.source:
            text += f" · {self.heatmap.source}"
        self.main_title.setText(text)

    def shutdown(self) -> None:
        for pane in self.panes:
            pane.shutdown()


def run_label(source: str | Path) -> str:
    """A short name of a run's predictions: the folder, or its run folder for ``predictions``."""
    path = Path(source)
    if path.name in ("predictions", "heatmaps") and path.parent.name:
        return path.parent.name
    return path.stem if path.is_file() else path.name


def choose_and_compare(window: MainWindow, controller: CompareController) -> None:
    """Tools > Compare runs…: ask for two predictions folders and show them side by side."""
    dialog = CompareRunsDialog(window.settings, window)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return
    try:
        controller.compare_runs(
            dialog.run_a.text().strip(), dialog.run_b.text().strip(), dialog.difference.isChecked()
        )
    except PathViewerError as error:
        QMessageBox.critical(window, "Cannot compare runs", str(error))


def install(window: MainWindow, heatmap: HeatmapController) -> CompareController:
    """Add the grid of views, View > Layout and Tools > Compare runs; return the controller."""
    controller = CompareController(window, heatmap)
    menu = window.menu("view").addMenu("&Layout")
    group = QActionGroup(window)
    group.setExclusionPolicy(QActionGroup.ExclusionPolicy.ExclusiveOptional)
    for count, text in ((1, "&Single view"), (2, "&Two side by side"), (4, "&Four (2 × 2)")):
        action = QAction(text, window, checkable=True, checked=count == 1)
        action.triggered.connect(lambda _checked=False, n=count: controller.set_layout(n))
        group.addAction(action)
        menu.addAction(action)
        controller.layout_actions[count] = action
    compare = QAction("&Compare runs…", window)
    compare.setToolTip("Two runs' heatmaps of this slide side by side, and their difference")
    compare.triggered.connect(lambda: choose_and_compare(window, controller))
    window.menu("tools").addAction(compare)
    window.close_hooks.append(controller.shutdown)
    return controller
