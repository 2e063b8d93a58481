"""The main window: slide view, docks, menus, status bar.

Extending it (heatmaps, training, annotations, review queue)
------------------------------------------------------------
* Features are built by :func:`pathviewer.gui.context.build_features`, which passes each the
  features it uses; the result is ``window.context``.
* ``window.slide_view`` is the :class:`~pathviewer.gui.viewer.slide_view.SlideView`; add scene items in
  level-0 coordinates and listen to ``slide_view.slideChanged`` to rebuild them for a new slide.
* Docks: :meth:`MainWindow.add_dock` registers a dock under a name (``window.docks[name]``)
  and puts its toggle action into the **View** menu.  Menus are named in ``window.menus``
  (file, edit, view, tools, help); commands go into **Tools**.
* ``window.scores.update({slide: (score, pred)}, source)`` records slide scores (the cohort
  list renders them); ``window.cohort_entries`` holds the rows of the open cohort CSV.
* ``window.open_paths(paths)`` opens slides or a cohort CSV (errors as dialogs, or raised with
  ``raise_errors=True`` for headless use).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QPoint, QPointF, QSettings, Qt, QTimer
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QColor,
    QDragEnterEvent,
    QDropEvent,
    QImage,
    QKeySequence,
    QPainter,
)
from PySide6.QtWidgets import (
    QDockWidget,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QScrollArea,
    QTabBar,
    QToolBar,
)

from pathviewer._version import __version__
from pathviewer.core.cohort import CohortEntry, read_cohort
from pathviewer.core.errors import USER_ERRORS, PathViewerError, SlideError, message_about
from pathviewer.core.identity import same_slide, slide_path_key
from pathviewer.core.slide import SLIDE_SUFFIXES
from pathviewer.gui import file_dialogs
from pathviewer.gui.viewer.panels import CohortPanel, PropertiesPanel
from pathviewer.gui.viewer.slide_view import (
    MAGNIFICATIONS,
    VIEW_KEYS,
    SlideView,
    open_slide_checked,
)
from pathviewer.session.scores import CohortScores

if TYPE_CHECKING:
    from pathviewer.gui.context import AppContext

log = logging.getLogger(__name__)

#: Help > Getting started: the first things to do, in order.
GETTING_STARTED = (
    "<b>1. Open slides.</b> File > Open slide (or drop a file); File > Open cohort CSV for a"
    " list of slides with labels (<code>slide,label,split,annotations</code>). Wheel zooms at"
    " the cursor; the toolbar buttons jump to a magnification; F fits.<br>"
    "<b>2. See a model's heatmap.</b> Tools > Train a model trains NGSD on the open cohort"
    " (the Training dock shows its progress); Tools > Analyse this slide scores the slide shown;"
    " Tools > Load predictions folder shows the output of <code>pathviewer infer</code>. H shows"
    " or hides it; the Heatmap dock lists its top regions (Why this region? shows similar"
    " training patches).<br>"
    "<b>3. Triage the cohort.</b> The Triage dock orders the slides by score, by disagreement"
    " with their label, or by uncertainty; N opens the next one, T walks its top regions.<br>"
    "<b>4. Annotate.</b> R rectangle, C ellipse, P polygon, B brush; 1-9 choose the class."
    " Everything is saved at once in the project (File > Recent projects).<br>"
    "<b>5. Review suspect labels.</b> Tools > Import review flags loads a label-refinement run's"
    " flags.csv into the Review queue: A accept, K keep, 1-9 another class.<br>"
    "F1 lists every key; Edit > Preferences switches to QuPath's keys."
)

RECENT_SETTING = "viewer/recent_files"
#: The window's size before the user resizes it (or a saved layout restores it).
DEFAULT_WIDTH, DEFAULT_HEIGHT = 1400, 900
#: QSettings keys of the window's size and dock layout, restored on the next launch.
GEOMETRY_SETTING = "window/geometry"
LAYOUT_SETTING = "window/state"
#: Bumped when the set of docks changes so much that an old layout would mislead.
LAYOUT_VERSION = 2
MAX_RECENT = 10


def create_properties_dock(window: MainWindow) -> QDockWidget:
    """The Properties dock (follows the slide of the view)."""
    panel = PropertiesPanel()
    window.properties_panel = panel
    window.slide_view.slideChanged.connect(panel.set_slide)
    dock = QDockWidget("Properties", window)
    dock.setObjectName("dock-properties")
    dock.setWidget(panel)
    return dock


def create_cohort_dock(window: MainWindow) -> QDockWidget:
    """The Cohort dock (slides of the open cohort CSV; a click opens one)."""
    panel = CohortPanel(window.scores)
    window.cohort_panel = panel
    panel.slideActivated.connect(window.open_slide)
    dock = QDockWidget("Cohort", window)
    dock.setObjectName("dock-cohort")
    dock.setWidget(panel)
    return dock


def with_caption(image: QImage, caption: str) -> QImage:
    """``image`` with a strip below it holding ``caption`` (one line, elided to the width)."""
    ratio = image.devicePixelRatio()
    width = round(image.width() / ratio)
    strip = 24
    out = QImage(image.width(), image.height() + round(strip * ratio), image.format())
    out.setDevicePixelRatio(ratio)
    out.fill(QColor(32, 33, 36))
    painter = QPainter(out)
    try:
        painter.drawImage(0, 0, image)
        painter.setPen(QColor(215, 215, 215))
        font = painter.font()
        font.setPointSizeF(9.0)
        painter.setFont(font)
        text = painter.fontMetrics().elidedText(caption, Qt.TextElideMode.ElideMiddle, width - 16)
        top = round(image.height() / ratio)
        painter.drawText(8, top, width - 16, strip, Qt.AlignmentFlag.AlignVCenter, text)
    finally:
        painter.end()
    return out


class MainWindow(QMainWindow):
    """PathViewer's main window (see the module docstring for how to extend it).

    Parameters
    ----------
    settings
        Where recent files and viewer settings live (default ``QSettings()``).
    threads
        Tile threads (default from the settings).
    """

    def __init__(self, settings: QSettings | None = None, threads: int | None = None) -> None:
        super().__init__()
        self.settings = settings or QSettings()
        self.setWindowTitle("PathViewer")
        self.setAcceptDrops(True)
        self.slide_view = SlideView(self, self.settings, threads=threads)
        self.setCentralWidget(self.slide_view)
        self.cohort_entries: list[CohortEntry] = []
        self.cohort_path: Path | None = None
        self.properties_panel: PropertiesPanel
        self.cohort_panel: CohortPanel
        self.scores = CohortScores()
        self.docks: dict[str, QDockWidget] = {}
        # Coalesces the tab-bar tidy-up after dock changes (see _tidy_tab_bars).
        self._tab_bar_timer = QTimer(self)
        self._tab_bar_timer.setSingleShot(True)
        self._tab_bar_timer.setInterval(0)
        self._tab_bar_timer.timeout.connect(self._tidy_tab_bars)
        self.menus: dict[str, QMenu] = {}
        #: Called when the window closes, before the slide view shuts down (features that
        #: own threads or files stop them here).
        self.close_hooks: list[Callable[[], None]] = []
        #: Right-click menu of the slide view: each provider gets the level-0 point clicked and
        #: returns its actions (an empty list when it has nothing there); see context_menu.
        self.context_menu_providers: list[Callable[[float, float], list[QAction]]] = []
        #: Each feature's part of an exported figure's provenance line ('' when it has none
        #: to give): the heatmap says its run, threshold and colormap.
        self.figure_captions: list[Callable[[], str]] = []
        #: Keys handled outside menu actions (key, what it does); see describe_keys.
        self.key_descriptions: list[tuple[str, str]] = list(VIEW_KEYS)
        self._context: AppContext | None = None
        self._build_menus()
        self._build_toolbar()
        self._build_status_bar()
        self.properties_dock = create_properties_dock(self)
        self.cohort_dock = create_cohort_dock(self)
        self.add_dock(self.cohort_dock, Qt.DockWidgetArea.LeftDockWidgetArea, "cohort")
        self.add_dock(self.properties_dock, Qt.DockWidgetArea.RightDockWidgetArea, "properties")
        self.cohort_dock.hide()
        self.resizeDocks([self.properties_dock], [self.dock_width(380)], Qt.Orientation.Horizontal)
        self.slide_view.slideChanged.connect(self._on_slide_changed)
        self.slide_view.viewChanged.connect(self._update_zoom_label)
        self.slide_view.cursorMoved.connect(self._update_cursor_label)
        self.slide_view.pipeline.tileFailed.connect(self._on_tile_failed)
        self.slide_view.viewport().setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.slide_view.viewport().customContextMenuRequested.connect(self._show_context_menu)
        self.resize(DEFAULT_WIDTH, DEFAULT_HEIGHT)

    # -- structure ---------------------------------------------------------------------------

    @property
    def context(self) -> AppContext:
        """The features built by :func:`~pathviewer.gui.context.build_features`.

        Raises
        ------
        RuntimeError
            No features were built for this window (a bare viewer).
        """
        if self._context is None:
            raise RuntimeError("this window was built without features (build_features)")
        return self._context

    @context.setter
    def context(self, context: AppContext) -> None:
        self._context = context

    @property
    def has_features(self) -> bool:
        """Whether :func:`~pathviewer.gui.context.build_features` ran for this window."""
        return self._context is not None

    def add_dock(
        self,
        dock: QDockWidget,
        area: Qt.DockWidgetArea = Qt.DockWidgetArea.RightDockWidgetArea,
        name: str = "",
        tab_with: str = "",
    ) -> None:
        """Add a dock, register it as ``docks[name]`` and put its toggle in the View menu.

        Parameters
        ----------
        name
            Registry key (default: the object name without its ``dock-`` prefix).
        tab_with
            Name of a registered dock to share a tab group with.

        Raises
        ------
        ValueError
            A dock of that name is registered already.
        """
        name = name or dock.objectName().removeprefix("dock-")
        if name in self.docks:
            raise ValueError(f"a dock named {name!r} exists already")
        content = dock.widget()
        if content is not None and not isinstance(content, QScrollArea):
            # A dock as tall as its contents would make the window taller than a 768 px
            # screen once two are stacked; in a scroll area it shrinks and its contents scroll.
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QScrollArea.Shape.NoFrame)
            scroll.setWidget(content)
            dock.setWidget(scroll)
        self.docks[name] = dock
        self.addDockWidget(area, dock)
        if tab_with in self.docks:
            self.tabifyDockWidget(self.docks[tab_with], dock)
        self.views_menu.addAction(dock.toggleViewAction())
        dock.visibilityChanged.connect(lambda _visible: self._tab_bar_timer.start())
        dock.topLevelChanged.connect(lambda _floating: self._tab_bar_timer.start())

    def _tidy_tab_bars(self) -> None:
        """Hide dock tab bars left over by Qt for groups of hidden docks.

        Qt keeps a tab group's bar after its docks are hidden (one dock tabified with a hidden
        one, or a restored layout), and draws it at the window's top-left corner, over the
        File menu.
        """
        # A dock behind another's tab is hidden but still open: its View menu toggle says so.
        shown = {
            d.windowTitle()
            for d in self.docks.values()
            if d.toggleViewAction().isChecked() and not d.isFloating()
        }
        for bar in self.findChildren(QTabBar, options=Qt.FindChildOption.FindDirectChildrenOnly):
            # Only a bar none of whose docks is open: Qt builds a live group's bar tab by tab,
            # so a bar with one open dock may be one about to gain its second tab.
            if bar.isVisible() and not any(bar.tabText(i) in shown for i in range(bar.count())):
                bar.hide()

    def context_menu(self, x: float, y: float) -> QMenu:
        """The slide view's right-click menu at level-0 ``(x, y)``: what features offer there,
        then the view's own commands."""
        menu = QMenu(self)
        for provider in self.context_menu_providers:
            actions = provider(x, y)
            if actions:
                menu.addActions(actions)
                menu.addSeparator()
        menu.addAction(self.fit_action)
        for action in self.views_menu.actions():
            if action.isCheckable() and action.text().startswith(("Show", "F&ill", "Fill")):
                menu.addAction(action)
        menu.addAction(self.figure_action)
        return menu

    def _show_context_menu(self, position: QPoint) -> None:
        if self.slide_view.current_slide is None:
            return
        x, y = self.slide_view.view_to_level0(QPointF(position))
        self.context_menu(x, y).exec(self.slide_view.viewport().mapToGlobal(position))

    def describe_keys(self, entries: Sequence[tuple[str, str]]) -> None:
        """Add keys that are not menu shortcuts to Help > Keyboard shortcuts."""
        self.key_descriptions.extend(entries)

    def keyboard_shortcuts(self) -> list[tuple[str, str]]:
        """Every key of the window: menu and toolbar actions, then the described keys."""
        rows: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for action in self.findChildren(QAction):
            keys = ", ".join(
                s.toString(QKeySequence.SequenceFormat.NativeText) for s in action.shortcuts()
            )
            name = action.text().split("\t")[0].replace("&", "").rstrip("…")
            if "\t" in action.text() and not keys:
                keys = action.text().split("\t")[1]  # a key the slide view handles itself
            if keys and name and (keys, name) not in seen:
                seen.add((keys, name))
                rows.append((keys, name))
        return sorted(rows, key=lambda row: row[1].lower()) + list(self.key_descriptions)

    def show_keyboard_shortcuts(self) -> None:
        """Help > Keyboard shortcuts: the list of :meth:`keyboard_shortcuts`."""
        from pathviewer.gui.preferences import KeyboardShortcutsDialog

        KeyboardShortcutsDialog(self.keyboard_shortcuts(), self).exec()

    def dock_width(self, preferred: int) -> int:
        """A side dock's width: ``preferred``, but at most 28 % of the window, so that with a
        dock on each side the slide keeps nearly half of a 1024 px screen."""
        # The window is usually shown maximised or at its default 1400 px: the screen, not
        # the window's size while it is being built, says how much room there will be.
        width = DEFAULT_WIDTH
        screen = self.screen()
        if screen is not None:
            width = min(width, screen.availableGeometry().width())
        return max(220, min(preferred, int(width * 0.28)))

    def menu(self, name: str) -> QMenu:
        """The menu registered as ``name`` (file, edit, view, tools, help), shown once used."""
        menu = self.menus[name]
        menu.menuAction().setVisible(True)
        return menu

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        open_action = QAction("&Open slide…", self)
        open_action.setShortcut(QKeySequence.StandardKey.Open)
        open_action.triggered.connect(self.choose_slide)
        file_menu.addAction(open_action)
        cohort_action = QAction("Open &cohort CSV…", self)
        cohort_action.triggered.connect(self.choose_cohort)
        file_menu.addAction(cohort_action)
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        figure_action = QAction("Export &figure (PNG)…", self)
        figure_action.setToolTip(
            "The slide view with its overlays, scale bar and colour bar, at twice the screen's"
            " resolution"
        )
        figure_action.triggered.connect(self.choose_figure_file)
        file_menu.addAction(figure_action)
        self.figure_action = figure_action
        file_menu.addSeparator()
        close_action = QAction("&Close slide", self)
        close_action.setShortcut(QKeySequence.StandardKey.Close)
        close_action.triggered.connect(self.slide_view.close_slide)
        file_menu.addAction(close_action)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close_by_user)
        file_menu.addAction(quit_action)
        self.file_menu = file_menu
        # Edit holds only what features add (undo, delete), so it stays hidden until used.
        self.edit_menu = bar.addMenu("&Edit")
        self.edit_menu.menuAction().setVisible(False)

        self.views_menu = bar.addMenu("&View")
        fit = QAction("&Fit to window", self)
        fit.setShortcut(QKeySequence("F"))
        fit.triggered.connect(self.slide_view.fit_to_window)
        zoom_in = QAction("Zoom &in", self)
        zoom_in.setShortcut(QKeySequence.StandardKey.ZoomIn)
        zoom_in.triggered.connect(lambda: self.slide_view.zoom_by(1.25))
        zoom_out = QAction("Zoom &out", self)
        zoom_out.setShortcut(QKeySequence.StandardKey.ZoomOut)
        zoom_out.triggered.connect(lambda: self.slide_view.zoom_by(0.8))
        self.views_menu.addActions([fit, zoom_in, zoom_out])
        minimap = QAction("&Minimap", self, checkable=True, checked=True)
        minimap.toggled.connect(self._toggle_minimap)
        self.views_menu.addAction(minimap)
        self.minimap_action = minimap
        color = QAction(
            "Use the slide's &colour profile",
            self,
            checkable=True,
            checked=self.slide_view.use_color_profile,
        )
        color.setEnabled(False)
        color.toggled.connect(self.slide_view.set_use_color_profile)
        self.views_menu.addAction(color)
        self.color_profile_action = color
        self.views_menu.addSeparator()
        self.fit_action = fit

        self.tools_menu = bar.addMenu("&Tools")
        help_menu = bar.addMenu("&Help")
        keys = QAction("&Keyboard shortcuts…", self)
        keys.setShortcut(QKeySequence("F1"))
        keys.triggered.connect(self.show_keyboard_shortcuts)
        help_menu.addAction(keys)
        start = QAction("&Getting started", self)
        start.triggered.connect(
            lambda: QMessageBox.information(self, "Getting started", GETTING_STARTED)
        )
        about = QAction("&About PathViewer", self)
        about.triggered.connect(
            lambda: QMessageBox.about(
                self,
                "PathViewer",
                f"<b>PathViewer {__version__}</b><br>Whole-slide image viewer with embedded AI:"
                " weakly supervised tumour heatmaps (NGSD), label refinement and accountable"
                " review.<br>Slides are read with OpenSlide; no data leaves this computer.",
            )
        )
        help_menu.addActions([start, about])
        self.menus.update(
            file=file_menu,
            edit=self.edit_menu,
            view=self.views_menu,
            tools=self.tools_menu,
            help=help_menu,
        )

    def _toggle_minimap(self, on: bool) -> None:
        self.slide_view.minimap.setVisible(on and self.slide_view.current_slide is not None)

    def _build_toolbar(self) -> None:
        toolbar = QToolBar("Navigation", self)
        toolbar.setObjectName("toolbar-navigation")
        toolbar.setMovable(False)
        toolbar.addAction(self.fit_action)
        toolbar.addSeparator()
        self.magnification_actions: dict[float, QAction] = {}
        group = QActionGroup(self)
        group.setExclusive(False)
        for magnification in MAGNIFICATIONS:
            action = QAction(f"{magnification:g}×", self, checkable=True)
            action.setToolTip(f"Zoom to {magnification:g}× objective magnification")
            action.triggered.connect(
                lambda _checked=False, m=magnification: self.slide_view.set_magnification(m)
            )
            group.addAction(action)
            toolbar.addAction(action)
            self.magnification_actions[magnification] = action
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)
        self.navigation_toolbar = toolbar

    def _build_status_bar(self) -> None:
        self.cursor_label = QLabel("")
        self.zoom_label = QLabel("")
        self.level_label = QLabel("")
        status = self.statusBar()
        status.addWidget(self.cursor_label, 1)
        status.addPermanentWidget(self.level_label)
        status.addPermanentWidget(self.zoom_label)

    # -- opening -----------------------------------------------------------------------------

    def open_paths(self, paths: Sequence[str], raise_errors: bool = False) -> bool:
        """Open slides or a cohort CSV (``.csv``): the cohort fills the Cohort panel, its first
        slide is shown; of several slides the first is shown and all are listed as recent.

        Returns
        -------
        bool
            True when something was opened.
        """
        opened = False
        for path in paths:
            if str(path).lower().endswith(".csv"):
                opened = self.open_cohort(str(path), raise_errors=raise_errors) or opened
            elif not opened:
                opened = self.open_slide(str(path), raise_errors=raise_errors)
            else:
                self._add_recent(str(path))
        return opened

    def open_slide(self, path: str, raise_errors: bool = False) -> bool:
        """Show the slide at ``path``; an error shows a dialog (or raises with ``raise_errors``)."""
        try:
            slide = open_slide_checked(path)
        except SlideError as error:
            log.warning("cannot open %s: %s", path, error)
            if raise_errors:
                raise
            QMessageBox.critical(self, "Cannot open slide", str(error))
            return False
        self.slide_view.set_slide(slide)
        self._add_recent(path)
        if self.cohort_entries:
            self.cohort_panel.select_path(slide_path_key(path))
        return True

    def open_cohort(self, csv_path: str, raise_errors: bool = False) -> bool:
        """Fill the Cohort panel from a cohort CSV and open its first slide."""
        try:
            entries = read_cohort(csv_path)
        except PathViewerError as error:
            log.warning("cannot open cohort %s: %s", csv_path, error)
            if raise_errors:
                raise
            QMessageBox.critical(self, "Cannot open cohort", str(error))
            return False
        if self.cohort_path is None or not same_slide(self.cohort_path, Path(csv_path)):
            self.scores.clear()  # keys of another cohort's slides may coincide
        self.cohort_entries = entries
        self.cohort_path = Path(csv_path)
        self.cohort_panel.set_entries(entries, f"{Path(csv_path).name}: {len(entries)} slides")
        self.cohort_dock.show()
        self.resizeDocks([self.cohort_dock], [self.dock_width(420)], Qt.Orientation.Horizontal)
        self.resizeDocks([self.properties_dock], [self.dock_width(380)], Qt.Orientation.Horizontal)
        self._add_recent(csv_path)
        return self.open_slide(str(entries[0].path), raise_errors=raise_errors)

    def choose_slide(self) -> None:
        patterns = " ".join(f"*{suffix}" for suffix in SLIDE_SUFFIXES)
        path = file_dialogs.open_file(
            self,
            self.settings,
            "slides",
            "Open slide",
            f"Slides ({patterns});;Cohort CSV (*.csv);;All files (*)",
        )
        if path:
            self.open_paths([path])

    def export_figure(self, path: str | Path, scale: float = 2.0) -> Path:
        """Write what the slide view shows as a PNG at ``scale`` x the screen resolution.

        Raises
        ------
        PathViewerError
            No slide is open, or the file cannot be written (OSError is passed on).
        """
        from pathviewer.core.atomic import atomic_write
        from pathviewer.gui.viewer.slide_view import png_bytes

        if self.slide_view.current_slide is None:
            raise PathViewerError("open a slide first")
        data = png_bytes(self.figure_image(scale))
        with atomic_write(path, "wb") as handle:
            handle.write(data)
        return Path(path)

    def figure_image(self, scale: float = 2.0) -> QImage:
        """The view at ``scale`` x the screen's resolution with its provenance line below."""
        return with_caption(self.slide_view.render_figure(scale), self.figure_provenance())

    def figure_provenance(self) -> str:
        """The line under an exported figure: the slide, what the features show, the date."""
        slide = self.slide_view.current_slide
        parts = [Path(slide.path).name] if slide is not None else []
        parts += [text for text in (caption() for caption in self.figure_captions) if text]
        parts.append(f"PathViewer {__version__}, {datetime.now().strftime('%Y-%m-%d %H:%M')}")
        return " · ".join(parts)

    def choose_figure_file(self) -> None:
        slide = self.slide_view.current_slide
        if slide is None:
            QMessageBox.information(self, "Export figure", "Open a slide first.")
            return
        path, _ = file_dialogs.save_file(
            self,
            self.settings,
            "exports",
            "Export figure",
            "PNG (*.png)",
            suggested=Path(slide.path).stem + ".figure.png",
            near=str(Path(slide.path).parent),
        )
        if not path:
            return
        try:
            self.export_figure(path)
        except USER_ERRORS as error:
            QMessageBox.warning(self, "Export figure", message_about(error, path))
            return
        self.statusBar().showMessage(f"Figure written to {path}", 8000)

    def choose_cohort(self) -> None:
        path = file_dialogs.open_file(
            self, self.settings, "cohorts", "Open cohort", "Cohort CSV (*.csv)"
        )
        if path:
            self.open_cohort(path)

    def recent_files(self) -> list[str]:
        value = self.settings.value(RECENT_SETTING, [])
        if isinstance(value, str):
            return [value]
        if not value:
            return []
        if not isinstance(value, Iterable):
            return [str(value)]
        return [str(v) for v in value]

    def _add_recent(self, path: str) -> None:
        path = slide_path_key(path)
        recent = [p for p in self.recent_files() if p != path]
        self.settings.setValue(RECENT_SETTING, [path, *recent][:MAX_RECENT])

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_files()
        if not recent:
            self.recent_menu.addAction("(none)").setEnabled(False)
        for path in recent:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _checked=False, p=path: self.open_paths([p]))

    # -- drag and drop -----------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt override
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            event.acceptProposedAction()
            self.open_paths(paths)

    # -- status ------------------------------------------------------------------------------

    def _on_slide_changed(self, slide: object) -> None:
        view = self.slide_view
        self.cursor_label.setText("")  # the last slide's coordinates mean nothing here
        power = view.current_slide.objective_power if view.current_slide is not None else None
        for magnification, action in self.magnification_actions.items():
            action.setEnabled(bool(power) and magnification <= 2 * (power or 0))
        color = view.color
        self.color_profile_action.setEnabled(color is not None)
        self.color_profile_action.setToolTip(
            f"Convert the scanner's colours ({color.description}) to sRGB for display"
            if color is not None
            else "This slide has no ICC colour profile"
        )
        if view.current_slide is not None:
            self.setWindowTitle(f"{Path(view.current_slide.path).name} — PathViewer")
            self.slide_view.minimap.setVisible(self.minimap_action.isChecked())
        else:
            self.setWindowTitle("PathViewer")
            self.cursor_label.setText("")
        self._update_zoom_label()

    def _on_tile_failed(self, reason: str) -> None:
        """Say in words which slide cannot be read and why (the red tiles alone are mute)."""
        slide = self.slide_view.current_slide
        name = Path(slide.path).name if slide is not None else "the slide"
        message = f"{name}: part of the image cannot be read ({reason}); red tiles mark it"
        log.warning("%s", message)
        self.statusBar().showMessage(message)  # stays until the next message

    def _update_zoom_label(self) -> None:
        view = self.slide_view
        if view.current_slide is None:
            self.zoom_label.setText("")
            self.level_label.setText("")
            return
        magnification = view.magnification()
        for preset, action in self.magnification_actions.items():
            # Checked only while the view is at that preset (a zoom step leaves it).
            at_preset = magnification is not None and abs(magnification - preset) < 0.02 * preset
            action.setChecked(at_preset)
        text = f"zoom {view.scale_factor() * 100:.1f}%"
        if magnification:
            text += f" · {magnification:.2f}×"
        self.zoom_label.setText(text)
        level = view.current_level()
        self.level_label.setText(
            f"level {level} (÷{view.current_slide.level_downsamples[level]:g})"
        )

    def _update_cursor_label(self, x: float, y: float) -> None:
        slide = self.slide_view.current_slide
        if slide is None:
            self.cursor_label.setText("")
            return
        width, height = slide.dimensions
        if not (0 <= x < width and 0 <= y < height):
            self.cursor_label.setText("")  # off the image: no coordinates to show
            return
        text = f"x {x:,.0f}  y {y:,.0f} px"
        if slide.mpp:
            text += f"   ({x * slide.mpp[0] / 1000:,.3f}, {y * slide.mpp[1] / 1000:,.3f}) mm"
        self.cursor_label.setText(text)

    def close_by_user(self) -> bool:
        """Close as the user asked (File > Quit): features may ask first (a running job)."""
        self.setProperty("closing_by_user", True)
        try:
            return self.close()
        finally:
            self.setProperty("closing_by_user", False)

    def save_layout(self) -> None:
        """Remember the window's size and its docks' places for the next launch."""
        self.settings.setValue(GEOMETRY_SETTING, self.saveGeometry())
        self.settings.setValue(LAYOUT_SETTING, self.saveState(LAYOUT_VERSION))

    def restore_layout(self) -> bool:
        """Put the window and docks back as they were when the app last closed.

        Called once every feature has added its docks (a state names docks by object name).
        A missing or unreadable state leaves the default layout.
        """
        geometry = self.settings.value(GEOMETRY_SETTING)
        state = self.settings.value(LAYOUT_SETTING)
        restored = False
        if isinstance(geometry, QByteArray) and not geometry.isEmpty():
            restored = self.restoreGeometry(geometry)
        if isinstance(state, QByteArray) and not state.isEmpty():
            restored = self.restoreState(state, LAYOUT_VERSION) and restored
        self._tab_bar_timer.start()
        return restored

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt override
        if self.has_features:
            self.save_layout()
        for hook in self.close_hooks:
            hook()
        self.slide_view.shutdown()
        super().closeEvent(event)
