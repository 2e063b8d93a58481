"""Find the app's resource files (icons...) wherever PathViewer runs from.

Three layouts are supported, tried in this order:

* a PyInstaller bundle: ``resources/`` is collected next to the frozen modules, in
  ``sys._MEIPASS`` (``dist/pathviewer/_internal/resources``);
* a source checkout or editable install: ``<repo>/resources`` next to the ``pathviewer``
  package;
* an installed wheel whose data files were put in ``<prefix>/share/pathviewer/resources``.

``PATHVIEWER_RESOURCES`` overrides all three (tests, packagers with their own layout).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pathviewer.core.errors import PathViewerError

_PACKAGE_DIR = Path(__file__).resolve().parent


class ResourceNotFoundError(PathViewerError, FileNotFoundError):
    """A resource file is missing from every place PathViewer looks."""


def resource_dirs() -> list[Path]:
    """The candidate ``resources`` folders, most specific first (they need not exist)."""
    candidates: list[Path] = []
    override = os.environ.get("PATHVIEWER_RESOURCES")
    if override:
        candidates.append(Path(override))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "resources")
    candidates.append(_PACKAGE_DIR.parent / "resources")
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        candidates.append(Path(prefix) / "share" / "pathviewer" / "resources")
    return candidates


def resource_path(name: str) -> Path:
    """Absolute path of resource ``name`` (a ``/``-separated path inside ``resources/``).

    Parameters
    ----------
    name
        For example ``"icons/pathviewer.svg"``.

    Raises
    ------
    ResourceNotFoundError
        When no candidate folder holds the file; the message lists where it looked.
    """
    relative = Path(*name.split("/"))
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"resource name must be relative and inside resources/: {name!r}")
    searched = resource_dirs()
    for folder in searched:
        path = folder / relative
        if path.exists():
            return path.resolve()
    places = ", ".join(str(folder) for folder in searched)
    raise ResourceNotFoundError(f"resource {name!r} not found (looked in {places})")


def app_icon_path(size: int | None = None) -> Path:
    """The application icon: the SVG, or the PNG render of ``size`` pixels."""
    return resource_path("icons/pathviewer.svg" if size is None else f"icons/pathviewer-{size}.png")
