"""File dialogs that start where the user was: the last folder used for that kind of file.

Every open, save and folder dialog of the app goes through :func:`open_file`, :func:`save_file`
or :func:`choose_folder` with a *kind* of :data:`KINDS`.  A dialog starts in the folder last used
for its kind; the first time, in the folder the caller suggests (an export next to its slide),
else the default folder that Edit > Preferences sets for the kind's group (:data:`GROUPS`), else
the home folder.  Save dialogs put the file name they suggest in that folder.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QFileDialog, QWidget

#: Kind of file -> the Preferences default folder it falls back to.
KINDS: dict[str, str] = {
    "slides": "slides",
    "cohorts": "slides",
    "annotations": "work",
    "heatmaps": "work",
    "predictions": "work",
    "labels": "work",
    "flags": "work",
    "projects": "work",
    "exports": "work",
}

#: Preferences default folder -> its label in the dialog.
GROUPS: dict[str, str] = {
    "slides": "Slides folder",
    "work": "Projects and results folder",
}


def _last_key(kind: str) -> str:
    return f"folders/last/{kind}"


def default_key(group: str) -> str:
    """The settings key of a Preferences default folder (a key of :data:`GROUPS`)."""
    return f"folders/default/{group}"


def default_folder(settings: QSettings, group: str) -> str:
    """The default folder set in Preferences for ``group`` ('' when none or gone)."""
    folder = str(settings.value(default_key(group), "") or "")
    return folder if folder and Path(folder).is_dir() else ""


def start_folder(settings: QSettings, kind: str, near: str = "") -> str:
    """Where a dialog for ``kind`` starts.

    The folder last used for ``kind``, else ``near`` (a folder the caller suggests), else the
    Preferences default of the kind's group, else home; folders that no longer exist are skipped.
    """
    if kind not in KINDS:
        raise KeyError(f"unknown kind of file {kind!r}")
    last = str(settings.value(_last_key(kind), "") or "")
    for folder in (last, near):
        if folder and Path(folder).is_dir():
            return folder
    return default_folder(settings, KINDS[kind]) or str(Path.home())


def remember(settings: QSettings, kind: str, path: str, is_folder: bool = False) -> None:
    """Record the folder of ``path`` (or ``path`` itself for a folder) as the last for ``kind``."""
    if kind not in KINDS:
        raise KeyError(f"unknown kind of file {kind!r}")
    if path:
        folder = Path(path) if is_folder else Path(path).parent
        settings.setValue(_last_key(kind), str(folder))


def open_file(
    parent: QWidget | None, settings: QSettings, kind: str, title: str, filters: str
) -> str:
    """Ask for an existing file of ``kind``; '' when cancelled."""
    path, _ = QFileDialog.getOpenFileName(parent, title, start_folder(settings, kind), filters)
    remember(settings, kind, path)
    return path


def save_file(
    parent: QWidget | None,
    settings: QSettings,
    kind: str,
    title: str,
    filters: str,
    suggested: str = "",
    selected_filter: str = "",
    near: str = "",
) -> tuple[str, str]:
    """Ask for a file to write; returns ``(path, chosen filter)``, path '' when cancelled.

    ``suggested`` is the file name offered, in the start folder (:func:`start_folder` with
    ``near``).
    """
    start = start_folder(settings, kind, near)
    if suggested:
        start = str(Path(start) / Path(suggested).name)
    path, chosen = QFileDialog.getSaveFileName(parent, title, start, filters, selected_filter)
    remember(settings, kind, path)
    return path, chosen


def choose_folder(parent: QWidget | None, settings: QSettings, kind: str, title: str) -> str:
    """Ask for a folder of ``kind``; '' when cancelled."""
    folder = QFileDialog.getExistingDirectory(parent, title, start_folder(settings, kind))
    remember(settings, kind, folder, is_folder=True)
    return folder
