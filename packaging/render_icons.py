"""Render resources/icons/pathviewer.svg to PNGs (16..256 px) with Qt's SVG renderer.

Run after editing the SVG: ``python packaging/render_icons.py``.  The PNGs are committed so that
neither the bundle build nor the desktop install needs Qt's SVG module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICON_DIR = Path(__file__).resolve().parents[1] / "resources" / "icons"
SVG = ICON_DIR / "pathviewer.svg"
#: The hicolor sizes that desktops look up.
SIZES = (16, 24, 32, 48, 64, 128, 256)


def png_path(size: int) -> Path:
    """Where the ``size`` x ``size`` render lives."""
    return ICON_DIR / f"pathviewer-{size}.png"


def render(sizes: tuple[int, ...] = SIZES) -> list[Path]:
    """Render the SVG at each size (transparent background); return the PNG paths."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        raise SystemExit(f"render_icons: cannot parse {SVG}")
    written = []
    for size in sizes:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        path = png_path(size)
        if not image.save(str(path), "PNG"):
            raise SystemExit(f"render_icons: cannot write {path}")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in render():
        print(path)
