"""Drawing and editing annotations: tools, class palette, annotation list, undo/redo, import/export.

``install(window, project)`` builds ``window.context.annotations`` (an
:class:`AnnotationController`), the **Annotations** dock (class palette with a "+" button, the list of the slide's annotations with
their measurements), the **Annotate** toolbar, an **Edit** menu with Undo/Redo/Delete, and
*Import annotations…* / *Export annotations…* in the Tools menu.

Mouse
    * Select tool: click an annotation to select it; drag it to move it; drag a white vertex
      handle of the selected annotation to edit that vertex.  Dragging on empty space pans the
      view (as in the plain viewer).
    * Drawing tools: left button draws; the **middle button** drags the view in every tool, and
      the wheel zooms as usual.
    * Rectangle: drag.  Polygon / line: click vertices; double-click or Enter finishes,
      Backspace removes the last vertex, Esc cancels.  Point: click.
    * Brush (add) / erase: drag; the stroke (a disk of the brush radius swept along the path,
      buffered with shapely) is unioned into the selected region or, with nothing selected,
      becomes a new region of the current class (which is then selected, so more strokes grow
      it).  Erase subtracts from the selected region, or from every region it touches when
      nothing is selected; a region erased completely is deleted.  ``[`` / ``]`` change the
      brush size.

Keyboard (active while the slide view has focus, so other docks may use the same keys)
    V select, R rectangle, P polygon, L line, B brush, E erase, O point, Esc cancel/deselect,
    Enter finish, Backspace remove last vertex, Del delete the selection, 1-9 choose a class (and
    re-classify the selection).  Ctrl+Z undo, Ctrl+Shift+Z / Ctrl+Y redo (window-wide).

Persistence
    Every edit is a QUndoCommand that writes through to the project store, which commits it
    before the command returns; undo and redo write the store too.  There is one undo stack per
    slide (grouped in a QUndoGroup that follows the slide view).  When no project is open and the
    user starts drawing, the default project ``user_data_dir()/default-project`` is opened (or
    created) and the status bar says so; the slide is added to the project on its first edit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from PySide6.QtCore import (
    QAbstractTableModel,
    QEvent,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPointF,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QIcon,
    QKeyEvent,
    QKeySequence,
    QMouseEvent,
    QPainterPath,
    QPixmap,
    QShortcut,
    QUndoGroup,
    QUndoStack,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QColorDialog,
    QDockWidget,
    QGraphicsView,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QMessageBox,
    QTableView,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotation_document import AnnotationDocument, plan_brush, polygonal
from pathviewer.core.annotations import (
    DEFAULT_CLASSES,
    Annotation,
    annotation_format,
    new_class_colors,
    outside_slide,
    qupath_offset,
    read_annotations,
    shift_annotations,
    write_annotations,
)
from pathviewer.core.errors import USER_ERRORS, PathViewerError, message_about
from pathviewer.core.geometry import DISPLAY_UNITS, in_display_unit, measure, shape_name, unit_text
from pathviewer.core.identity import slide_path_key
from pathviewer.gui import file_dialogs
from pathviewer.gui.annotations.commands import (
    AddAnnotationsCommand,
    AnnotationSession,
    DeleteAnnotationsCommand,
    ModifyAnnotationCommand,
    with_class,
)
from pathviewer.gui.annotations.layer import AnnotationLayer
from pathviewer.session.display import AnnotationDisplay

if TYPE_CHECKING:
    from pathviewer.core.store import Project
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.gui.project import ProjectController

log = logging.getLogger(__name__)

#: Tools: name -> (label, status-bar hint); their keys come from the key preset
#: (:mod:`pathviewer.session.keys`).
TOOLS: dict[str, tuple[str, str]] = {
    "select": ("Select", "Select: click to select, drag to move, drag a handle to edit"),
    "rectangle": ("Rectangle", "Rectangle: drag to draw"),
    "ellipse": ("Ellipse", "Ellipse: drag its bounding box"),
    "polygon": (
        "Polygon",
        "Polygon: click vertices; double-click or Enter closes, Backspace undoes a vertex",
    ),
    "line": ("Line", "Line: click vertices; double-click or Enter finishes"),
    "brush": ("Brush", "Brush: paint to add to the selected or a new region ([ ] size)"),
    "erase": ("Erase", "Erase: paint to remove from the selected or touched regions"),
    "point": ("Point", "Point: click to place"),
}

#: Vertices of a drawn ellipse (enough for a smooth outline at any zoom it was drawn at).
ELLIPSE_VERTICES = 64

#: Name of the automatic project used when the user draws with no project open.
DEFAULT_PROJECT_NAME = "default-project"

#: Pick tolerance in screen pixels.
PICK_PX = 6.0

#: Smallest rectangle side, in screen pixels, that is not taken as a stray click.
MIN_DRAG_PX = 3.0

DEFAULT_BRUSH_PX = 16.0

#: Settings key of the unit measurements are shown in (one of DISPLAY_UNITS).
UNITS_SETTING = "display/units"


def _swatch(rgb: tuple[int, int, int]) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


class AnnotationTableModel(QAbstractTableModel):
    """The slide's annotations with their class and measurements (computed lazily per row)."""

    HEADERS = ("#", "Class", "Type", "Area", "Length")

    def __init__(self, controller: AnnotationController) -> None:
        super().__init__()
        self._controller = controller
        self.ids: list[int] = []

    def refresh(self) -> None:
        """Re-read the ids from the layer."""
        self.beginResetModel()
        self.ids = sorted(self._controller.document)
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return 0 if parent.isValid() else len(self.ids)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: N802, B008
        return len(self.HEADERS)

    def headerData(  # noqa: N802 - Qt override
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            unit = self._controller.display_unit()
            return {3: f"Area {unit}²", 4: f"Length {unit}"}.get(section, self.HEADERS[section])
        if role == Qt.ItemDataRole.ToolTipRole and section == 4:
            return "The perimeter of a region, the length of a line"
        return None

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        layer = self._controller.layer
        if layer is None or not index.isValid():
            return None
        annotation_id = self.ids[index.row()]
        annotation = self._controller.document.get(annotation_id)
        if annotation is None:
            return None
        column = index.column()
        if role == Qt.ItemDataRole.DecorationRole and column == 1:
            return _swatch(layer.color_of(annotation))
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if column == 0:
            return str(annotation_id)
        if column == 1:
            return annotation.class_name or "—"
        if column == 2:
            return shape_name(annotation.geometry)
        values = self._controller.shown_measurements(annotation)
        if column == 3:
            area = next((v for k, v in values.items() if k.startswith("Area")), None)
            return "" if area is None else _shown_number(area)
        length = next((v for k, v in values.items() if k.startswith(("Perimeter", "Length"))), None)
        return "" if length is None else _shown_number(length, 1)


def _shown_number(value: float, decimals: int = 0) -> str:
    """A measurement as shown in the table: thousands separated; small values keep 3 digits."""
    if value != 0 and abs(value) < 10:
        return f"{value:,.3g}"
    return f"{value:,.{decimals}f}"


def ellipse(cx: float, cy: float, rx: float, ry: float) -> shapely.Polygon:
    """The ellipse of centre ``(cx, cy)`` and radii ``rx``, ``ry`` as a polygon (level-0 px)."""
    angles = np.linspace(0.0, 2.0 * np.pi, ELLIPSE_VERTICES, endpoint=False)
    return shapely.Polygon(np.column_stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)]))


