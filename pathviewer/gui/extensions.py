"""Features that plug into the main window (heatmaps, training, annotations, review queue).

Each module named in :data:`EXTENSION_MODULES` exposes ``install(window: MainWindow) -> None``,
which adds its docks (``window.add_dock``), menu entries (``window.tools_menu``,
``window.views_menu``) and scene items.  Keeping the list here lets features be developed
independently of the viewer; a module that is absent from a build is skipped.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathviewer.gui.main_window import MainWindow

log = logging.getLogger(__name__)

EXTENSION_MODULES = (
    "pathviewer.gui.project",
    "pathviewer.gui.heatmap",
    "pathviewer.gui.training",
    "pathviewer.gui.annotation_tools",
    "pathviewer.gui.review",
)


def install_extensions(window: MainWindow) -> list[str]:
    """Install every available extension into ``window``; return the names installed."""
    installed = []
    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        module.install(window)
        installed.append(name)
    window.extensions = installed  # type: ignore[attr-defined]
    return installed
