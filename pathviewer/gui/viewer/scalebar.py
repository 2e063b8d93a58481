"""Scale bar overlay: a bar of a round length in um or mm, drawn over the slide view."""

from __future__ import annotations

import math

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget

#: Screen length the bar aims for, in pixels.
TARGET_PX = 130.0


def nice_length(um_per_px: float, target_px: float = TARGET_PX) -> tuple[float, str]:
    """The round length (1, 2 or 5 x 10^k um) nearest below ``target_px`` screen pixels.

    Returns
    -------
    (float, str)
        The length in um and its label (``"200 µm"``, ``"1 mm"``).
    """
    raw = um_per_px * target_px
    exponent = math.floor(math.log10(raw))
    best = 10.0**exponent
    for step in (1.0, 2.0, 5.0):
        if step * 10.0**exponent <= raw:
            best = step * 10.0**exponent
    if best >= 1000:
        value = best / 1000
        text = f"{value:g} mm"
    elif best >= 1:
        text = f"{best:g} µm"
    else:
        text = f"{best:.2g} µm"
    return best, text


class ScaleBar(QWidget):
    """A translucent scale bar placed in a corner of the slide view by its owner."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self._um_per_px: float | None = None
        self.setFixedSize(int(TARGET_PX) + 30, 40)

    def set_um_per_px(self, value: float | None) -> None:
        """Microns per screen pixel (None hides the bar: the slide has no MPP)."""
        if value == self._um_per_px:
            return
        self._um_per_px = value
        visible = value is not None and value > 0
        if visible and value is not None:
            length_um, text = nice_length(value)
            width = max(
                int(length_um / value) + 20, self.fontMetrics().horizontalAdvance(text) + 30
            )
            if width != self.width():
                self.setFixedWidth(width)
        self.setVisible(visible)
        self.update()

    def label(self) -> str:
        """The current label (``""`` when hidden)."""
        if not self._um_per_px:
            return ""
        return nice_length(self._um_per_px)[1]

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt override
        if not self._um_per_px:
            return
        length_um, text = nice_length(self._um_per_px)
        bar_px = length_um / self._um_per_px
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(20, 22, 26, 215))
        painter.drawRoundedRect(QRectF(self.rect()), 6, 6)
        font = QFont()
        font.setPixelSize(13)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(QColor(235, 238, 242))
        painter.drawText(QRectF(10, 4, self.width() - 20, 18), Qt.AlignmentFlag.AlignLeft, text)
        painter.fillRect(QRectF(10, 26, bar_px, 6), QColor(245, 247, 250))
        painter.fillRect(QRectF(10, 22, 2, 10), QColor(245, 247, 250))
        painter.fillRect(QRectF(10 + bar_px - 2, 22, 2, 10), QColor(245, 247, 250))
        painter.end()