class AnnotationPanel(QWidget):
    """The Annotations dock: class palette, annotation list, measurement of the selection."""

    def __init__(self, controller: AnnotationController) -> None:
        super().__init__()
        self.controller = controller
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        self.project_label = QLabel("No project: the first edit opens the default project")
        self.project_label.setWordWrap(True)
        layout.addWidget(self.project_label)
        layout.addWidget(QLabel("Classes (keys 1-9; tick to show)"))
        self.palette_box = QWidget()
        self.palette_layout = QVBoxLayout(self.palette_box)
        self.palette_layout.setContentsMargins(0, 0, 0, 0)
        self.palette_layout.setSpacing(2)
        layout.addWidget(self.palette_box)
        self.class_buttons: dict[str, QToolButton] = {}
        self.class_checks: dict[str, QCheckBox] = {}
        self.class_rows: list[QWidget] = []
        self.button_group = QButtonGroup(self)
        self.button_group.setExclusive(True)
        self.add_class_button = QToolButton()
        self.add_class_button.setText("+ class")
        self.add_class_button.setToolTip("Add a class with its colour")
        self.add_class_button.clicked.connect(controller.add_class_interactively)
        layout.addWidget(self.add_class_button)
        self.model = AnnotationTableModel(controller)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.clicked.connect(self._on_row_clicked)
        layout.addWidget(self.table, 1)
        self.measurement_label = QLabel("")
        self.measurement_label.setWordWrap(True)
        layout.addWidget(self.measurement_label)

    def set_classes(self, classes: dict[str, tuple[int, int, int]], current: str) -> None:
        """Rebuild the palette: a button per class and a check box that shows or hides it."""
        for button in self.class_buttons.values():
            self.button_group.removeButton(button)
        for row in self.class_rows:
            self.palette_layout.removeWidget(row)
            row.hide()  # deleteLater only runs on a later event-loop pass
            row.deleteLater()
        self.class_buttons.clear()
        self.class_checks.clear()
        self.class_rows.clear()
        for number, (name, rgb) in enumerate(classes.items(), start=1):
            button = QToolButton()
            button.setCheckable(True)
            button.setIcon(_swatch(rgb))
            button.setText(f"{number} {name}" if number <= 9 else name)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setSizePolicy(
                button.sizePolicy().horizontalPolicy(), button.sizePolicy().verticalPolicy()
            )
            button.setMinimumWidth(140)
            button.setChecked(name == current)
            button.clicked.connect(
                lambda _checked=False, n=name: self.controller.set_current_class(n)
            )
            self.button_group.addButton(button)
            shown = QCheckBox()
            shown.setToolTip(f"Show {name} annotations")
            shown.setChecked(name not in self.controller.display.hidden_classes)
            shown.toggled.connect(lambda on, n=name: self.controller.set_class_visible(n, on))
            row = QWidget()
            row_layout = QHBoxLayout(row)
            row_layout.setContentsMargins(0, 0, 0, 0)
            row_layout.addWidget(shown)
            row_layout.addWidget(button)
            row_layout.addStretch(1)
            self.palette_layout.addWidget(row)
            self.class_buttons[name] = button
            self.class_checks[name] = shown
            self.class_rows.append(row)

    def show_visibility(self, display: AnnotationDisplay) -> None:
        """Tick the classes that are shown (a hidden class stays unticked while all are off)."""
        for name, check in self.class_checks.items():
            check.blockSignals(True)
            check.setChecked(name not in display.hidden_classes)
            check.blockSignals(False)

    def check_class(self, name: str) -> None:
        button = self.class_buttons.get(name)
        if button is not None:
            button.setChecked(True)

    def _on_row_clicked(self, index: QModelIndex) -> None:
        if 0 <= index.row() < len(self.model.ids):
            self.controller.select(self.model.ids[index.row()], center=True)

    def show_selection(self, annotation_id: int | None) -> None:
        """Highlight the selected annotation's row and show its measurements."""
        if annotation_id is None or annotation_id not in self.model.ids:
            self.table.clearSelection()
            self.measurement_label.setText("")
            return
        row = self.model.ids.index(annotation_id)
        self.table.selectRow(row)
        self.table.scrollTo(self.model.index(row, 0))
        self.measurement_label.setText(self.controller.describe(annotation_id))


