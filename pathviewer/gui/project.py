"""The open project of the main window: File > New/Open project, shared by annotation and review.

``window.context.project`` (a :class:`ProjectController`) holds the open
:class:`~pathviewer.core.store.Project`; features listen to ``projectChanged`` and read
``controller.project``.  The store itself is the source of truth: every edit is committed by
the store, so there is no Save action.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, QSettings, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QMessageBox

from pathviewer.core.errors import USER_ERRORS, PathViewerError, message_about
from pathviewer.core.store import DB_NAME, Project
from pathviewer.gui import file_dialogs

if TYPE_CHECKING:
    from pathviewer.gui.main_window import MainWindow

log = logging.getLogger(__name__)

LAST_PROJECT_SETTING = "project/last"
#: The projects opened most recently, newest first (File > Recent projects).
RECENT_PROJECTS_SETTING = "project/recent"
MAX_RECENT_PROJECTS = 8


class ProjectController(QObject):
    """Owns the open project and announces changes.

    Signals
    -------
    projectChanged(object)
        Emitted with the new :class:`Project` (or None when closed).
    """

    projectChanged = Signal(object)

    def __init__(self, parent: QObject | None = None, settings: QSettings | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.actions: tuple[QAction, ...] = ()
        self.settings = settings or QSettings()

    def recent(self) -> list[str]:
        """Project folders opened before, newest first, that still hold a project."""
        value = self.settings.value(RECENT_PROJECTS_SETTING, [])
        if isinstance(value, str):
            folders = [value]
        elif isinstance(value, (list, tuple)):
            folders = [str(v) for v in value]
        else:
            folders = []
        return [f for f in folders if (Path(f) / DB_NAME).is_file()]

    def reopen_last(self) -> Project | None:
        """Open the project that was open when the app last closed (None when there is none).

        Annotations drawn in the automatic default project then show again on the next launch
        instead of looking lost.  A project that no longer opens is skipped with a log line.
        """
        last = str(self.settings.value(LAST_PROJECT_SETTING, "") or "")
        if not last or not (Path(last) / DB_NAME).is_file():
            return None
        try:
            return self.open(last)
        except PathViewerError as error:
            log.warning("last project %s not reopened: %s", last, error)
            return None

    def open(self, folder: str | Path, create: bool = False) -> Project:
        """Open (or create) the project in ``folder`` and make it current.

        Raises
        ------
        PathViewerError
            The folder holds no project (when not creating) or the database is unusable.
        """
        folder = Path(folder)
        project = (
            Project.create(folder)
            if create and not (folder / DB_NAME).exists()
            else Project.open(folder)
        )
        self.close()
        self.project = project
        self.settings.setValue(LAST_PROJECT_SETTING, str(folder))
        resolved = str(folder.resolve())
        recent = [f for f in self.recent() if f != resolved]
        self.settings.setValue(RECENT_PROJECTS_SETTING, [resolved, *recent][:MAX_RECENT_PROJECTS])
        log.info("project opened: %s", folder)
        self.projectChanged.emit(project)
        return project

    def close(self) -> None:
        """Close the current project (nothing to save: every edit is already committed)."""
        if self.project is not None:
            self.project.close()
            self.project = None
            self.projectChanged.emit(None)


def install(window: MainWindow) -> ProjectController:
    """Add the File menu's project actions; return the window's project controller."""
    controller = ProjectController(window, window.settings)

    def choose(create: bool) -> None:
        title = "New project folder" if create else "Open project folder"
        folder = file_dialogs.choose_folder(window, window.settings, "projects", title)
        if not folder:
            return
        try:
            project = controller.open(folder, create=create)
        except PathViewerError as error:
            QMessageBox.warning(window, "Project", str(error))
            return
        # The project's slides become the cohort list, so an annotator sees what the project holds.
        slides = project.slides()
        if slides:
            window.open_paths([slides[0].path])

    def export_audit() -> None:
        project = controller.project
        if project is None:
            QMessageBox.information(window, "Audit trail", "Open a project first.")
            return
        path, _ = file_dialogs.save_file(
            window,
            window.settings,
            "exports",
            "Export audit trail",
            "CSV (*.csv)",
            suggested="audit.csv",
            near=str(project.folder),
        )
        if not path:
            return
        try:
            count = project.export_audit_csv(path)
        except USER_ERRORS as error:
            QMessageBox.warning(window, "Audit trail", message_about(error, path))
            return
        window.statusBar().showMessage(f"{count} events written to {path}", 8000)

    file_menu = window.menu("file")
    new_action = QAction("New Project…", window)
    new_action.triggered.connect(lambda: choose(True))
    open_action = QAction("Open Project…", window)
    open_action.triggered.connect(lambda: choose(False))
    recent_menu = QMenu("Recent p&rojects", window)

    def fill_recent() -> None:
        recent_menu.clear()
        folders = controller.recent()
        if not folders:
            recent_menu.addAction("(none)").setEnabled(False)
        for folder in folders:
            action = recent_menu.addAction(folder)
            action.triggered.connect(lambda _checked=False, f=folder: open_folder(f))

    def open_folder(folder: str) -> None:
        try:
            controller.open(folder)
        except PathViewerError as error:
            QMessageBox.warning(window, "Project", str(error))

    recent_menu.aboutToShow.connect(fill_recent)
    audit_action = QAction("Export &audit trail…", window)
    audit_action.setToolTip("Who changed which label, annotation or slide decision when (CSV)")
    audit_action.triggered.connect(export_audit)
    recent_action = recent_menu.menuAction()
    existing = file_menu.actions()
    if existing:
        first = existing[0]
        for action in (new_action, open_action, recent_action, audit_action):
            file_menu.insertAction(first, action)
        file_menu.insertSeparator(first)
    else:  # what insertAction(None, ...) does: append
        for action in (new_action, open_action, recent_action, audit_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
    controller.actions = (new_action, open_action, audit_action)
    return controller
