"""Logging to a rotating file in the platform's log folder (and warnings to stderr)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import platformdirs

APP_NAME = "PathViewer"


def log_dir() -> Path:
    """The platformdirs user log folder (overridable with ``PATHVIEWER_LOG_DIR``)."""
    override = os.environ.get("PATHVIEWER_LOG_DIR")
    return (
        Path(override) if override else Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
    )


def log_file() -> Path:
    """The current log file."""
    return log_dir() / "pathviewer.log"


class _LogFileHandler(logging.handlers.RotatingFileHandler):
    """The log file, quiet when it cannot be written.

    On a full disk or past a file-size limit every log line would otherwise print
    ``--- Logging error ---`` and a traceback to stderr, burying the one line that says what
    went wrong; a record that cannot be written is dropped instead.  Other failures (a bad
    format string) are reported as usual.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handleError(record)


def setup_logging(verbose: bool = False) -> Path | None:
    """Attach a rotating file handler (1 MB x 3) to the ``pathviewer`` logger; return the file.

    Returns None when the log folder cannot be written (read-only home): logging then goes to
    stderr only, and the app still runs.
    """
    logger = logging.getLogger("pathviewer")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if any(getattr(h, "_pathviewer", False) for h in logger.handlers):
        return log_file()
    path: Path | None = log_file()
    try:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = _LogFileHandler(
            path, maxBytes=1_000_000, backupCount=3, encoding="utf-8"
        )
    except OSError:
        path = None
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._pathviewer = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    return path