class AnnotationController(QObject):
    """State and logic of annotation editing in a main window (see the module docstring).

    Signals
    -------
    selectionChanged(object)
        The selected annotation id (store id) or None.
    annotationsChanged()
        Something was added, changed or removed.
    """

    selectionChanged = Signal(object)
    annotationsChanged = Signal()

    def __init__(self, window: MainWindow, project: ProjectController) -> None:
        super().__init__(window)
        self.window = window
        self.project_controller = project
        self.view = window.slide_view
        self.layer: AnnotationLayer | None = None
        #: The open slide's annotations and selection; the layer renders it.
        self.document = AnnotationDocument()
        self.session: AnnotationSession | None = None
        self.tool = "select"
        self.classes: dict[str, tuple[int, int, int]] = dict(DEFAULT_CLASSES)
        self.current_class = next(iter(self.classes))
        self.brush_px = DEFAULT_BRUSH_PX
        self.undo_group = QUndoGroup(self)
        self.stacks: dict[str, QUndoStack] = {}
        #: The undo stack of the slide shown (None without one).  Other docks may join
        #: ``undo_group`` (the review decisions); this one is active when none of them is.
        self.slide_stack: QUndoStack | None = None
        # GeoJSON in QuPath's coordinates, which are cropped to a slide's bounds (MRXS):
        # the same file then lands on the same tissue in both apps. ASAP uses full coordinates.
        self.qupath_coordinates = True
        # Set by install(): the toolbar, its tool actions, class keys and menu actions.
        self.toolbar: QToolBar | None = None
        self.tool_actions: dict[str, QAction] = {}
        self.class_shortcuts: list[QShortcut] = []
        self.undo_action: QAction | None = None
        self.redo_action: QAction | None = None
        self.delete_action: QAction | None = None
        self.lock_action: QAction | None = None
        self.import_action: QAction | None = None
        self.export_action: QAction | None = None
        self.show_action: QAction | None = None
        self.fill_action: QAction | None = None
        #: Which annotations are drawn (all, filled, per class); kept across slides.
        self.display = AnnotationDisplay()
        # Interaction state.
        self._points: list[tuple[float, float]] = []
        self._drag: str | None = None  # "move", "vertex", "rect", "brush", "pan", "view"
        self._drag_start: tuple[float, float] = (0.0, 0.0)
        self._drag_vertex: tuple[float, float] = (0.0, 0.0)
        self._pan_last = QPointF()
        self._pan_button = Qt.MouseButton.MiddleButton
        # Space held: the left button pans whatever the tool (QuPath, napari).
        self._space_held = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(0)
        self._refresh_timer.timeout.connect(self._refresh_list)
        self.panel = AnnotationPanel(self)
        self.view.viewport().installEventFilter(self)
        self.view.installEventFilter(self)
        self.view.slideChanged.connect(self._on_slide_changed)

    # -- project and slide -----------------------------------------------------------------

    @property
    def project(self) -> Project | None:
        """The open project (None until one is opened or the first edit opens the default)."""
        return self.project_controller.project

    def ensure_project(self) -> Project:
        """The open project, or the default project opened now (the user is told)."""
        project = self.project
        if project is not None:
            return project
        from pathviewer.paths import user_data_dir

        folder = user_data_dir() / DEFAULT_PROJECT_NAME
        project = self.project_controller.open(folder, create=True)
        self.window.statusBar().showMessage(
            f"No project was open: annotations are saved in the default project {folder}", 15000
        )
        return project

    def ensure_session(self) -> AnnotationSession | None:
        """The editing session of the current slide, adding the slide to the project if needed."""
        slide = self.view.current_slide
        if slide is None or self.layer is None:
            return None
        if self.session is not None:
            return self.session
        project = self.ensure_project()
        key = slide_path_key(slide.path)
        slide_id = project.slide_id(key)
        if slide_id is None:
            slide_id = project.add_slide(key)
        self.session = AnnotationSession(project, slide_id, self._on_store_changed)
        return self.session

    def on_project_changed(self, project: Project | None) -> None:
        """A project was opened or closed: its palette and the slide's annotations are shown."""
        self.session = None
        label = self.panel.project_label
        if project is None:
            label.setText("No project: the first edit opens the default project")
        elif project.folder.name == DEFAULT_PROJECT_NAME:
            label.setText(f"Saved in the automatic default project {project.folder}")
        else:
            label.setText(f"Project: {project.folder.name} (saved as you edit)")
        label.setToolTip(str(project.folder) if project is not None else "")
        for stack in self.stacks.values():
            self.undo_group.removeStack(stack)
            stack.deleteLater()
        self.stacks.clear()
        self.classes = project.classes() if project is not None else dict(DEFAULT_CLASSES)
        if self.current_class not in self.classes and self.classes:
            self.current_class = next(iter(self.classes))
        self.panel.set_classes(self.classes, self.current_class)
        self._load_slide()

    def _on_slide_changed(self, slide: object) -> None:
        # The view detached the old layer with its slide; a new layer renders the new slide.
        if self.layer is not None:
            self.layer.detach()
        self.layer = None
        self._cancel()
        self.session = None
        self.document.reset({})
        if slide is not None:
            size = self.view.current_slide.dimensions  # type: ignore[union-attr]
            self.layer = AnnotationLayer(self.view, size, self.document)
            self.layer.set_palette(self.classes)
            self.layer.set_display(self.display)
            self.view.add_overlay(self.layer)
        self._load_slide()

    def _load_slide(self) -> None:
        slide = self.view.current_slide
        if slide is None or self.layer is None:
            self._activate_stack(None)
            self._refresh_list()
            return
        self.layer.set_palette(self.classes)
        annotations: dict[int, Annotation] = {}
        project = self.project
        if project is not None:
            slide_id = project.slide_id(slide_path_key(slide.path))
            if slide_id is not None:
                self.session = AnnotationSession(project, slide_id, self._on_store_changed)
                annotations = {r.id: r.annotation for r in project.annotations(slide_id)}
        self.document.reset(annotations)
        key = slide_path_key(slide.path)
        stack = self.stacks.get(key)
        if stack is None:
            stack = QUndoStack(self)
            self.stacks[key] = stack
            self.undo_group.addStack(stack)
        self._activate_stack(stack)
        self._refresh_list()
        self.selectionChanged.emit(None)

    def _activate_stack(self, stack: QUndoStack | None) -> None:
        """Make ``stack`` the current slide's, and Edit > Undo's unless another dock's stack
        holds it (the review dock, while it has the focus: opening a slide from its queue
        must not turn Ctrl+Z there into an annotation undo)."""
        self.slide_stack = stack
        active = self.undo_group.activeStack()
        if active is None or active in self.stacks.values():
            self.undo_group.setActiveStack(stack)  # type: ignore[arg-type]

    @property
    def stack(self) -> QUndoStack | None:
        """The undo stack of the current slide."""
        return self.slide_stack

    def _on_store_changed(self, annotation_id: int, annotation: Annotation | None) -> None:
        if self.layer is None:
            return
        was_selected = self.document.selected == annotation_id
        self.document.set(annotation_id, annotation)
        self._refresh_timer.start()
        self.annotationsChanged.emit()
        if was_selected and annotation is None:
            self.selectionChanged.emit(None)

    def _refresh_list(self) -> None:
        self.panel.model.refresh()
        self.panel.show_selection(self.selected)

    # -- edits -------------------------------------------------------------------------------

    def push(self, make_command: Any) -> Any:
        """Build a command with the session and push it (errors become a dialog).

        ``make_command(session)`` returns the command; returns it, or None when nothing was done.
        """
        try:
            session = self.ensure_session()
            if session is None or self.stack is None:
                return None
            command = make_command(session)
            self.stack.push(command)
        except PathViewerError as error:
            log.warning("annotation edit failed: %s", error)
            QMessageBox.critical(self.window, "Annotation", str(error))
            return None
        return command

    def add(self, geometries: list[BaseGeometry], text: str) -> list[int]:
        """Create annotations of the current class; returns their store ids."""
        rgb = self.classes.get(self.current_class)
        annotations = [
            Annotation(geometry=g, class_name=self.current_class, color=rgb) for g in geometries
        ]
        command = self.push(lambda s: AddAnnotationsCommand(s, annotations, text))
        return [] if command is None else command.store_ids()

    def _locked(self, annotation_id: int, tell: bool = True) -> bool:
        """Whether the annotation is locked (QuPath's isLocked); says so in the status bar."""
        annotation = self.document.get(annotation_id)
        if annotation is None or not annotation.locked:
            return False
        if tell:
            self.window.statusBar().showMessage(
                "This annotation is locked: Edit > Lock / unlock annotation to change it", 6000
            )
        return True

    def toggle_lock_selected(self) -> None:
        """Lock or unlock the selected annotation (undoable, like any edit)."""
        selected = self.selected
        annotation = self.document.get(selected)
        if selected is None or annotation is None:
            return
        text = "Unlock annotation" if annotation.locked else "Lock annotation"
        before = annotation
        after = replace(annotation, locked=not annotation.locked)
        self.push(lambda s: ModifyAnnotationCommand(s, selected, before, after, text))

    def modify(self, annotation_id: int, after: Annotation, text: str) -> None:
        """Replace an annotation (undoable); a locked one is left as it is."""
        before = self.document.get(annotation_id)
        if before is None or self._locked(annotation_id):
            return
        self.push(lambda s: ModifyAnnotationCommand(s, annotation_id, before, after, text))

    def delete_selected(self) -> None:
        """Delete the selected annotation (undoable)."""
        selected = self.selected
        if selected is None or self._locked(selected):
            return
        self.push(lambda s: DeleteAnnotationsCommand(s, [selected], "Delete annotation"))

    # -- selection ---------------------------------------------------------------------------

    @property
    def selected(self) -> int | None:
        """The selected annotation's store id (the document's selection)."""
        return self.document.selected

    def _shown(self, annotation: Annotation) -> bool:
        """Whether an annotation is drawn (hidden ones cannot be picked, cut or selected)."""
        return self.display.shows(annotation.class_name)

    def select(self, annotation_id: int | None, center: bool = False) -> None:
        """Select an annotation (None clears); ``center`` pans the view onto it."""
        if self.layer is None:
            return
        annotation = self.document.get(annotation_id)
        if annotation is None:
            annotation_id = None
        elif not self._shown(annotation):
            self.window.statusBar().showMessage(
                "That annotation is hidden: show its class (or all annotations, key A) first",
                8000,
            )
            annotation, annotation_id = None, None
        self.document.select(annotation_id)
        if annotation is not None and center:
            point = annotation.geometry.representative_point()
            self.view.center_on(point.x, point.y)
        self.panel.show_selection(annotation_id)
        if annotation_id is not None:
            self.window.statusBar().showMessage(self.describe(annotation_id), 8000)
        self.selectionChanged.emit(annotation_id)

    def context_actions(self, x: float, y: float) -> list[QAction]:
        """Right-click on an annotation: it is selected, and these act on it."""
        if self.layer is None:
            return []
        hit = self.document.annotation_at(x, y, PICK_PX * self.layer.downsample(), self._shown)
        if hit is None:
            return []
        self.select(hit)
        actions: list[QAction] = []
        classes = QMenu("Set class", self.window)
        for name in self.classes:
            action = classes.addAction(name)
            action.triggered.connect(lambda _checked=False, n=name: self.set_current_class(n))
        actions.append(classes.menuAction())
        actions += [a for a in (self.lock_action, self.delete_action) if a is not None]
        return actions

    def selected_region(self) -> tuple[str, BaseGeometry] | None:
        """The open slide's path and the selected annotation's area, when it is a region."""
        slide = self.view.current_slide
        selected = self.selected
        annotation = self.document.get(selected)
        if slide is None or annotation is None:
            return None
        geometry = annotation.geometry
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            return None
        return slide.path, geometry

    def measurements(self, annotation: Annotation) -> dict[str, float]:
        """Measurements of an annotation in microns (pixels when the slide has no MPP)."""
        slide = self.view.current_slide
        mpp = slide.mpp if slide is not None else None
        return measure(annotation.geometry, mpp)

    def display_unit(self) -> str:
        """The unit measurements are shown in (Edit > Preferences; exports stay in µm)."""
        unit = str(self.window.settings.value(UNITS_SETTING, DISPLAY_UNITS[0]) or "")
        return unit if unit in DISPLAY_UNITS else DISPLAY_UNITS[0]

    def shown_measurements(self, annotation: Annotation) -> dict[str, float]:
        """:meth:`measurements` in the unit of :meth:`display_unit`."""
        return in_display_unit(self.measurements(annotation), self.display_unit())

    def describe(self, annotation_id: int) -> str:
        """One line about an annotation: class, type and measurements."""
        annotation = self.document.get(annotation_id)
        if annotation is None:
            return ""
        parts = [f"{annotation.class_name or 'Unclassified'} {shape_name(annotation.geometry)}"]
        for name, value in self.shown_measurements(annotation).items():
            parts.append(f"{name.split()[0].lower()} {_shown_number(value, 1)} {unit_text(name)}")
        return " · ".join(parts)

    def apply_keys(self, keys: dict[str, str]) -> None:
        """Give the tools (and the fill toggle) the keys of a preset (see session.keys)."""
        for name, action in self.tool_actions.items():
            key = keys.get(name, "")
            action.setShortcut(QKeySequence(key))
            hint = TOOLS[name][1]
            action.setToolTip(f"{hint} ({key})" if key else hint)
        if self.fill_action is not None:
            self.fill_action.setShortcut(QKeySequence(keys.get("fill", "")))

    # -- visibility --------------------------------------------------------------------------

    def set_display(self, display: AnnotationDisplay) -> None:
        """Show all, some classes or no annotations, filled or outlined (all slides)."""
        if display == self.display:
            return
        self.display = display
        selected = self.document.selected_annotation
        if selected is not None and not display.shows(selected.class_name):
            self.select(None)
        if self.layer is not None:
            self.layer.set_display(display)
        self.panel.show_visibility(display)
        for action, checked in (
            (self.show_action, display.visible),
            (self.fill_action, display.filled),
        ):
            if action is not None and action.isChecked() != checked:
                action.blockSignals(True)
                action.setChecked(checked)
                action.blockSignals(False)

    def set_annotations_visible(self, visible: bool) -> None:
        """All annotations on or off (key A)."""
        self.set_display(replace(self.display, visible=visible))

    def toggle_annotations_visible(self) -> None:
        self.set_annotations_visible(not self.display.visible)

    def set_filled(self, filled: bool) -> None:
        """Regions filled and outlined, or outlined only (Shift+F)."""
        self.set_display(replace(self.display, filled=filled))

    def set_class_visible(self, class_name: str, visible: bool) -> None:
        """Show or hide one class's annotations (the class palette's check boxes)."""
        self.set_display(self.display.with_class(class_name, visible))

    # -- classes -----------------------------------------------------------------------------

    def set_current_class(self, name: str) -> None:
        """Choose the class for new annotations; a selected annotation is re-classified."""
        if name not in self.classes:
            return
        self.current_class = name
        self.panel.check_class(name)
        selected = self.selected
        annotation = self.document.get(selected)
        if selected is not None and annotation is not None:
            if annotation.class_name != name:
                self.modify(selected, with_class(annotation, name, self.classes[name]), "Set class")
                self.panel.show_selection(selected)
                self.window.statusBar().showMessage(
                    f"Selected annotation is now {name} (was {annotation.class_name or 'none'};"
                    " Ctrl+Z undoes)",
                    6000,
                )
                return
        self.window.statusBar().showMessage(f"Class of new annotations: {name}", 3000)

    def add_class(self, name: str, rgb: tuple[int, int, int]) -> None:
        """Add (or recolour) a class in the project's palette and make it current."""
        project = self.ensure_project()
        project.set_class(name, rgb)
        self.classes = project.classes()
        self.panel.set_classes(self.classes, self.current_class)
        if self.layer is not None:
            self.layer.set_palette(self.classes)
        self.set_current_class(name)

    def add_class_interactively(self) -> None:
        """The "+" button: ask for a name and a colour."""
        name, ok = QInputDialog.getText(self.window, "New class", "Class name:")
        name = name.strip() if ok else ""
        if not name:
            return
        color = QColorDialog.getColor(QColor(255, 160, 0), self.window, f"Colour of {name}")
        if not color.isValid():
            return
        self.add_class(name, (color.red(), color.green(), color.blue()))

    def class_by_number(self, number: int) -> None:
        names = list(self.classes)
        if 1 <= number <= len(names):
            self.set_current_class(names[number - 1])

    # -- tools -------------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        """Switch tool (``select``, ``rectangle``, ``polygon``, ``line``, ``brush``, ``erase``,
        ``point``)."""
        if tool not in TOOLS:
            raise ValueError(f"unknown annotation tool {tool!r}")
        self._cancel()
        self.tool = tool
        action = self.tool_actions.get(tool)
        if action is not None and not action.isChecked():
            action.setChecked(True)
        if tool == "select":
            self.view.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
            self.view.viewport().unsetCursor()
        else:
            self.view.setDragMode(QGraphicsView.DragMode.NoDrag)
            self.view.viewport().setCursor(Qt.CursorShape.CrossCursor)
        self.window.statusBar().showMessage(TOOLS[tool][1], 6000)

    def _cancel(self) -> None:
        """Drop an unfinished shape or drag."""
        self._points = []
        if self._drag in ("move", "vertex") and self.layer is not None:
            self.layer.override = None
            self.layer.invalidate_paths()
        self._drag = None
        if self.layer is not None:
            self.layer.preview = None
            self.layer.preview_brush_width = 0.0
            self.layer.update()

    def _finish_path(self) -> None:
        """Close the polygon / finish the line being clicked."""
        points: list[tuple[float, float]] = []
        tolerance = 2.0 * self.layer.downsample() if self.layer is not None else 0.0
        for p in self._points:  # a double-click adds the last vertex twice
            if not points or math.dist(points[-1], p) > tolerance:
                points.append(p)
        self._cancel()
        if self.tool == "polygon" and len(points) >= 3:
            polygon = polygonal(shapely.Polygon(points))
            if not polygon.is_empty:
                self._select_new(self.add([polygon], "Draw polygon"))
        elif self.tool == "line" and len(points) >= 2:
            self._select_new(self.add([shapely.LineString(points)], "Draw line"))

    def _select_new(self, ids: list[int]) -> None:
        if ids:
            self.select(ids[0])

    # -- events ------------------------------------------------------------------------------

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if self.layer is None or self.view.current_slide is None:
            return False
        kind = event.type()
        if watched is self.view and kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
            assert isinstance(event, QKeyEvent)
            if event.key() == Qt.Key.Key_Space:
                if not event.isAutoRepeat():
                    self._set_space_held(kind == QEvent.Type.KeyPress)
                return True
            return self._key(event) if kind == QEvent.Type.KeyPress else False
        if watched is self.view and kind == QEvent.Type.FocusOut:
            self._set_space_held(False)  # the release would go elsewhere
            return False
        if watched is not self.view.viewport():
            return False
        if kind == QEvent.Type.MouseButtonPress:
            return self._press(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.MouseMove:
            return self._move(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.MouseButtonRelease:
            return self._release(event)  # type: ignore[arg-type]
        if kind == QEvent.Type.MouseButtonDblClick:
            if self.tool in ("polygon", "line") and self._points:
                self._finish_path()
                return True
            return self.tool != "select"
        return False

    def _set_space_held(self, held: bool) -> None:
        if held == self._space_held:
            return
        self._space_held = held
        viewport = self.view.viewport()
        if held:
            viewport.setCursor(Qt.CursorShape.OpenHandCursor)
        elif self.tool == "select":
            viewport.unsetCursor()
        else:
            viewport.setCursor(Qt.CursorShape.CrossCursor)

    def _key(self, event: QKeyEvent) -> bool:
        key = event.key()
        if key == Qt.Key.Key_Escape:
            if self._points or self._drag:
                self._cancel()
            else:
                self.select(None)
            return True
        if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self._points:
            self._finish_path()
            return True
        if key == Qt.Key.Key_Backspace and self._points:
            self._points.pop()
            self._update_path_preview(None)
            return True
        if key == Qt.Key.Key_BracketLeft:
            self.brush_px = max(2.0, self.brush_px / 1.25)
            self.window.statusBar().showMessage(f"Brush radius {self.brush_px:.0f} px", 2000)
            return True
        if key == Qt.Key.Key_BracketRight:
            self.brush_px = min(300.0, self.brush_px * 1.25)
            self.window.statusBar().showMessage(f"Brush radius {self.brush_px:.0f} px", 2000)
            return True
        return False

    def _level0(self, event: QMouseEvent) -> tuple[float, float]:
        return self.view.view_to_level0(event.position())

    def _press(self, event: QMouseEvent) -> bool:
        assert self.layer is not None
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (
            button == Qt.MouseButton.LeftButton and self._space_held
        ):
            self._drag = "pan"
            self._pan_button = button
            self._pan_last = event.position()
            return True
        if button != Qt.MouseButton.LeftButton:
            return False
        x, y = self._level0(event)
        downsample = self.layer.downsample()
        tolerance = PICK_PX * downsample
        self._drag_start = (x, y)
        if self.tool == "select":
            vertex = self.document.vertex_at(x, y, tolerance)
            if vertex is not None and self.selected is not None and self._locked(self.selected):
                return True
            if vertex is not None:
                self._drag = "vertex"
                self._drag_vertex = vertex
                return True
            hit = self.document.annotation_at(x, y, tolerance, self._shown)
            if hit is not None:
                if hit != self.selected:
                    self.select(hit)
                if self._locked(hit):
                    return True  # selected, so it can be inspected or unlocked, but not moved
                self._drag = "move"
                return True
            if self.selected is not None:
                self.select(None)
            self._drag = "view"  # the view pans (ScrollHandDrag)
            return False
        if self.tool in ("rectangle", "ellipse"):
            self._drag = "rect"
            return True
        if self.tool in ("polygon", "line"):
            self._points.append((x, y))
            self._update_path_preview((x, y))
            return True
        if self.tool == "point":
            slide = self.view.current_slide
            width, height = slide.dimensions if slide is not None else (0, 0)
            if not (0 <= x < width and 0 <= y < height):
                self.window.statusBar().showMessage(
                    "A point goes on the slide, not beside it", 4000
                )
                return True
            self._select_new(self.add([shapely.Point(x, y)], "Place point"))
            return True
        if self.tool in ("brush", "erase"):
            self._drag = "brush"
            self._points = [(x, y)]
            self._update_brush_preview()
            return True
        return False

    def _move(self, event: QMouseEvent) -> bool:
        assert self.layer is not None
        x, y = self._level0(event)
        if self._drag == "pan":
            delta = event.position() - self._pan_last
            self._pan_last = event.position()
            self.view.pan_by(-delta.x(), -delta.y())
            return True
        if self._drag is None or self._drag == "view":
            if self.tool in ("polygon", "line") and self._points:
                self._update_path_preview((x, y))
            return False  # the view tracks the cursor (status bar) and pans
        self.view.cursorMoved.emit(x, y)
        x0, y0 = self._drag_start
        if self._drag in ("move", "vertex") and self.selected is not None:
            geometry = self._dragged_geometry(x, y)
            first = self.layer.override is None
            self.layer.override = geometry
            if first:
                self.layer.invalidate_paths()
            self.layer.update()
        elif self._drag == "rect":
            path = QPainterPath()
            if self.tool == "ellipse":
                path.addEllipse(min(x0, x), min(y0, y), abs(x - x0), abs(y - y0))
            else:
                path.addRect(min(x0, x), min(y0, y), abs(x - x0), abs(y - y0))
            self.layer.preview = path
            self.layer.update()
        elif self._drag == "brush":
            self._points.append((x, y))
            self._update_brush_preview()
        return True

    def _release(self, event: QMouseEvent) -> bool:
        assert self.layer is not None
        drag = self._drag
        if drag == "pan" and event.button() == self._pan_button:
            self._drag = None
            return True
        if event.button() != Qt.MouseButton.LeftButton:
            return False
        if drag is None or drag == "view":
            self._drag = None
            return self.tool != "select"
        x, y = self._level0(event)
        x0, y0 = self._drag_start
        downsample = self.layer.downsample()
        if drag in ("move", "vertex"):
            selected = self.selected
            moved = math.hypot(x - x0, y - y0) / downsample >= 1.0
            geometry = self._dragged_geometry(x, y) if moved else None
            self._cancel()
            if selected is not None and geometry is not None:
                annotation = self.document.annotations[selected]
                if drag == "vertex":
                    repaired = (
                        polygonal(geometry)
                        if geometry.geom_type in ("Polygon", "MultiPolygon")
                        else geometry
                    )
                    geometry = repaired if not repaired.is_empty else annotation.geometry
                text = "Move annotation" if drag == "move" else "Edit vertex"
                self.modify(selected, replace(annotation, geometry=geometry), text)
            return True
        if drag == "rect":
            self._cancel()
            if min(abs(x - x0), abs(y - y0)) / downsample >= MIN_DRAG_PX:
                if self.tool == "ellipse":
                    shape = ellipse((x0 + x) / 2, (y0 + y) / 2, abs(x - x0) / 2, abs(y - y0) / 2)
                    self._select_new(self.add([shape], "Draw ellipse"))
                else:
                    box = shapely.box(min(x0, x), min(y0, y), max(x0, x), max(y0, y))
                    self._select_new(self.add([box], "Draw rectangle"))
            return True
        if drag == "brush":
            self._points.append((x, y))
            points = list(self._points)
            radius = self.brush_px * downsample
            self._cancel()
            self.apply_brush(points, radius, erase=self.tool == "erase")
            return True
        self._drag = None
        return True

    def _dragged_geometry(self, x: float, y: float) -> BaseGeometry:
        assert self.layer is not None and self.selected is not None
        geometry = self.document.annotations[self.selected].geometry
        x0, y0 = self._drag_start
        if self._drag == "move":
            return shapely.transform(geometry, lambda c: c + (x - x0, y - y0))
        vx, vy = self._drag_vertex

        def move_vertex(coords: Any) -> Any:
            # Every copy of the vertex moves (a ring's first and closing points are equal).
            same = (coords[:, 0] == vx) & (coords[:, 1] == vy)
            coords = coords.copy()
            coords[same] = (x, y)
            return coords

        return shapely.transform(geometry, move_vertex)

    def _update_path_preview(self, cursor: tuple[float, float] | None) -> None:
        assert self.layer is not None
        points = list(self._points) + ([cursor] if cursor is not None else [])
        if not points:
            self.layer.preview = None
        else:
            path = QPainterPath(QPointF(*points[0]))
            for p in points[1:]:
                path.lineTo(QPointF(*p))
            if self.tool == "polygon" and len(points) >= 3:
                path.closeSubpath()
            self.layer.preview = path
        self.layer.preview_brush_width = 0.0
        self.layer.update()

    def _update_brush_preview(self) -> None:
        assert self.layer is not None
        path = QPainterPath(QPointF(*self._points[0]))
        for p in self._points[1:]:
            path.lineTo(QPointF(*p))
        if len(self._points) == 1:
            path.lineTo(QPointF(self._points[0][0] + 0.01, self._points[0][1]))
        self.layer.preview = path
        self.layer.preview_brush_width = 2.0 * self.brush_px * self.layer.downsample()
        self.layer.preview_erase = self.tool == "erase"
        self.layer.update()

    def apply_brush(self, points: list[tuple[float, float]], radius: float, erase: bool) -> None:
        """Union a brush stroke (``points`` swept by a disk of ``radius`` level-0 px) into the
        selected region or a new one, or subtract it (``erase``); see
        :func:`~pathviewer.core.annotation_document.plan_brush`."""
        if self.layer is None or not points:
            return
        edits = plan_brush(self.document, points, radius, erase, self._shown)
        if not erase and not edits and self.selected is not None:
            self._locked(self.selected)  # says why the brush did nothing
            return
        if edits.add is not None:
            self._select_new(self.add([edits.add], "Brush"))
            return
        text = "Erase" if erase else "Brush"
        if not edits or self.stack is None:
            return
        self.stack.beginMacro(text)
        try:
            for annotation_id, geometry in edits.modify:
                before = self.document.annotations[annotation_id]
                after = replace(before, geometry=geometry)
                self.push(
                    lambda s, i=annotation_id, b=before, a=after: ModifyAnnotationCommand(
                        s, i, b, a, text
                    )
                )
            if edits.delete:
                self.push(lambda s: DeleteAnnotationsCommand(s, edits.delete, text))
        finally:
            self.stack.endMacro()

    # -- import / export ---------------------------------------------------------------------

    def import_file(self, path: str, confirm: Callable[[str], bool] | None = None) -> int:
        """Import GeoJSON, ASAP or Aperio XML or NDPA into the current slide, all or nothing;
        returns the count.

        Classes the palette lacks are added to it (each with its own colour).  When some shapes
        lie wholly outside the slide (a file made for another slide), ``confirm`` is asked
        with a sentence saying so; False imports nothing (without ``confirm`` the import goes
        on).

        Raises
        ------
        PathViewerError
            The file is malformed (the message names the feature); nothing was imported.
        """
        slide = self.view.current_slide
        if slide is None:
            raise PathViewerError("open a slide before importing annotations")
        # NDPA places its shapes with the slide's resolution and offset from the slide centre.
        annotations = read_annotations(path, dict(slide.properties))
        if self.qupath_coordinates and annotation_format(path) == "geojson":
            dx, dy = qupath_offset(slide.properties)
            annotations = shift_annotations(annotations, dx, dy)
        outside = outside_slide(annotations, slide.dimensions)
        if outside and confirm is not None:
            width, height = slide.dimensions
            question = (
                f"{outside} of the {len(annotations)} annotations in {Path(path).name} lie"
                f" wholly outside this slide ({width} × {height} px): the file may belong to"
                " another slide. Import them anyway?"
            )
            if not confirm(question):
                return 0
        new_classes = new_class_colors(annotations, self.classes)
        if new_classes:
            project = self.ensure_project()
            for name, rgb in new_classes.items():
                project.set_class(name, rgb)
            self.classes = project.classes()
            self.panel.set_classes(self.classes, self.current_class)
            if self.layer is not None:
                self.layer.set_palette(self.classes)
        command = self.push(
            lambda s: AddAnnotationsCommand(s, annotations, f"Import {Path(path).name}")
        )
        return 0 if command is None else len(annotations)

    def set_qupath_coordinates(self, on: bool) -> None:
        """Read and write GeoJSON in QuPath's (bounds-cropped) coordinates, or in OpenSlide's."""
        self.qupath_coordinates = bool(on)

    def export_file(self, path: str) -> int:
        """Write the current slide's annotations (format by extension); returns the count."""
        annotations = list(self.document.annotations.values())
        slide = self.view.current_slide
        if slide is not None and self.qupath_coordinates and annotation_format(path) == "geojson":
            dx, dy = qupath_offset(slide.properties)
            annotations = shift_annotations(annotations, -dx, -dy)
        write_annotations(path, annotations)
        return len(annotations)

    def import_interactively(self) -> None:
        """Tools > Import annotations…"""
        if self.view.current_slide is None:
            QMessageBox.information(self.window, "Import annotations", "Open a slide first.")
            return
        path = file_dialogs.open_file(
            self.window,
            self.window.settings,
            "annotations",
            "Import annotations",
            "Annotations: QuPath, ASAP, Aperio ImageScope, NDP.view"
            " (*.geojson *.json *.xml *.ndpa);;All files (*)",
        )
        if not path:
            return

        def confirm(question: str) -> bool:
            answer = QMessageBox.question(
                self.window,
                "Import annotations",
                question,
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No,
            )
            return answer == QMessageBox.StandardButton.Yes

        try:
            count = self.import_file(path, confirm)
        except PathViewerError as error:
            QMessageBox.critical(self.window, "Import failed", str(error))
            return
        if count == 0:
            self.window.statusBar().showMessage("Nothing imported", 5000)
            return
        self.window.statusBar().showMessage(f"Imported {count} annotations from {path}", 8000)

    def export_interactively(self) -> None:
        """Tools > Export annotations…"""
        if self.view.current_slide is None:
            QMessageBox.information(self.window, "Export annotations", "Open a slide first.")
            return
        slide_path = Path(self.view.current_slide.path)
        path, _ = file_dialogs.save_file(
            self.window,
            self.window.settings,
            "annotations",
            "Export annotations",
            "QuPath GeoJSON (*.geojson *.json);;ASAP XML (*.xml)",
            suggested=slide_path.stem + ".geojson",
            near=str(slide_path.parent),
        )
        if not path:
            return
        try:
            count = self.export_file(path)
        except USER_ERRORS as error:
            QMessageBox.critical(self.window, "Export failed", message_about(error, path))
            return
        self.window.statusBar().showMessage(f"Exported {count} annotations to {path}", 8000)


