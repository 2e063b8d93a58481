"""The tiled slide view: a QGraphicsView whose scene is in level-0 pixel coordinates.

Public API (what later features build on)
----------------------------------------
:class:`SlideView`
    * ``scene()``: a QGraphicsScene in **level-0 pixel coordinates** (``level0_to_scene`` is the
      identity).  Overlays (heatmaps, annotations) add their own items with a z-value above
      :data:`SLIDE_Z` (the slide item sits at 0); e.g. a heatmap ``QGraphicsPixmapItem`` scaled
      by the patch stride.
    * ``current_slide``: the open :class:`~pathviewer.core.slide.SlideSource` or None.
    * signals ``slideChanged(object)`` (new slide or None; the scene was cleared, overlays must
      re-add themselves), ``viewChanged()`` (pan/zoom/resize), ``cursorMoved(float, float)``
      (level-0 cursor position).
    * ``center_on(x, y, magnification=None)``, ``set_magnification(m)``, ``fit_to_window()``,
      ``zoom_by(factor, anchor=None)``, ``scale_factor()`` (screen px per level-0 px),
      ``magnification()``, ``current_level()``, ``visible_level0_rect()``, ``wait_until_idle()``.
    * ``pipeline`` (:class:`~pathviewer.gui.viewer.tiles.TilePipeline`) and ``cache``
      (:class:`~pathviewer.gui.viewer.tiles.TileCache`).

Rendering: one :class:`SlideItem` covers the slide and paints, for the exposed area, the thumbnail
first, then for every tile of the level chosen for the zoom either the cached tile or the best
coarser cached tile in its place; missing tiles are requested centre-out from the pipeline, which
reads them on worker threads (never on the UI thread).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np
from PySide6.QtCore import (
    QEvent,
    QEventLoop,
    QObject,
    QPointF,
    QRect,
    QRectF,
    QSettings,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QImage,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QResizeEvent,
    QTransform,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

from pathviewer.core.color import ColorTransform
from pathviewer.core.errors import SlideError
from pathviewer.core.slide import SlideSource, open_slide
from pathviewer.gui.viewer.minimap import Minimap
from pathviewer.gui.viewer.scalebar import ScaleBar
from pathviewer.gui.viewer.tiles import (
    TileCache,
    TileKey,
    TilePipeline,
    cache_cap_bytes,
    centre_out,
    rgb_to_qimage,
    threads_setting,
)
from pathviewer.session.display import DisplayRenderer, DisplaySettings

log = logging.getLogger(__name__)

#: z-value of the slide item; overlays go above.
SLIDE_Z = 0.0

#: Keys the slide view handles itself (the keyboard-shortcuts list shows them).
VIEW_KEYS = (
    ("Arrows", "Pan"),
    ("Shift+Up / Shift+Down, + / -, wheel", "Zoom in / out (the wheel zooms to the cursor)"),
    ("0", "Fit the slide to the window"),
)

#: Standard objective magnifications offered as buttons.
MAGNIFICATIONS = (1.25, 2.5, 5.0, 10.0, 20.0, 40.0)

#: Longest side of the in-memory thumbnail (coarse fall-back and minimap).
THUMBNAIL_SIZE = 1024

#: Largest level (pixels) read to build a thumbnail; slides without a pyramid get none.
MAX_THUMBNAIL_SOURCE_PX = 64_000_000

BACKGROUND = QColor(34, 36, 40)

#: QSettings key: show slides through their ICC profile (default on, as OpenSlide 4 reads it).
COLOR_PROFILE_SETTING = "viewer/use_color_profile"


def _as_bool(value: object) -> bool:
    """A QSettings boolean (INI files give back the strings "true"/"false")."""
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off", "")
    return bool(value)


#: Milliseconds after the last pan/zoom step before tiles are redrawn smoothly.
SETTLE_MS = 150


def make_thumbnail(
    slide: SlideSource, size: int = THUMBNAIL_SIZE, color: ColorTransform | None = None
) -> QImage | None:
    """A thumbnail QImage of ``slide`` (through ``color`` when given), or None when it would
    be too costly or cannot be read."""
    width, height = slide.dimensions
    scale = max(width / size, height / size, 1.0)
    level = slide.best_level_for_downsample(scale)
    lw, lh = slide.level_dimensions[level]
    if lw * lh > MAX_THUMBNAIL_SOURCE_PX:
        log.info("no thumbnail for %s: coarsest usable level is %dx%d", slide.path, lw, lh)
        return None
    try:
        rgb = slide.thumbnail((size, size))
        return rgb_to_qimage(color.apply(rgb) if color is not None else rgb)
    except Exception as error:  # a broken slide still opens; its tiles show the error
        log.warning("thumbnail of %s failed: %s", slide.path, error)
        return None


class SlideItem(QGraphicsItem):
    """The slide itself, painted from the tile cache with coarse fall-backs."""

    def __init__(self, view: SlideView) -> None:
        super().__init__()
        self._view = view
        slide = view.current_slide
        assert slide is not None
        width, height = slide.dimensions
        self._rect = QRectF(0, 0, width, height)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self.setZValue(SLIDE_Z)
        #: Whether the paint under way drew a stand-in (coarser tile, thumbnail, white) for a
        #: tile not read yet.
        self.placeholder_painted = False

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt override
        return self._rect

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionGraphicsItem,
        widget: QWidget | None = None,
    ) -> None:
        started = time.perf_counter()
        view = self._view
        self.placeholder_painted = False
        complete = False
        try:
            self._paint(painter, option)
            complete = bool(view.pipeline.grids) and not self.placeholder_painted
        finally:
            view.paint_count += 1
            view.max_paint_ms = max(view.max_paint_ms, (time.perf_counter() - started) * 1000)
        # Each tile that arrived since the last paint has its area in this one, so a paint that
        # drew no stand-in while every visible tile is cached leaves the frame complete.
        if complete and view.missing_visible_tiles() == 0:
            view.last_complete_paint = time.perf_counter()

    def _paint(self, painter: QPainter, option: QStyleOptionGraphicsItem) -> None:
        view = self._view
        if not view.pipeline.grids:
            return
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        scale = view.scale_factor()
        view.painted_px += exposed.width() * exposed.height() * scale * scale
        # Nearest-neighbour while the view moves (cheap), smooth once it settles.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, not view.is_moving())
        if view.display.settings.is_identity:
            self._paint_scan(painter, exposed)
        else:
            self._paint_adjusted(painter, exposed)

    def _paint_adjusted(self, painter: QPainter, exposed: QRectF) -> None:
        """The scan painted into a screen-sized buffer, then through the display lookups.

        Adjusting what is on screen, not the cached tiles, keeps a change of the settings from
        touching any tile, and costs one pass over the exposed screen pixels whatever the zoom.
        """
        started = time.perf_counter()
        transform = painter.worldTransform()
        target = painter.device()
        device = transform.mapRect(exposed).toAlignedRect()
        if target is not None:
            device = device.intersected(QRect(0, 0, target.width(), target.height()))
        if device.isEmpty():
            return
        ratio = target.devicePixelRatioF() if target is not None else 1.0
        buffer = QImage(
            max(1, round(device.width() * ratio)),
            max(1, round(device.height() * ratio)),
            QImage.Format.Format_RGB32,
        )
        buffer.setDevicePixelRatio(ratio)
        buffer.fill(BACKGROUND)
        inner = QPainter(buffer)
        inner.setRenderHints(painter.renderHints())
        inner.setTransform(transform * QTransform.fromTranslate(-device.x(), -device.y()))
        inverse, _ok = transform.inverted()
        self._paint_scan(inner, inverse.mapRect(QRectF(device)).intersected(self._rect))
        inner.end()
        height, stride = buffer.height(), buffer.bytesPerLine()
        pixels = np.frombuffer(buffer.constBits(), np.uint8, count=stride * height)
        pixels = pixels.reshape(height, stride)[:, : buffer.width() * 4]
        adjusted = self._view.display.render_bgrx(pixels.reshape(height, buffer.width(), 4))
        shown = QImage(
            adjusted.data, buffer.width(), height, adjusted.strides[0], QImage.Format.Format_RGB32
        )
        shown.setDevicePixelRatio(ratio)
        painter.save()
        painter.resetTransform()
        painter.drawImage(device.topLeft(), shown)
        painter.restore()
        del shown  # it borrows ``adjusted``'s memory
        self._view.last_display_ms = (time.perf_counter() - started) * 1000

    def _paint_scan(self, painter: QPainter, exposed: QRectF) -> None:
        """The scan over ``exposed`` (level-0 rect): tiles, coarser tiles, thumbnail."""
        view = self._view
        pipeline = view.pipeline
        grids = pipeline.grids
        thumb = view.thumbnail_image
        if thumb is not None and view.thumbnail_suffices():
            self._paint_thumbnail(painter, exposed)
            return
        cache = view.cache
        generation = pipeline.generation
        level = view.current_level()
        grid = grids[level]
        col0, row0, col1, row1 = grid.tiles_in(
            exposed.left(), exposed.top(), exposed.right(), exposed.bottom()
        )
        d = grid.downsample
        for row in range(row0, row1 + 1):
            for col in range(col0, col1 + 1):
                image = cache.get((generation, level, col, row))
                rect = QRectF(*grid.tile_scene_rect(col, row))
                # Draw only the exposed part: a pan step exposes thin strips of each tile.
                part = rect.intersected(exposed)
                if image is not None:
                    source = QRectF(
                        (part.x() - rect.x()) / d,
                        (part.y() - rect.y()) / d,
                        part.width() / d,
                        part.height() / d,
                    )
                    painter.drawImage(part, image, source)
                else:
                    self.placeholder_painted = True
                    self._paint_thumbnail(painter, part)
                    self._paint_fallback(painter, part, level, generation)

    def _paint_thumbnail(self, painter: QPainter, area: QRectF) -> None:
        """The thumbnail (or white) over ``area`` (level-0 coordinates)."""
        thumb = self._view.thumbnail_image
        if thumb is None:
            painter.fillRect(area, QColor(255, 255, 255))
            return
        sx = thumb.width() / self._rect.width()
        sy = thumb.height() / self._rect.height()
        source = QRectF(area.x() * sx, area.y() * sy, area.width() * sx, area.height() * sy)
        painter.drawImage(area, thumb, source)

    def _paint_fallback(self, painter: QPainter, rect: QRectF, level: int, generation: int) -> None:
        """Fill ``rect`` with the finest coarser cached tiles (thumbnail already underneath)."""
        grids = self._view.pipeline.grids
        cache = self._view.cache
        for coarse in range(level + 1, len(grids)):
            grid = grids[coarse]
            col0, row0, col1, row1 = grid.tiles_in(
                rect.left(), rect.top(), rect.right(), rect.bottom()
            )
            found = False
            for row in range(row0, row1 + 1):
                for col in range(col0, col1 + 1):
                    image = cache.peek((generation, coarse, col, row))
                    if image is None:
                        continue
                    found = True
                    tile_rect = QRectF(*grid.tile_scene_rect(col, row))
                    part = tile_rect.intersected(rect)
                    d = grid.downsample
                    source = QRectF(
                        (part.x() - tile_rect.x()) / d,
                        (part.y() - tile_rect.y()) / d,
                        part.width() / d,
                        part.height() / d,
                    )
                    painter.drawImage(part, image, source)
            if found:
                return


class ViewKey(QObject):
    """A plain key (with its modifiers) that acts only while the slide view has focus.

    A window-wide shortcut on a letter would steal it from every text field; an event filter
    on the view leaves text fields alone.  Installed on ``view`` by the constructor.
    """

    def __init__(
        self,
        view: QWidget,
        key: Qt.Key,
        action: Callable[[], object],
        modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
    ) -> None:
        super().__init__(view)
        self._key, self._modifiers, self._action = key, modifiers, action
        view.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt override
        if event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            modifiers = event.modifiers() & ~Qt.KeyboardModifier.KeypadModifier
            if event.key() == self._key and modifiers == self._modifiers:
                self._action()
                return True
        return False


class SlideView(QGraphicsView):
    """Pan/zoom view of one slide with tiled, threaded loading (see the module docstring).

    Parameters
    ----------
    parent
        Parent widget.
    settings
        Where the cache cap and thread count are read (default ``QSettings()``).
    threads
        Tile threads (overrides the setting).
    """

    #: The slide going away (or None), before its overlays are detached from the scene.
    slideAboutToChange = Signal(object)
    slideChanged = Signal(object)
    viewChanged = Signal()
    cursorMoved = Signal(float, float)
    #: (generation, QImage or None) from the thumbnail thread.
    thumbnailReady = Signal(int, object)

    def __init__(
        self,
        parent: QWidget | None = None,
        settings: QSettings | None = None,
        threads: int | None = None,
    ) -> None:
        super().__init__(parent)
        settings = settings or QSettings()
        self._settings = settings
        #: The open slide's ICC profile to sRGB (None without one), and whether it is used.
        self.color: ColorTransform | None = None
        self.use_color_profile = _as_bool(settings.value(COLOR_PROFILE_SETTING, True))
        self.cache = TileCache(cache_cap_bytes(settings))
        self.pipeline = TilePipeline(self.cache, threads or threads_setting(settings), parent=self)
        self.pipeline.tilesLoaded.connect(self._on_tiles_loaded)
        self._slide: SlideSource | None = None
        self._item: SlideItem | None = None
        # Items features draw over the slide (heatmap, annotations, highlights): detached on a
        # slide change, so their owners never hold an item the scene has deleted.
        self._overlays: list[QGraphicsItem] = []
        self.thumbnail_image: QImage | None = None
        # Counts slides (and colour settings) shown: a thumbnail built for an older one is
        # dropped when it arrives.
        self._thumbnail_generation = 0
        self._thumbnail_pending = False
        self._thumbnail_wanted = False
        self.thumbnailReady.connect(self._on_thumbnail)
        #: Longest side of the thumbnail made at open (coarse fall-back and minimap).
        self.thumbnail_size = THUMBNAIL_SIZE
        #: Number of times the slide was painted (benchmarks and tests).
        self.paint_count = 0
        #: Screen pixels of slide painted so far (benchmarks: how much each frame repaints).
        self.painted_px = 0.0
        #: Longest paint of the slide item in ms (benchmarks).
        self.max_paint_ms = 0.0
        #: Brightness, contrast, gamma and stain channel of the display (see set_display).
        self.display = DisplayRenderer()
        #: Milliseconds the last adjusted paint took (benchmarks).
        self.last_display_ms = 0.0
        #: ``time.perf_counter()`` at the end of the last paint after which every visible tile
        #: was on screen, none stood in for by a coarser one (0.0: none yet).
        self.last_complete_paint = 0.0
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(BACKGROUND)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.SmartViewportUpdate)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        # Let file drops reach the main window.
        self.setAcceptDrops(False)
        self.viewport().setAcceptDrops(False)
        self._request_timer = QTimer(self)
        self._request_timer.setSingleShot(True)
        self._request_timer.setInterval(0)
        self._request_timer.timeout.connect(self.update_requests)
        # The view counts as moving until SETTLE_MS after the last pan/zoom step.
        self._settle_timer = QTimer(self)
        self._settle_timer.setSingleShot(True)
        self._settle_timer.setInterval(SETTLE_MS)
        self._settle_timer.timeout.connect(self.viewport().update)
        self._last_move = 0.0
        self.horizontalScrollBar().valueChanged.connect(self._on_view_moved)
        self.verticalScrollBar().valueChanged.connect(self._on_view_moved)
        # Overlays are children of the viewport, not of the view: a sibling overlapping the
        # viewport (or a style sheet on a non-opaque viewport) stops Qt from scrolling by
        # blitting, and every pan step would repaint the whole viewport.
        self.viewport().setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.scale_bar = ScaleBar(self.viewport())
        self.scale_bar.hide()
        self.minimap = Minimap(self, self.viewport())
        self.bottom_overlays: list[QWidget] = []
        self._min_scale = 1e-3
        self._max_scale = 4.0
        # Until the user zooms or pans, a resize re-fits the slide (the first show included).
        self._auto_fit = False

    @property
    def shown_color(self) -> ColorTransform | None:
        """The colour transform tiles go through: the slide's profile when it is used."""
        return self.color if self.use_color_profile else None

    def set_use_color_profile(self, on: bool) -> None:
        """Show the slide through its ICC profile (on) or as stored; remembered for all slides.

        The tiles are read again in the new colours (the cache held the old ones).
        """
        if on == self.use_color_profile:
            return
        self.use_color_profile = on
        self._settings.setValue(COLOR_PROFILE_SETTING, on)
        if self._slide is None or self.color is None:
            return
        self.pipeline.set_color(self.shown_color)
        self._thumbnail_generation += 1  # an async thumbnail in the old colours is dropped
        self._thumbnail_pending = False
        self.thumbnail_image = make_thumbnail(self._slide, self.thumbnail_size, self.shown_color)
        self.minimap.refresh()
        self.viewport().update()
        self._request_timer.start()

    def render_figure(self, scale: float = 2.0) -> QImage:
        """What the view shows (slide, overlays, scale bar and colour bar) at ``scale`` times
        the screen's resolution, for a figure."""
        viewport = self.viewport()
        image = QImage(
            max(1, round(viewport.width() * scale)),
            max(1, round(viewport.height() * scale)),
            QImage.Format.Format_RGB32,
        )
        image.setDevicePixelRatio(scale)
        image.fill(BACKGROUND)
        viewport.render(image)
        return image

    def set_display(self, settings: DisplaySettings) -> None:
        """Show the slide with ``settings``; the cached tiles are reused, none is read again."""
        if settings != self.display.settings:
            self.display.settings = settings
            self.viewport().update()

    # -- slide -------------------------------------------------------------------------------

    @property
    def current_slide(self) -> SlideSource | None:
        """The open slide (None when empty)."""
        return self._slide

    def set_slide(self, slide: SlideSource | None) -> None:
        """Show ``slide`` (None to empty the view); the previous slide is closed.

        Pending tile reads are cancelled, the cache is cleared and the scene emptied (overlays
        listen to ``slideChanged`` to add themselves again).
        """
        self.slideAboutToChange.emit(self._slide)
        self._detach_overlays()
        self.color = ColorTransform.for_slide(slide) if slide is not None else None
        self.pipeline.set_slide(slide, self.shown_color)
        self.scene().clear()
        self._item = None
        self._slide = slide
        self._thumbnail_generation += 1
        self.thumbnail_image = None
        self._thumbnail_wanted = slide is not None
        if slide is not None and not os.path.isfile(slide.path):
            self._start_thumbnail(slide)  # in memory: built at once, as there is no file
        if slide is not None:
            width, height = slide.dimensions
            # Margins let any part of the slide be centred, and anchored zoom work at the edges.
            pad_x, pad_y = width * 0.5 + 2000, height * 0.5 + 2000
            self.scene().setSceneRect(QRectF(-pad_x, -pad_y, width + 2 * pad_x, height + 2 * pad_y))
            self._item = SlideItem(self)
            self.scene().addItem(self._item)
            self.fit_to_window()
            self._auto_fit = True
        else:
            self.scene().setSceneRect(QRectF(0, 0, 1, 1))
        self.slideChanged.emit(slide)
        self._on_view_moved()

    def _start_thumbnail(self, slide: SlideSource) -> None:
        """Build the thumbnail off the UI thread, from a handle of its own.

        The first frame needs only the visible tiles; reading and shrinking the coarsest level
        for the thumbnail took most of the time to it (68 of 83 ms on the benchmark slide), so
        it starts once the visible tiles are in (:meth:`_maybe_start_thumbnail`).
        """
        self._thumbnail_wanted = False
        generation, size, color = self._thumbnail_generation, self.thumbnail_size, self.shown_color
        path = slide.path
        if not os.path.isfile(path):  # an in-memory slide: no file to open a second handle on
            self.thumbnail_image = make_thumbnail(slide, size, color)
            self.minimap.refresh()
            return
        self._thumbnail_pending = True

        def work() -> None:
            image = None
            try:
                own = open_slide(path)
                try:
                    image = make_thumbnail(own, size, color)
                finally:
                    own.close()
            except Exception as error:  # a broken slide still opens; its tiles say why
                log.warning("thumbnail of %s failed: %s", path, error)
            try:
                self.thumbnailReady.emit(generation, image)
            except RuntimeError:  # the view is gone (the app is closing)
                pass

        threading.Thread(target=work, name="thumbnail", daemon=True).start()

    def _maybe_start_thumbnail(self) -> None:
        """Start the thumbnail once the first frame is complete (or when asked to wait)."""
        if self._thumbnail_wanted and self._slide is not None:
            self._start_thumbnail(self._slide)

    def _on_thumbnail(self, generation: int, image: object) -> None:
        if generation != self._thumbnail_generation:
            return  # the thumbnail of a slide (or colour setting) no longer shown
        self._thumbnail_pending = False
        self.thumbnail_image = image if isinstance(image, QImage) else None
        self.minimap.refresh()
        self.viewport().update()

    def close_slide(self) -> None:
        """Close the current slide and empty the view."""
        self.set_slide(None)

    # -- overlays ----------------------------------------------------------------------------

    def add_overlay(self, item: QGraphicsItem) -> None:
        """Draw ``item`` over the slide until :meth:`remove_overlay` or the next slide change.

        On a slide change the item is taken out of the scene, not deleted: its owner may keep it
        or drop it, and adds what belongs to the new slide on ``slideChanged``.
        """
        if item not in self._overlays:
            self._overlays.append(item)
        if item.scene() is not self.scene():
            self.scene().addItem(item)

    def remove_overlay(self, item: QGraphicsItem | None) -> None:
        """Take an overlay out of the view (nothing happens for None or a stranger)."""
        if item is None or item not in self._overlays:
            return
        self._overlays.remove(item)
        if item.scene() is self.scene():
            self.scene().removeItem(item)

    def overlays(self) -> list[QGraphicsItem]:
        """The overlays drawn now, in the order they were added."""
        return list(self._overlays)

    def _detach_overlays(self) -> None:
        for item in self._overlays:
            if item.scene() is self.scene():
                self.scene().removeItem(item)
        self._overlays = []

    def shutdown(self) -> None:
        """Close the slide and stop the tile threads (the window calls this when it closes)."""
        self._request_timer.stop()
        self._detach_overlays()
        self.scene().clear()
        self._item = None
        self._slide = None
        self.pipeline.shutdown()

    # -- coordinates -------------------------------------------------------------------------

    @staticmethod
    def level0_to_scene(x: float, y: float) -> QPointF:
        """Scene point of a level-0 pixel position (the identity: the scene *is* level 0)."""
        return QPointF(x, y)

    @staticmethod
    def scene_to_level0(point: QPointF) -> tuple[float, float]:
        """Level-0 position of a scene point (the identity)."""
        return point.x(), point.y()

    def view_to_level0(self, pos: QPointF) -> tuple[float, float]:
        """Level-0 position under a viewport position, without integer rounding."""
        inverse, _ = self.viewportTransform().inverted()
        point = inverse.map(QPointF(pos))
        return point.x(), point.y()

    def scale_factor(self) -> float:
        """Screen pixels per level-0 pixel."""
        return self.transform().m11()

    def magnification(self) -> float | None:
        """The equivalent objective magnification on screen (None without objective power)."""
        power = self._slide.objective_power if self._slide is not None else None
        return self.scale_factor() * power if power else None

    def um_per_screen_px(self) -> float | None:
        """Microns per screen pixel at the current zoom (None without MPP)."""
        mpp = self._slide.mpp if self._slide is not None else None
        return mpp[0] / self.scale_factor() if mpp else None

    def current_level(self) -> int:
        """Pyramid level drawn at the current zoom: the coarsest one at least as fine as the screen."""
        if self._slide is None:
            return 0
        downsample = 1.0 / max(self.scale_factor() * self.devicePixelRatioF(), 1e-9)
        return self._slide.best_level_for_downsample(downsample)

    def visible_level0_rect(self) -> QRectF:
        """Level-0 rectangle covered by the viewport (may extend beyond the slide)."""
        inverse, _ = self.viewportTransform().inverted()
        return inverse.mapRect(QRectF(self.viewport().rect()))

    # -- navigation --------------------------------------------------------------------------

    def _fit_scale(self) -> float:
        if self._slide is None:
            return 1.0
        width, height = self._slide.dimensions
        viewport = self.viewport().rect()
        return max(1e-6, min(viewport.width() / width, viewport.height() / height) * 0.96)

    def _set_scale(self, scale: float, anchor: QPointF | None = None) -> None:
        """Set the zoom, keeping the level-0 point under ``anchor`` (viewport px) fixed."""
        self._auto_fit = False
        fit = self._fit_scale()
        self._min_scale = min(fit * 0.25, 0.5)
        self._max_scale = max(4.0, fit * 2)
        scale = min(max(scale, self._min_scale), self._max_scale)
        viewport_centre = QPointF(self.viewport().rect().center()) + QPointF(0.5, 0.5)
        if anchor is None:
            anchor = viewport_centre
        x, y = self.view_to_level0(anchor)
        self.setTransform(QTransform.fromScale(scale, scale))
        offset = (viewport_centre - anchor) / scale
        self.centerOn(QPointF(x + offset.x(), y + offset.y()))
        self._on_view_moved()

    def set_scale(self, scale: float, anchor: QPointF | None = None) -> None:
        """Set the zoom to ``scale`` screen px per level-0 px (clamped), keeping ``anchor`` fixed."""
        self._set_scale(scale, anchor)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Multiply the zoom by ``factor`` around ``anchor`` (viewport px; default the centre)."""
        self._set_scale(self.scale_factor() * factor, anchor)

    def fit_to_window(self) -> None:
        """Show the whole slide, centred."""
        if self._slide is None:
            return
        self.setTransform(QTransform.fromScale(self._fit_scale(), self._fit_scale()))
        width, height = self._slide.dimensions
        self.centerOn(width / 2, height / 2)
        self._on_view_moved()

    def set_magnification(self, magnification: float) -> bool:
        """Zoom to an objective magnification around the view centre (False without objective power)."""
        power = self._slide.objective_power if self._slide is not None else None
        if not power:
            return False
        self._set_scale(magnification / power)
        return True

    def center_on(self, x: float, y: float, magnification: float | None = None) -> None:
        """Centre the view on level-0 ``(x, y)``, optionally at an objective magnification."""
        self._auto_fit = False
        if magnification is not None:
            self.set_magnification(magnification)
        self.centerOn(QPointF(x, y))
        self._on_view_moved()

    def pan_by(self, dx: float, dy: float) -> None:
        """Pan by ``(dx, dy)`` viewport pixels."""
        self._auto_fit = False
        # Two scrolls in one frame (a diagonal pan) make Qt repaint the whole viewport rather
        # than blit; straight pans blit and repaint only the exposed strip.
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + round(dx))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + round(dy))

    # -- tiles -------------------------------------------------------------------------------

    def thumbnail_suffices(self) -> bool:
        """True when the thumbnail is at least as fine as the screen (no tiles needed)."""
        if self._slide is None or self.thumbnail_image is None:
            return False
        thumb_scale = self.thumbnail_image.width() / self._slide.dimensions[0]
        return thumb_scale >= self.scale_factor() * self.devicePixelRatioF()

    def visible_tile_keys(self, level: int | None = None, margin_tiles: int = 0) -> list[TileKey]:
        """Keys of the tiles of ``level`` (default: the current one) in view, centre first."""
        if self._slide is None or not self.pipeline.grids:
            return []
        if level is None and self.thumbnail_suffices():
            return []
        level = self.current_level() if level is None else level
        grid = self.pipeline.grids[level]
        rect = self.visible_level0_rect()
        col0, row0, col1, row1 = grid.tiles_in(rect.left(), rect.top(), rect.right(), rect.bottom())
        if rect.right() <= 0 or rect.bottom() <= 0:
            return []
        col0, row0 = max(0, col0 - margin_tiles), max(0, row0 - margin_tiles)
        col1 = min(grid.cols - 1, col1 + margin_tiles)
        row1 = min(grid.rows - 1, row1 + margin_tiles)
        span = grid.tile_size * grid.downsample
        generation = self.pipeline.generation
        keys = [
            (generation, level, col, row)
            for row in range(row0, row1 + 1)
            for col in range(col0, col1 + 1)
        ]
        centre = rect.center()
        return centre_out(keys, centre.x() / span, centre.y() / span)

    def missing_visible_tiles(self) -> int:
        """Number of tiles in view at the current level that are not cached yet."""
        return sum(1 for key in self.visible_tile_keys() if key not in self.cache)

    def update_requests(self) -> None:
        """Ask the pipeline for the visible tiles (centre-out), then a one-tile ring around them."""
        if self._slide is None:
            self.pipeline.cancel_all()
            return
        visible = self.visible_tile_keys()
        ring = [k for k in self.visible_tile_keys(margin_tiles=1) if k not in set(visible)]
        self.pipeline.request(visible + ring)

    def _on_tiles_loaded(self, keys: list[TileKey]) -> None:
        if self._item is None:
            return
        level = self.current_level()
        grids = self.pipeline.grids
        region = QRectF()
        for key in keys:
            if key[1] < level:
                continue  # finer than what is drawn now: not visible
            region = region.united(QRectF(*grids[key[1]].tile_scene_rect(key[2], key[3])))
        if not region.isEmpty():
            self._item.update(region)
        if self._thumbnail_wanted and self.missing_visible_tiles() == 0:
            self._maybe_start_thumbnail()  # the first frame is complete

    def wait_for_complete_frame(self, since: float, timeout: float = 20.0) -> bool:
        """Process events until a complete frame is painted after ``since`` (True) or timeout.

        A complete frame shows every visible tile of the level drawn, none stood in for by a
        coarser tile or the thumbnail (see :attr:`last_complete_paint`); unlike
        :meth:`wait_until_idle` it does not wait for the ring of tiles read ahead around the
        view, nor for the thumbnail.  ``since`` is a ``time.perf_counter()`` value.
        """
        deadline = time.monotonic() + timeout
        app = QApplication.instance()
        while time.monotonic() < deadline:
            if self.last_complete_paint >= since:
                return True
            if app is not None:
                app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
            if self.last_complete_paint < since:
                time.sleep(0.001)
        return self.last_complete_paint >= since

    def wait_until_idle(self, timeout: float = 20.0, thumbnail: bool = True) -> bool:
        """Process events until every visible tile is cached and painted (True) or timeout (False).

        With ``thumbnail`` the slide's thumbnail (built off the UI thread) must be there too;
        without, this is the first complete frame.
        """
        deadline = time.monotonic() + timeout
        app = QApplication.instance()
        while time.monotonic() < deadline:
            self.update_requests()
            remaining = max(0.0, deadline - time.monotonic())
            self.pipeline.wait_until_idle(remaining)
            if app is not None:
                app.processEvents()
            if self.missing_visible_tiles() == 0 and self.pipeline.is_idle():
                if thumbnail:
                    self._maybe_start_thumbnail()
                if thumbnail and self._thumbnail_pending:
                    time.sleep(0.002)  # its signal is delivered by the next processEvents
                    continue
                self.viewport().repaint()
                return True
        return False

    # -- events ------------------------------------------------------------------------------

    def is_moving(self) -> bool:
        """True while the user pans or zooms (tiles are then drawn without smoothing)."""
        return time.monotonic() - self._last_move < SETTLE_MS / 1000

    def _on_view_moved(self, *_args: object) -> None:
        self._last_move = time.monotonic()
        self._settle_timer.start()
        self.scale_bar.set_um_per_px(self.um_per_screen_px() if self._slide is not None else None)
        if self.bottom_overlays:
            self.place_overlays()  # the scale bar's width follows the zoom
        self._request_timer.start()
        self.viewChanged.emit()

    def place_overlays(self) -> None:
        """Put the minimap top-right and the scale bar bottom-left of the viewport."""
        margin = 12
        viewport = self.viewport()
        self.minimap.move(viewport.width() - self.minimap.width() - margin, margin)
        self.scale_bar.move(margin, viewport.height() - self.scale_bar.height() - margin)
        # Further legends (the heatmap's colour bar) follow the scale bar along the bottom.
        x = margin + (self.scale_bar.width() + margin if self.scale_bar.isVisible() else 0)
        for overlay in self.bottom_overlays:
            overlay.move(x, viewport.height() - overlay.height() - margin)
            if overlay.isVisible():
                x += overlay.width() + margin

    def add_bottom_overlay(self, overlay: QWidget) -> None:
        """Lay ``overlay`` (a child of the viewport) along the bottom, after the scale bar."""
        self.bottom_overlays.append(overlay)
        self.place_overlays()

    def scrollContentsBy(self, dx: int, dy: int) -> None:  # noqa: N802 - Qt override
        # Scrolling blits the viewport and moves its children with it: put the overlays back.
        super().scrollContentsBy(dx, dy)
        self.place_overlays()

    def resizeEvent(self, event: QResizeEvent) -> None:  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit_to_window()
        self.place_overlays()
        self._on_view_moved()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt override
        super().showEvent(event)
        self.resizeEvent(QResizeEvent(self.size(), self.size()))

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt override
        delta = event.angleDelta().y() or event.angleDelta().x()
        if delta == 0 or self._slide is None:
            event.ignore()
            return
        # One notch (120) zooms by 2^(1/4); trackpads send smaller deltas for smooth zoom.
        self.zoom_by(math.pow(2.0, delta / 480.0), event.position())
        event.accept()

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt override
        key = event.key()
        step_x = self.viewport().width() / 8
        step_y = self.viewport().height() / 8
        shift = event.modifiers() & Qt.KeyboardModifier.ShiftModifier
        if shift and key in (Qt.Key.Key_Up, Qt.Key.Key_Down):
            self.zoom_by(1.25 if key == Qt.Key.Key_Up else 0.8)
        elif key == Qt.Key.Key_Left:
            self.pan_by(-step_x, 0)
        elif key == Qt.Key.Key_Right:
            self.pan_by(step_x, 0)
        elif key == Qt.Key.Key_Up:
            self.pan_by(0, -step_y)
        elif key == Qt.Key.Key_Down:
            self.pan_by(0, step_y)
        elif key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom_by(1.25)
        elif key in (Qt.Key.Key_Minus, Qt.Key.Key_Underscore):
            self.zoom_by(0.8)
        elif key == Qt.Key.Key_0 or (key == Qt.Key.Key_F and not event.modifiers()):
            self.fit_to_window()
        else:
            super().keyPressEvent(event)
            return
        event.accept()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        self._auto_fit = False
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt override
        super().mouseMoveEvent(event)
        if self._slide is not None:
            self.cursorMoved.emit(*self.view_to_level0(event.position()))


def png_bytes(image: QImage) -> bytes:
    """``image`` encoded as PNG.

    Raises
    ------
    SlideError
        The image cannot be encoded (an empty image).
    """
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtGui import QImageWriter

    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    # QImage.save(buffer, "PNG") does the same, but PySide6's stubs want a bytes format there
    # and its runtime only takes a str one.
    if not QImageWriter(buffer, QByteArray(b"PNG")).write(image):
        raise SlideError("figure", "cannot encode the image as PNG")
    buffer.close()
    return bytes(data.data())


def open_slide_checked(path: str) -> SlideSource:
    """Open a slide for the viewer; a failure raises :class:`SlideError` naming the file."""
    from pathviewer.core.slide import open_slide

    try:
        return open_slide(path)
    except SlideError:
        raise
    except Exception as error:  # keep every open failure one clear message
        raise SlideError(path, f"cannot be opened ({type(error).__name__}: {error})") from None
