"""Application entry points: :func:`run_app` (the ``pathviewer`` GUI) and :func:`create_main_window`.

``run_app(paths)`` is what ``pathviewer [SLIDE|COHORT.csv ...]`` and ``pathviewer demo`` call;
``create_main_window(paths)`` builds the same window without entering the event loop (tests,
screenshots).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QSettings
from PySide6.QtWidgets import QApplication

from pathviewer.core.errors import PathViewerError
from pathviewer.gui.main_window import MainWindow

ORGANIZATION = "PathViewer"
APPLICATION = "PathViewer"

#: Dark stylesheet shipped with the package (``resources/style.qss`` of the source tree overrides).
_STYLE = """
QWidget { background: #25272b; color: #dfe3e8; font-size: 10pt; }
QMainWindow::separator { background: #1b1c1f; width: 3px; height: 3px; }
QMenuBar, QMenu { background: #202226; }
QMenuBar::item:selected, QMenu::item:selected { background: #3b6fd8; color: white; }
QToolBar { background: #202226; border: none; spacing: 4px; padding: 3px; }
QToolButton { padding: 3px 9px; border-radius: 4px; border: 1px solid #3a3d43; background: #2e3136; }
QToolButton:hover { background: #3b6fd8; border-color: #3b6fd8; color: white; }
QToolButton:checked { background: #2c5bbf; border-color: #8fb0ff; color: white; font-weight: bold; }
QToolButton:disabled { color: #666a71; background: #26282c; border-color: #2c2f33; }
QDockWidget::title { background: #1f2124; padding: 5px; font-weight: bold; }
QTableView, QTableWidget { background: #1d1f22; alternate-background-color: #23262a;
    gridline-color: #30333a; selection-background-color: #3b6fd8; border: none; }
QHeaderView::section { background: #2a2d31; color: #b9c0c8; border: none; padding: 3px 6px; }
QStatusBar { background: #1b1c1f; color: #b9c0c8; }
QStatusBar QLabel { padding: 0 8px; }
QScrollArea { border: none; }
QScrollBar:vertical, QScrollBar:horizontal { background: #1d1f22; width: 10px; height: 10px; }
QScrollBar::handle { background: #41454c; border-radius: 4px; }
"""


def stylesheet() -> str:
    """The application stylesheet (``resources/style.qss`` next to the package when present)."""
    from pathviewer.resources import resource_path

    try:
        candidate = resource_path("style.qss")
    except PathViewerError:
        candidate = Path("/nonexistent")
    if candidate.is_file():
        return candidate.read_text(encoding="utf-8")
    return _STYLE


def ensure_application(argv: Sequence[str] | None = None) -> QApplication:
    """The QApplication, created (offscreen when there is no display) when there is none."""
    app = QApplication.instance()
    if app is None:
        if (
            sys.platform.startswith("linux")
            and not os.environ.get("DISPLAY")
            and not os.environ.get("WAYLAND_DISPLAY")
        ):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        QCoreApplication.setOrganizationName(ORGANIZATION)
        QCoreApplication.setApplicationName(APPLICATION)
        app = QApplication(list(argv or ["pathviewer"]))
        app.setStyle("Fusion")
        app.setStyleSheet(stylesheet())
    assert isinstance(app, QApplication)
    collect_garbage_on_gui_thread()
    return app


_gui_thread_collector: object | None = None


def collect_garbage_on_gui_thread() -> None:
    """Run Python's cycle collector only on the GUI thread, from a timer (once per process).

    A collection that a worker thread (a training job, a tile reader) happens to trigger can
    free Qt objects there; deleting a QObject off its thread while the GUI thread deletes
    another deadlocks on Qt's connection lock against the GIL (seen in the suite: a job
    thread freeing a pyqtgraph widget group).  pyqtgraph's collector disables automatic
    collection and collects on the GUI thread's timer instead.
    """
    global _gui_thread_collector
    if _gui_thread_collector is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _gui_thread_collector = GarbageCollector(interval=0.5)


def collect_pending_garbage() -> None:
    """Collect now, on the calling (GUI) thread, what the timer would collect next."""
    check = getattr(_gui_thread_collector, "check", None)
    if check is not None:
        check()


def create_main_window(
    paths: Sequence[str] = (),
    settings: QSettings | None = None,
    raise_errors: bool = False,
    threads: int | None = None,
) -> MainWindow:
    """Build the main window and open ``paths`` (slides or a cohort CSV), without ``exec``.

    Parameters
    ----------
    paths
        Slides or one cohort CSV.
    settings
        QSettings to use (default: the application's).
    raise_errors
        Raise :class:`~pathviewer.core.errors.PathViewerError` instead of showing dialogs.
    threads
        Tile threads (default from the settings).
    """
    ensure_application()
    window = MainWindow(settings=settings, threads=threads)
    from pathviewer.gui.context import build_features

    build_features(window)
    if paths:
        window.open_paths(list(paths), raise_errors=raise_errors)
    return window


def run_app(paths: list[str], after_open: Callable[[MainWindow], None] | None = None) -> int:
    """Run the viewer on ``paths`` (slides or a cohort CSV) until the window closes.

    ``after_open`` is called with the window once ``paths`` are open (e.g. to compare runs).

    Returns
    -------
    int
        The Qt event loop's exit code.
    """
    interactive_platform = os.environ.get("QT_QPA_PLATFORM", "") not in ("", "offscreen", "minimal")
    if (
        sys.platform.startswith("linux")
        and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")
        and not interactive_platform
        and not os.environ.get("PATHVIEWER_ALLOW_OFFSCREEN_GUI")
    ):
        # An offscreen window would wait forever for a user who cannot see it.
        raise PathViewerError(
            "no display found (DISPLAY and WAYLAND_DISPLAY are unset): run the viewer on a desktop, "
            "or render it headless with `pathviewer screenshot SLIDE OUT.png`"
        )
    from PySide6.QtGui import QIcon

    from pathviewer.crash import install_excepthook
    from pathviewer.resources import app_icon_path

    app = ensure_application()
    app.setDesktopFileName("io.github.pathviewer.PathViewer")
    try:
        app.setWindowIcon(QIcon(str(app_icon_path())))
    except PathViewerError:
        pass  # an icon-less window is better than no window
    window = create_main_window(paths)
    if after_open is not None:
        after_open(window)
    # An uncaught exception shows a dialog with the log path instead of closing the app.
    install_excepthook(lambda: window)
    window.show()
    return int(app.exec())