def install(window: MainWindow, project: ProjectController) -> AnnotationController:
    """Add annotation editing to the main window (see the module docstring); return its
    controller, which saves in ``project``'s open project."""
    controller = AnnotationController(window, project)
    view = window.slide_view
    shortcut_context = Qt.ShortcutContext.WidgetWithChildrenShortcut

    # Toolbar of tools; shortcuts only while the slide view has focus.
    toolbar = QToolBar("Annotate", window)
    toolbar.setObjectName("toolbar-annotate")
    group = QActionGroup(window)
    group.setExclusive(True)
    for name, (label, _hint) in TOOLS.items():
        action = QAction(label, window, checkable=True)
        action.setShortcutContext(shortcut_context)
        action.setChecked(name == "select")
        action.triggered.connect(lambda _checked=False, n=name: controller.set_tool(n))
        group.addAction(action)
        toolbar.addAction(action)
        view.addAction(action)
        controller.tool_actions[name] = action
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
    controller.toolbar = toolbar

    # Class shortcuts 1-9, also bound to the view only (the review dock uses number keys too).
    for number in range(1, 10):
        shortcut = QShortcut(QKeySequence(str(number)), view)
        shortcut.setContext(shortcut_context)
        shortcut.activated.connect(lambda n=number: controller.class_by_number(n))
        controller.class_shortcuts.append(shortcut)

    # Edit menu: undo/redo of the current slide's stack, delete.
    menu = window.menu("edit")
    undo = controller.undo_group.createUndoAction(window, "&Undo")
    undo.setShortcuts([QKeySequence("Ctrl+Z")])
    redo = controller.undo_group.createRedoAction(window, "&Redo")
    redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
    delete = QAction("&Delete annotation", window)
    delete.setShortcuts([QKeySequence(Qt.Key.Key_Delete)])
    delete.setShortcutContext(shortcut_context)
    delete.triggered.connect(controller.delete_selected)
    view.addAction(delete)
    lock = QAction("&Lock / unlock annotation", window)
    lock.setShortcut(QKeySequence("Ctrl+L"))
    lock.setShortcutContext(shortcut_context)
    lock.setToolTip("A locked annotation (QuPath's isLocked) cannot be moved, edited or deleted")
    lock.triggered.connect(controller.toggle_lock_selected)
    view.addAction(lock)
    menu.addActions([undo, redo])
    menu.addSeparator()
    menu.addActions([delete, lock])
    controller.undo_action = undo
    controller.redo_action = redo
    controller.delete_action = delete
    controller.lock_action = lock

    # Tools menu: import / export.
    window.menu("tools").addSeparator()
    import_action = QAction("&Import annotations…", window)
    import_action.triggered.connect(controller.import_interactively)
    export_action = QAction("&Export annotations…", window)
    export_action.triggered.connect(controller.export_interactively)
    qupath = QAction("GeoJSON in &QuPath coordinates", window, checkable=True, checked=True)
    qupath.setToolTip(
        "QuPath crops a slide to its bounds (openslide.bounds-x/y, typical of MRXS): shift"
        " GeoJSON by them on import and export so a file lands on the same tissue in both apps"
    )
    qupath.toggled.connect(controller.set_qupath_coordinates)
    window.menu("tools").addActions([import_action, export_action, qupath])
    controller.import_action = import_action
    controller.export_action = export_action

    # View menu: annotation visibility. A and Shift+F act on the slide view only, so text
    # fields keep their letters (QuPath's keys for the same toggles).
    show = QAction("Show &annotations", window, checkable=True, checked=True)
    show.setShortcut(QKeySequence("A"))
    show.setShortcutContext(shortcut_context)
    show.toggled.connect(controller.set_annotations_visible)
    fill = QAction("F&ill annotations", window, checkable=True, checked=True)
    fill.setShortcutContext(shortcut_context)
    fill.toggled.connect(controller.set_filled)
    view.addAction(show)
    view.addAction(fill)
    window.menu("view").addActions([show, fill])
    controller.show_action = show
    controller.fill_action = fill

    dock = QDockWidget("Annotations", window)
    dock.setObjectName("dock-annotations")
    dock.setWidget(controller.panel)
    window.add_dock(dock, Qt.DockWidgetArea.RightDockWidgetArea, "annotations")

    window.context_menu_providers.append(controller.context_actions)
    window.describe_keys(
        [
            ("Space + drag, middle drag", "Pan, whatever the tool"),
            ("1-9", "Class of new (and the selected) annotation"),
            ("[ ]", "Brush size"),
            ("Enter, double-click", "Finish a polygon or line"),
            ("Backspace", "Undo the last vertex"),
            ("Esc", "Cancel drawing, or clear the selection"),
        ]
    )

    project.projectChanged.connect(controller.on_project_changed)
    controller.on_project_changed(controller.project)
    if view.current_slide is not None:
        controller._on_slide_changed(view.current_slide)
    return controller
