"""Minimap overlay: the slide thumbnail with the visible area outlined; click or drag to move."""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import (
    QColor,
    QImage,
    QMouseEvent,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
)
from PySide6.QtWidgets import QWidget

if TYPE_CHECKING:
    from pathviewer.gui.viewer.slide_view import SlideView

#: Longest side of the minimap in screen pixels (at most; see :func:`minimap_side`).
MINIMAP_SIZE = 200
#: Share of the view's shorter side the minimap may take, so it never covers a small view.
MINIMAP_SHARE = 0.25


def minimap_side(view_width: int, view_height: int) -> int:
    """Longest side of the minimap for a view of this size (never under 60 px)."""
    return max(60, min(MINIMAP_SIZE, round(MINIMAP_SHARE * min(view_width, view_height))))


class Minimap(QWidget):
    """Thumbnail of the current slide with the viewport rectangle of a :class:`SlideView`.

    Parameters
    ----------
    view
        The view it follows and moves (it listens to ``view.viewChanged`` and ``slideChanged``).
    """

    def __init__(self, view: SlideView, parent: QWidget | None = None) -> None:
        super().__init__(parent or view)
        self._view = view
        self._image: QImage | None = None
        self._thumbnail: QImage | None = None
        self._side = 0
        self._dragging = False
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setToolTip("Minimap: click or drag to move the view")
        view.viewChanged.connect(self.sync)
        view.slideChanged.connect(self._on_slide)
        self.hide()

    def _on_slide(self, _slide: object) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Take the view's thumbnail again (a new slide, or its thumbnail arrived)."""
        thumbnail = self._view.thumbnail_image
        self._thumbnail = None if thumbnail is None or thumbnail.isNull() else thumbnail
        self._side = 0  # rescale for the new slide
        self.sync()

    def wanted(self) -> bool:
        """Whether the minimap adds anything: a slide is open and part of it is out of view."""
        slide = self._view.current_slide
        if self._thumbnail is None or slide is None:
            return False
        sw, sh = slide.dimensions
        # In fit view the whole slide is on screen already, and the minimap would only cover it.
        return not self._view.visible_level0_rect().contains(QRectF(0, 0, sw, sh))

    def sync(self) -> None:
        """Follow the view: hide when not wanted, else size to the view, place and repaint."""
        if not self.wanted():
            self.hide()
            return
        assert self._thumbnail is not None
        viewport = self._view.viewport()
        side = minimap_side(viewport.width(), viewport.height())
        if side != self._side:
            self._side = side
            w, h = self._thumbnail.width(), self._thumbnail.height()
            scale = side / max(w, h)
            self.setFixedSize(max(20, round(w * scale)) + 4, max(20, round(h * scale)) + 4)
            # Scale once per size: the minimap repaints with every view change, and smooth
            # scaling each time is slow.
            self._image = self._thumbnail.scaled(
                self.width() - 4,
                self.height() - 4,
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
            self._view.place_overlays()
        if not self.isVisible():
            self.show()
            self.raise_()
            self._view.place_overlays()
        self.update()

    def _image_rect(self) -> QRectF:
        return QRectF(2, 2, self.width() - 4, self.height() - 4)

    def to_level0(self, pos: QPointF) -> tuple[float, float]:
        """Level-0 coordinates of a point of this widget."""
        slide = self._view.current_slide
        if slide is None:
            return 0.0, 0.0
        rect = self._image_rect()
        sw, sh = slide.dimensions
        x = (pos.x() - rect.x()) / rect.width() * sw
        y = (pos.y() - rect.y()) / rect.height() * sh
        return min(max(x, 0.0), sw), min(max(y, 0.0), sh)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(20, 22, 26))
        slide = self._view.current_slide
        if self._image is None or slide is None:
            painter.end()
            return
        rect = self._image_rect()
        painter.drawImage(rect.topLeft(), self._image)
        visible = self._view.visible_level0_rect()
        sw, sh = slide.dimensions
        sx, sy = rect.width() / sw, rect.height() / sh
        box = QRectF(
            rect.x() + visible.x() * sx,
            rect.y() + visible.y() * sy,
            visible.width() * sx,
            visible.height() * sy,
        ).intersected(rect.adjusted(-1, -1, 1, 1))
        # Dim what is outside the view, outline what is inside.
        outside = QPainterPath()
        outside.addRect(rect)
        inside = QPainterPath()
        inside.addRect(box)
        painter.fillPath(outside.subtracted(inside), QColor(0, 0, 0, 110))
        painter.setPen(QPen(QColor(255, 196, 0), 2))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(box)
        painter.setPen(QPen(QColor(90, 95, 105), 1))
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawRect(self.rect().adjusted(0, 0, -1, -1))
        painter.end()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if event.button() == Qt.MouseButton.LeftButton:
            self._dragging = True
            self._view.center_on(*self.to_level0(event.position()))
            event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        if self._dragging:
            self._view.center_on(*self.to_level0(event.position()))
            event.accept()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._dragging = False
