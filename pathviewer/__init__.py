"""PathViewer: a whole-slide image viewer with embedded AI.

``pathviewer.core`` and ``pathviewer.ml`` never import Qt; ``pathviewer.gui`` wraps them.
"""

from pathviewer._version import __version__

__all__ = ["__version__"]
