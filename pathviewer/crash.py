"""Keep the viewer open on an uncaught exception: log it and tell the user where the log is.

Without this, an exception in a Qt slot prints a traceback to a terminal the desktop user never
sees (or, in some PySide6 versions, aborts the app).  :func:`install_excepthook` replaces
``sys.excepthook`` with one that

1. writes the full traceback to the rotating log file (:mod:`pathviewer.logs`), and
2. shows a :class:`~PySide6.QtWidgets.QMessageBox` with the error and the log file's path,

and then returns, so the Qt event loop goes on.  Qt is imported only when a dialog is shown, so
this module is importable (and testable) without a display.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pathviewer.logs import setup_logging

_log = logging.getLogger("pathviewer.crash")

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], Any]

#: Set while a dialog is open, so an exception raised while showing it cannot recurse.
_showing = threading.local()


def _show_dialog(parent: Any, title: str, text: str, details: str) -> None:
    """Modal error box (a function of its own so tests and headless runs can see it)."""
    from PySide6.QtWidgets import QApplication, QMessageBox

    if QApplication.instance() is None:
        return  # no GUI running: the log and stderr are all there is
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Critical)
    box.setWindowTitle(title)
    box.setText(text)
    box.setDetailedText(details)
    box.setStandardButtons(QMessageBox.StandardButton.Ok)
    box.exec()


def format_message(exc: BaseException, log_path: str | None) -> str:
    """The dialog's text: what failed, and where the full report is."""
    summary = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where = (
        f"The full report was written to:\n{log_path}"
        if log_path
        else "The log file could not be written; see the terminal output."
    )
    return (
        "PathViewer hit an unexpected error. Your work is still open; you can save it and carry "
        f"on, or restart the app.\n\n{summary}\n\n{where}"
    )


def install_excepthook(
    parent_getter: Callable[[], Any] | None = None,
    *,
    show_dialog: bool = True,
) -> ExceptHook:
    """Route uncaught exceptions to the log file and an error dialog instead of closing the app.

    Parameters
    ----------
    parent_getter
        Returns the widget to parent the dialog on (usually the main window), or None.  Called
        at the time of the error, so the window may be created after the hook is installed.
    show_dialog
        False logs only (for headless runs).

    Returns
    -------
    ExceptHook
        The hook that was replaced; assign it back to ``sys.excepthook`` to uninstall.
    """
    previous = sys.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt | SystemExit):
            previous(exc_type, exc, tb)  # Ctrl+C in the terminal still quits
            return
        log_path = setup_logging()  # idempotent; returns None when the log cannot be written
        _log.critical("uncaught exception", exc_info=(exc_type, exc, tb))
        for handler in logging.getLogger("pathviewer").handlers:
            handler.flush()
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        if log_path is None:
            sys.stderr.write(details)
        if not show_dialog or getattr(_showing, "active", False):
            return
        _showing.active = True
        try:
            parent = parent_getter() if parent_getter is not None else None
            _show_dialog(
                parent,
                "PathViewer: unexpected error",
                format_message(exc, str(log_path) if log_path else None),
                details,
            )
        except Exception:  # the dialog itself failed: the log already has the report
            _log.exception("could not show the error dialog")
        finally:
            _showing.active = False

    sys.excepthook = hook
    return previous


__all__ = ["format_message", "install_excepthook"]
