"""The one error type of the project, and its specialisations.

Every error a user can cause (bad file, bad row, bad setting) is raised as a
:class:`PathViewerError` whose message names the file, row or feature and the cause.  The CLI
prints it on one line without a traceback; the GUI shows it in a dialog.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path


class PathViewerError(Exception):
    """Base class for every user-facing error of PathViewer."""


def shown(value: object, limit: int = 48) -> str:
    """A user's value quoted in a message, cut so that a huge cell keeps the line short."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SlideError(PathViewerError):
    """A slide file cannot be opened or read.

    Parameters
    ----------
    path
        The slide file.
    cause
        What went wrong, in words a user understands.
    """

    def __init__(self, path: str | Path, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class CohortError(PathViewerError):
    """A cohort CSV (or another table) is malformed; the message names the row."""


class PredictionsError(CohortError):
    """A predictions folder (``pathviewer infer``) is malformed, or cannot be written where asked.

    A :class:`CohortError`, so that code catching table errors keeps catching it; the message
    names the file and the row.
    """


class AnnotationError(PathViewerError):
    """An annotation file is malformed; the message names the feature."""


class CheckpointError(PathViewerError):
    """A model checkpoint is corrupt, foreign or incompatible."""


def message_about(error: BaseException, path: str | Path) -> str:
    """:func:`user_message` of an error met writing or reading ``path``, naming it once.

    The GUI's save and open dialogs show this, so a full disk reads as the CLI says it
    (``out.geojson: No space left on device``), not as Python's ``[Errno 28] ...: 'out.geojson'``.
    """
    text = user_message(error)
    name = str(path)
    return text if name in text or Path(name).name in text else f"{name}: {text}"


class TrainingError(PathViewerError):
    """Training cannot continue (bad data, NaN loss, out of memory)."""


class Cancelled(PathViewerError):  # noqa: N818 - reads better at call sites than CancelledError
    """A long job was cancelled by its caller."""


#: What a user's situation can cause besides bad input (a full disk, a read-only or locked file, a
#: folder where a file was expected, too little memory): reported like a PathViewerError, by
#: :func:`user_message`.  Any other exception is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    PathViewerError,
    OSError,
    MemoryError,
    sqlite3.Error,
)


def user_message(error: BaseException) -> str:
    """The one line that reports ``error`` to a user (the CLI prints it, a GUI shows it).

    Parameters
    ----------
    error
        One of :data:`USER_ERRORS`.

    Returns
    -------
    str
        ``FILE: cause`` for an OS error that names its file (``SRC -> DST: cause`` for two),
        ``out of memory (...)``, ``database error: ...``, or the error's own message; line
        breaks are folded into spaces.
    """
    if isinstance(error, PathViewerError):
        text = str(error)
    elif isinstance(error, MemoryError):
        text = f"out of memory ({error})" if str(error) else "out of memory"
    elif isinstance(error, sqlite3.Error):
        # sqlite3 does not say which database; "database or disk is full", "database is locked".
        text = f"database error: {error}"
    elif isinstance(error, OSError) and error.strerror and error.filename is not None:
        names = str(error.filename)
        if error.filename2 is not None:
            names += f" -> {error.filename2}"
        text = f"{names}: {error.strerror}"
    elif isinstance(error, OSError) and error.strerror:
        text = error.strerror
    else:
        text = str(error) or type(error).__name__
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()
