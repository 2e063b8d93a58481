"""Drawing a heatmap: colormaps, quantisation to an indexed image, the overlay scene item.

The probabilities are quantised once to an 8-bit indexed :class:`QImage` (index 0 = not scored,
1..255 = probability 0..1).  :class:`HeatmapOverlay` draws that image with an item transform
*scale by patch size, translate by grid origin*, so one image pixel is exactly one patch in the
scene's level-0 coordinates.  Every display control (colormap, opacity, threshold) only rebuilds
the 256-entry colour table (``QImage.setColorTable``); the probabilities are never re-read or
re-quantised.  Smooth display is bilinear upsampling by the painter (``SmoothPixmapTransform``)
of a copy whose unscored cells next to scored ones take a scored neighbour's colour, clipped to
the scored cells: the tissue's edge stays where the patches end instead of fading half a cell
into the background.  Blocky display is nearest-neighbour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import (
    QBitmap,
    QImage,
    QPainter,
    QPainterPath,
    QRegion,
    QTransform,
)
from PySide6.QtWidgets import (
    QGraphicsItem,
    QStyleOptionGraphicsItem,
    QWidget,
)

from pathviewer.core.heatmap import Heatmap
from pathviewer.session.heatmap import (
    COLORMAPS,
)

if TYPE_CHECKING:
    import pyqtgraph as pg


log = logging.getLogger(__name__)

#: Probability levels of the indexed image: index ``i >= 1`` is probability ``(i - 1) / 254``.
LEVELS = 255

#: z-values: the heatmap above the slide (0), the tumour outlines above the heatmap.
HEATMAP_Z = 10.0
OUTLINE_Z = 11.0

#: Colormaps not shipped with pyqtgraph (which bundles no matplotlib maps but viridis, inferno,
#: magma...): control points of matplotlib's ``coolwarm`` (Moreland's diverging map) and ``jet``.
_CONTROL_POINTS: dict[str, tuple[tuple[float, tuple[int, int, int]], ...]] = {
    "coolwarm": (
        (0.0, (59, 76, 192)),
        (0.125, (98, 130, 234)),
        (0.25, (141, 176, 254)),
        (0.375, (184, 208, 249)),
        (0.5, (221, 221, 221)),
        (0.625, (245, 196, 173)),
        (0.75, (244, 154, 123)),
        (0.875, (222, 96, 77)),
        (1.0, (180, 4, 38)),
    ),
    "jet": (
        (0.0, (0, 0, 128)),
        (0.11, (0, 0, 255)),
        (0.125, (0, 0, 255)),
        (0.34, (0, 219, 255)),
        (0.35, (0, 229, 246)),
        (0.375, (20, 255, 226)),
        (0.64, (238, 255, 8)),
        (0.65, (255, 236, 0)),
        (0.89, (255, 18, 0)),
        (0.91, (231, 0, 0)),
        (1.0, (128, 0, 0)),
    ),
}


def colormap(name: str) -> pg.ColorMap:
    """The pyqtgraph :class:`ColorMap` called ``name`` (one of :data:`COLORMAPS`).

    Raises
    ------
    ValueError
        Unknown colormap name.
    """
    import pyqtgraph as pg

    if name in _CONTROL_POINTS:
        points = _CONTROL_POINTS[name]
        return pg.ColorMap([p for p, _ in points], [(*rgb, 255) for _, rgb in points], name=name)
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r} (choose from {', '.join(COLORMAPS)})")
    return pg.colormap.get(name)


def quantise(probs: np.ndarray) -> np.ndarray:
    """Indices of the 8-bit heatmap image: 0 = not scored (NaN), ``1 + round(p * 254)`` otherwise."""
    values = np.asarray(probs, np.float32)
    out = np.zeros(values.shape, np.uint8)
    finite = np.isfinite(values)
    out[finite] = 1 + np.rint(np.clip(values[finite], 0.0, 1.0) * (LEVELS - 1)).astype(np.uint8)
    return out


def level_probabilities() -> np.ndarray:
    """Probability of each image index 1..255 (``(255,)`` float, 0..1)."""
    return np.linspace(0.0, 1.0, LEVELS)


def color_table(name: str, opacity: float, threshold: float) -> list[int]:
    """The 256 ARGB entries of the heatmap image for a colormap, opacity and lower threshold.

    Index 0 (not scored) and levels below ``threshold`` are fully transparent.
    """
    levels = level_probabilities()
    rgba = np.asarray(colormap(name).map(levels, mode="byte"), np.uint32)
    alpha = np.where(levels >= threshold - 1e-6, round(np.clip(opacity, 0.0, 1.0) * 255), 0)
    argb = (alpha.astype(np.uint32) << 24) | (rgba[:, 0] << 16) | (rgba[:, 1] << 8) | rgba[:, 2]
    return [0, *(int(v) for v in argb)]


def difference_color_table(name: str, opacity: float) -> list[int]:
    """Colour table of a difference heatmap (0.5 = no change): the more change, the more opaque.

    Unchanged cells leave the slide as it is instead of tinting it with the colormap's middle.
    """
    levels = level_probabilities()
    rgba = np.asarray(colormap(name).map(levels, mode="byte"), np.uint32)
    # The square root lifts small changes (0.1 reads as 0.32) where the eye would miss them.
    strength = np.sqrt(np.clip(np.abs(levels - 0.5) * 2.0, 0.0, 1.0))
    alpha = np.rint(strength * np.clip(opacity, 0.0, 1.0) * 255).astype(np.uint32)
    argb = (alpha << 24) | (rgba[:, 0] << 16) | (rgba[:, 1] << 8) | rgba[:, 2]
    return [0, *(int(v) for v in argb)]


def heatmap_image(heatmap: Heatmap, table: list[int]) -> QImage:
    """The 8-bit indexed image of ``heatmap`` (one pixel per patch) with colour ``table``."""
    rows, cols = heatmap.shape
    image = QImage(max(cols, 1), max(rows, 1), QImage.Format.Format_Indexed8)
    image.setColorTable(table)
    image.fill(0)
    if rows and cols:
        pixels = np.frombuffer(image.bits(), np.uint8).reshape(image.height(), image.bytesPerLine())
        pixels[:, :cols] = quantise(heatmap.probs)
    return image


def _index_pixels(image: QImage) -> np.ndarray:
    """The indices of an 8-bit indexed image, ``(height, width)`` (a copy)."""
    rows = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : image.width()].copy()


def scored_region(indices: np.ndarray) -> QRegion:
    """The cells with a score (index > 0) as a region in cell units."""
    scored = np.ascontiguousarray(indices > 0)
    height, width = scored.shape
    # QBitmap's data is 1 bit per pixel, rows padded to whole bytes, least significant bit first;
    # a set bit is a pixel inside the region.
    packed = np.packbits(scored, axis=1, bitorder="little")
    bitmap = QBitmap.fromData(QSize(width, height), packed.tobytes(), QImage.Format.Format_MonoLSB)
    return QRegion(bitmap)


def edge_padded(argb: QImage, indices: np.ndarray) -> QImage:
    """A copy of ``argb`` whose unscored pixels next to scored ones take a scored neighbour's colour.

    Bilinear filtering reads only a pixel's immediate neighbours, so one ring of padding is
    enough for the scored cells' edges to keep their own colour when smoothed.
    """
    out = argb.copy()
    height, width = indices.shape
    pixels = np.frombuffer(out.bits(), np.uint32).reshape(height, out.bytesPerLine() // 4)
    pixels = pixels[:, :width]
    source = pixels.copy()
    free = indices == 0
    filled = ~free
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1)):
        # Target rows/columns [ty, tx] take the pixel at [ty + dy, tx + dx].
        ty = slice(max(0, -dy), height - max(0, dy))
        tx = slice(max(0, -dx), width - max(0, dx))
        sy = slice(max(0, dy), height - max(0, -dy))
        sx = slice(max(0, dx), width - max(0, -dx))
        take = free[ty, tx] & ~filled[ty, tx] & ~free[sy, sx]
        pixels[ty, tx][take] = source[sy, sx][take]
        filled[ty, tx] |= take
    return out


class HeatmapOverlay(QGraphicsItem):
    """The heatmap image over the slide: one image pixel = one patch, in level-0 coordinates.

    Parameters
    ----------
    image
        The 8-bit indexed image (``cols x rows``) whose colour table is the display LUT.
    origin, patch_size
        Level-0 grid origin and cell size: the item transform scales by ``patch_size`` and
        translates by ``origin``.
    """

    def __init__(self, image: QImage, origin: tuple[int, int], patch_size: tuple[int, int]) -> None:
        super().__init__()
        self._image = image
        self._rect = QRectF(0, 0, image.width(), image.height())
        self._rendered: QImage | None = None
        self._smoothed: tuple[QImage, QRegion] | None = None
        self.smooth = False
        self.setTransform(
            QTransform(float(patch_size[0]), 0, 0, float(patch_size[1]), origin[0], origin[1])
        )
        self.setZValue(HEATMAP_Z)
        self.setAcceptedMouseButtons(Qt.MouseButton.NoButton)

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect

    def invalidate(self, rect: QRectF | None = None) -> None:
        """The colour table or some cells changed: drop the converted image, repaint ``rect``
        (cells; default everything)."""
        self._rendered = None
        self._smoothed = None
        if rect is None:
            self.update()
        elif self.smooth:
            # Bilinear filtering spreads a cell's colour half a cell into its neighbours.
            self.update(rect.adjusted(-1, -1, 1, 1))
        else:
            self.update(rect)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        if self._rendered is None:
            # Painting an indexed image converts it on every draw; converting once per change
            # keeps panning cheap on large grids.
            self._rendered = self._image.convertToFormat(QImage.Format.Format_ARGB32_Premultiplied)
        if not self.smooth:
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            painter.drawImage(self._rect, self._rendered)
            return
        if self._smoothed is None:
            indices = _index_pixels(self._image)
            self._smoothed = (edge_padded(self._rendered, indices), scored_region(indices))
        padded, region = self._smoothed
        painter.save()
        painter.setClipRegion(region, Qt.ClipOperation.IntersectClip)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        painter.drawImage(self._rect, padded)
        painter.restore()


def outline_path(annotations: Sequence[object]) -> QPainterPath:
    """One path with the rings of every polygon of ``annotations``."""
    path = QPainterPath()
    for annotation in annotations:
        geometry = annotation.geometry  # type: ignore[attr-defined]
        polygons = getattr(geometry, "geoms", [geometry])
        for polygon in polygons:
            if polygon.geom_type != "Polygon":
                continue
            for ring in [polygon.exterior, *polygon.interiors]:
                coords = np.asarray(ring.coords)
                if len(coords) < 2:
                    continue
                path.moveTo(float(coords[0, 0]), float(coords[0, 1]))
                for x, y in coords[1:]:
                    path.lineTo(float(x), float(y))
                path.closeSubpath()
    return path
