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
    from pathviewer.gui.slide_view import SlideView

#: Longest side of the minimap in screen pixels.
MINIMAP_SIZE = 200


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
        self._dragging = False
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.setToolTip("Minimap: click or drag to move the view")
        view.viewChanged.connect(self.update)
        view.slideChanged.connect(self._on_slide)
        self.hide()

    def _on_slide(self, _slide: object) -> None:
        self._image = self._view.thumbnail_image
        if self._image is None or self._image.isNull():
            self.hide()
            return
        w, h = self._image.width(), self._image.height()
        scale = MINIMAP_SIZE / max(w, h)
        self.setFixedSize(max(20, round(w * scale)) + 4, max(20, round(h * scale)) + 4)
        # Scale once: the minimap repaints with every view change, smooth scaling each time is slow.
        self._image = self._image.scaled(
            self.width() - 4,
            self.height() - 4,
            Qt.AspectRatioMode.IgnoreAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
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
