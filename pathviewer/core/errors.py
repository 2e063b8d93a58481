"""The one error type of the project, and its specialisations.

Every error a user can cause (bad file, bad row, bad setting) is raised as a
:class:`PathViewerError` whose message names the file, row or feature and the cause.  The CLI
prints it on one line without a traceback; the GUI shows it in a dialog.
"""

from __future__ import annotations

from pathlib import Path


class PathViewerError(Exception):
    """Base class for every user-facing error of PathViewer."""


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


class AnnotationError(PathViewerError):
    """An annotation file is malformed; the message names the feature."""


class CheckpointError(PathViewerError):
    """A model checkpoint is corrupt, foreign or incompatible."""


class TrainingError(PathViewerError):
    """Training cannot continue (bad data, NaN loss, out of memory)."""


class Cancelled(PathViewerError):  # noqa: N818 - reads better at call sites than CancelledError
    """A long job was cancelled by its caller."""
