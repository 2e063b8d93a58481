"""The viewer's tile pipeline: a byte-capped LRU cache and a thread-pool tile loader.

Design
------
* A tile is addressed by a :data:`TileKey` ``(generation, level, col, row)``: ``generation``
  identifies one opened slide, so tiles of a slide that was closed can never be shown for the next
  one, whatever is still in flight.
* :class:`TilePipeline` owns ``threads`` plain worker threads that pull requests from one pending
  list.  :meth:`TilePipeline.request` *replaces* that list: tiles that left the view are dropped
  before anyone reads them; the caller passes the keys in the order it wants them (the view passes
  them centre-out).  Workers read the region (OpenSlide releases the GIL while decoding), convert
  it to a ``QImage`` in the worker thread (``Format_RGB32``, the raster engine's fast path), and
  hand it back in a batch: the UI thread is woken once per batch, not once per tile.
* The UI thread inserts results into the :class:`TileCache` and emits :attr:`TilePipeline.tilesLoaded`.
* A read that fails (corrupt JPEG...) yields an error tile (red hatching and the cause), the app
  keeps running.
* :meth:`TilePipeline.set_slide` closes the previous slide only once no worker is reading it.

No widget is created here; the module only needs QtCore/QtGui.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QCoreApplication, QEventLoop, QObject, QSettings, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen

from pathviewer.core.color import ColorTransform
from pathviewer.core.slide import SlideSource

log = logging.getLogger(__name__)

#: ``(generation, level, col, row)``.
TileKey = tuple[int, int, int, int]

#: Tile edge in level pixels.  512 amortises OpenSlide's per-call overhead better than 256.
DEFAULT_TILE_SIZE = 512

#: QSettings key of the cache cap in MiB, and its default.
CACHE_SETTING = "viewer/tile_cache_mb"
DEFAULT_CACHE_MB = 256

#: QSettings key of the number of tile threads (0 = automatic).
THREADS_SETTING = "viewer/tile_threads"


def default_threads() -> int:
    """Tile threads when the setting says automatic: the core count, between 2 and 8."""
    return max(2, min(8, os.cpu_count() or 2))


def cache_cap_bytes(settings: QSettings | None = None) -> int:
    """The tile-cache cap from QSettings (``viewer/tile_cache_mb``), in bytes."""
    settings = settings or QSettings()
    try:
        mb = float(settings.value(CACHE_SETTING, DEFAULT_CACHE_MB))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        mb = DEFAULT_CACHE_MB
    return int(max(16.0, mb) * 1024 * 1024)


def threads_setting(settings: QSettings | None = None) -> int:
    """Number of tile threads from QSettings (``viewer/tile_threads``; 0 or missing = automatic)."""
    settings = settings or QSettings()
    try:
        value = int(settings.value(THREADS_SETTING, 0))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        value = 0
    return value if value > 0 else default_threads()


@dataclass(frozen=True)
class TileGrid:
    """Tile geometry of one slide level.

    Attributes
    ----------
    level, downsample
        The level and its downsample relative to level 0.
    width, height
        Level size in level pixels.
    tile_size
        Tile edge in level pixels (edge tiles are smaller).
    """

    level: int
    downsample: float
    width: int
    height: int
    tile_size: int

    @property
    def cols(self) -> int:
        return max(1, math.ceil(self.width / self.tile_size))

    @property
    def rows(self) -> int:
        return max(1, math.ceil(self.height / self.tile_size))

    def tile_level_rect(self, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of a tile in level pixels."""
        x, y = col * self.tile_size, row * self.tile_size
        return x, y, min(self.tile_size, self.width - x), min(self.tile_size, self.height - y)

    def tile_scene_rect(self, col: int, row: int) -> tuple[float, float, float, float]:
        """``(x, y, w, h)`` of a tile in level-0 (scene) coordinates."""
        x, y, w, h = self.tile_level_rect(col, row)
        d = self.downsample
        return x * d, y * d, w * d, h * d

    def tiles_in(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        """Inclusive ``(col0, row0, col1, row1)`` of tiles meeting a level-0 rectangle."""
        span = self.tile_size * self.downsample
        col0 = max(0, int(math.floor(x0 / span)))
        row0 = max(0, int(math.floor(y0 / span)))
        col1 = min(self.cols - 1, int(math.floor(max(x1 - 1e-6, 0) / span)))
        row1 = min(self.rows - 1, int(math.floor(max(y1 - 1e-6, 0) / span)))
        return col0, row0, col1, row1


def level_grids(slide: SlideSource, tile_size: int = DEFAULT_TILE_SIZE) -> list[TileGrid]:
    """One :class:`TileGrid` per level of ``slide``."""
    return [
        TileGrid(level, float(ds), int(dims[0]), int(dims[1]), tile_size)
        for level, (dims, ds) in enumerate(
            zip(slide.level_dimensions, slide.level_downsamples, strict=True)
        )
    ]


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """An owned ``Format_RGB32`` QImage of an ``(h, w, 3)`` uint8 array (safe in any thread).

    The pixels are copied into a Qt-owned ``RGB888`` image through ``QImage.bits()`` (no image
    borrows the numpy buffer), then converted by Qt's vectorised converter to ``RGB32``, the
    raster engine's fast path for drawing: about 7x faster than shuffling channels in numpy.
    """
    height, width = int(rgb.shape[0]), int(rgb.shape[1])
    if width == 0 or height == 0:
        image = QImage(max(width, 1), max(height, 1), QImage.Format.Format_RGB32)
        image.fill(QColor(255, 255, 255))
        return image
    staging = QImage(width, height, QImage.Format.Format_RGB888)
    stride = staging.bytesPerLine()
    view = np.frombuffer(staging.bits(), np.uint8, count=stride * height).reshape(height, stride)
    view[:, : width * 3] = np.asarray(rgb, np.uint8).reshape(height, width * 3)
    del view
    return staging.convertToFormat(QImage.Format.Format_RGB32)


def error_tile_image(width: int, height: int, message: str) -> QImage:
    """A red-hatched tile that says why it could not be read."""
    width, height = max(1, width), max(1, height)
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor(255, 236, 236))
    painter = QPainter(image)
    painter.fillRect(0, 0, width, height, QBrush(QColor(210, 40, 40), Qt.BrushStyle.BDiagPattern))
    painter.setPen(QPen(QColor(200, 30, 30), 2))
    painter.drawRect(1, 1, width - 2, height - 2)
    font = QFont()
    font.setPixelSize(max(9, min(16, width // 20)))
    painter.setFont(font)
    painter.setPen(QColor(110, 0, 0))
    text = "Tile cannot be read\n" + message
    margin = max(2, width // 16)
    painter.fillRect(
        margin, height // 3, width - 2 * margin, height // 3, QColor(255, 255, 255, 220)
    )
    painter.drawText(
        margin,
        height // 3,
        width - 2 * margin,
        height // 3,
        Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
        text,
    )
    painter.end()
    return image


class TileCache:
    """Least-recently-used cache of tile images with a cap in bytes.

    Parameters
    ----------
    cap_bytes
        The most pixel bytes kept; the least recently used tiles are evicted beyond it.
    """

    def __init__(self, cap_bytes: int) -> None:
        self._cap = int(cap_bytes)
        self._items: OrderedDict[TileKey, QImage] = OrderedDict()
        self._bytes = 0
        self.errors: set[TileKey] = set()

    @property
    def cap_bytes(self) -> int:
        return self._cap

    @cap_bytes.setter
    def cap_bytes(self, value: int) -> None:
        self._cap = int(value)
        self._evict()

    @property
    def bytes_used(self) -> int:
        """Pixel bytes held now (always <= :attr:`cap_bytes` after a put)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def keys(self) -> list[TileKey]:
        return list(self._items)

    def get(self, key: TileKey) -> QImage | None:
        """The tile, marked as recently used, or None."""
        image = self._items.get(key)
        if image is not None:
            self._items.move_to_end(key)
        return image

    def peek(self, key: TileKey) -> QImage | None:
        """The tile without changing its recency (for coarse fall-backs)."""
        return self._items.get(key)

    def put(self, key: TileKey, image: QImage, error: bool = False) -> None:
        """Insert or replace a tile, then evict down to the cap."""
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.sizeInBytes()
        self._items[key] = image
        self._bytes += image.sizeInBytes()
        if error:
            self.errors.add(key)
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self._cap and len(self._items) > 1:
            key, image = self._items.popitem(last=False)
            self._bytes -= image.sizeInBytes()
            self.errors.discard(key)
        if self._bytes > self._cap and self._items:
            # One tile larger than the whole cap: keep nothing rather than break the cap.
            self._items.clear()
            self._bytes = 0
            self.errors.clear()

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
        self.errors.clear()


@dataclass
class _Session:
    """One opened slide as the workers see it."""

    slide: SlideSource
    generation: int
    grids: list[TileGrid]
    #: The slide's ICC profile to sRGB, applied to every tile read (None: pixels as stored).
    color: ColorTransform | None = None
    inflight: int = 0
    retired: bool = False
    closed: bool = False


@dataclass
class _Result:
    key: TileKey
    image: QImage | None
    error: str = ""
    worker: int = 0


@dataclass
class PipelineStats:
    """Counters for tests and the benchmark."""

    requested: int = 0
    dropped: int = 0
    read: int = 0
    failed: int = 0
    delivered: int = 0
    max_drain_ms: float = 0.0
    worker_threads: set[int] = field(default_factory=set)


class TilePipeline(QObject):
    """Loads tiles of the current slide on worker threads into a :class:`TileCache`.

    Parameters
    ----------
    cache
        Where delivered tiles go (the UI thread owns it; workers never touch it).
    threads
        Number of worker threads.
    tile_size
        Tile edge in level pixels.

    Signals
    -------
    tilesLoaded(list)
        Keys just inserted into the cache (emitted on the UI thread, once per batch).
    """

    tilesLoaded = Signal(list)
    #: A tile of the current slide could not be read: the reason (once per slide).
    tileFailed = Signal(str)
    _wake = Signal()

    def __init__(
        self,
        cache: TileCache,
        threads: int | None = None,
        tile_size: int = DEFAULT_TILE_SIZE,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.cache = cache
        self.tile_size = tile_size
        self.threads = threads or default_threads()
        self.stats = PipelineStats()
        self._cond = threading.Condition()
        self._pending: list[TileKey] = []
        self._inflight_keys: set[TileKey] = set()
        self._done: list[_Result] = []
        self._session: _Session | None = None
        self._generation = 0
        # Generations (slides) whose first unreadable tile was announced by tileFailed.
        self._failed_generations: set[int] = set()
        self._stopping = False
        self._wake.connect(self._drain, Qt.ConnectionType.QueuedConnection)
        self._workers = [
            threading.Thread(target=self._work, name=f"tile-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    # -- slide -------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """Generation of the current slide (part of every :data:`TileKey`)."""
        return self._generation

    @property
    def slide(self) -> SlideSource | None:
        return self._session.slide if self._session else None

    @property
    def grids(self) -> list[TileGrid]:
        return self._session.grids if self._session else []

    def set_slide(self, slide: SlideSource | None, color: ColorTransform | None = None) -> int:
        """Switch to ``slide`` (or none): drop pending work, clear the cache, close the old slide.

        The old slide is closed as soon as no worker reads it (now, or when its last read ends).

        Parameters
        ----------
        color
            Applied to every tile read (the slide's ICC profile to sRGB), or None.

        Returns
        -------
        int
            The new generation.
        """
        with self._cond:
            old = self._session
            self.stats.dropped += len(self._pending)
            self._pending.clear()
            self._generation += 1
            self._session = (
                _Session(slide, self._generation, level_grids(slide, self.tile_size), color)
                if slide is not None
                else None
            )
            self._done = [r for r in self._done if r.key[0] == self._generation]
            if old is not None:
                old.retired = True
                if old.inflight == 0:
                    self._close_session(old)
        self.cache.clear()
        return self._generation

    def set_color(self, color: ColorTransform | None) -> int:
        """Read the same slide's tiles again through ``color``; the slide stays open.

        Returns
        -------
        int
            The new generation (every cached tile was of the old colours).
        """
        with self._cond:
            old = self._session
            if old is None:
                return self._generation
            self.stats.dropped += len(self._pending)
            self._pending.clear()
            self._generation += 1
            self._session = _Session(old.slide, self._generation, old.grids, color)
            self._done = [r for r in self._done if r.key[0] == self._generation]
            old.retired = True
            old.closed = True  # the slide lives on in the new session: nothing to close
        self.cache.clear()
        return self._generation

    @staticmethod
    def _close_session(session: _Session) -> None:
        if session.closed:
            return
        session.closed = True
        try:
            session.slide.close()
        except Exception:  # closing must never take the viewer down
            log.exception("closing %s failed", session.slide.path)

    # -- requests ----------------------------------------------------------------------------

    def request(self, keys: Sequence[TileKey]) -> int:
        """Make ``keys`` the pending work, in this order; anything pending before is dropped.

        Keys already cached, in flight, or of another slide are skipped.

        Returns
        -------
        int
            Number of tiles queued.
        """
        with self._cond:
            wanted: list[TileKey] = []
            seen: set[TileKey] = set()
            for key in keys:
                if (
                    key[0] != self._generation
                    or key in seen
                    or key in self._inflight_keys
                    or key in self.cache
                ):
                    continue
                seen.add(key)
                wanted.append(key)
            previous = set(self._pending)
            self.stats.dropped += len(previous - seen)
            self.stats.requested += len(seen - previous)
            self._pending = wanted
            self._pending.reverse()  # workers pop from the end: first wanted = first read
            if wanted:
                self._cond.notify_all()
            return len(wanted)

    def cancel_all(self) -> None:
        """Drop every pending request (reads in flight finish and are cached)."""
        with self._cond:
            self.stats.dropped += len(self._pending)
            self._pending.clear()

    @property
    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    def is_idle(self) -> bool:
        """No pending request, no read in flight, nothing waiting for the UI thread."""
        with self._cond:
            return not self._pending and not self._inflight_keys and not self._done

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """Process Qt events until :meth:`is_idle` (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        app = QCoreApplication.instance()
        while time.monotonic() < deadline:
            if app is not None:
                app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 20)
            if self._done:
                self._drain()
            if self.is_idle():
                return True
            time.sleep(0.002)
        return self.is_idle()

    # -- workers -----------------------------------------------------------------------------

    def _work(self) -> None:
        ident = threading.get_ident()
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                key = self._pending.pop()
                session = self._session
                if session is None or key[0] != session.generation:
                    continue
                session.inflight += 1
                self._inflight_keys.add(key)
            result = self._read(session, key, ident)
            with self._cond:
                session.inflight -= 1
                self._inflight_keys.discard(key)
                wake = False
                if session.retired:
                    if session.inflight == 0:
                        self._close_session(session)
                else:
                    self._done.append(result)
                    wake = len(self._done) == 1
                # An idle worker must not keep the last slide it read alive; drop it while still
                # holding the lock, so that is_idle() never sees a worker holding a slide.
                del session, result
            if wake:
                try:
                    self._wake.emit()
                except RuntimeError:  # the pipeline's QObject is gone: the app is quitting
                    return

    def _read(self, session: _Session, key: TileKey, ident: int) -> _Result:
        _, level, col, row = key
        grid = session.grids[level]
        x, y, w, h = grid.tile_level_rect(col, row)
        location = (int(round(x * grid.downsample)), int(round(y * grid.downsample)))
        try:
            rgb = session.slide.read_region(location, level, (w, h))
            if session.color is not None:
                rgb = session.color.apply(rgb)
            return _Result(key, rgb_to_qimage(rgb), worker=ident)
        except Exception as error:  # any decode failure becomes an error tile, never a crash
            log.warning("tile %s of %s failed: %s", key[1:], session.slide.path, error)
            cause = getattr(error, "cause", None) or str(error)
            return _Result(key, None, error=str(cause), worker=ident)

    def _drain(self) -> None:
        """UI thread: move finished tiles into the cache and announce them."""
        started = time.perf_counter()
        self._drain_results()
        elapsed = (time.perf_counter() - started) * 1000
        self.stats.max_drain_ms = max(self.stats.max_drain_ms, elapsed)

    def _drain_results(self) -> None:
        with self._cond:
            done, self._done = self._done, []
        keys: list[TileKey] = []
        grids = self.grids
        for result in done:
            self.stats.worker_threads.add(result.worker)
            if result.key[0] != self._generation:
                continue
            if result.image is None:
                self.stats.failed += 1
                if result.key[0] not in self._failed_generations:
                    self._failed_generations.add(result.key[0])
                    self.tileFailed.emit(result.error)
                grid = grids[result.key[1]]
                _, _, w, h = grid.tile_level_rect(result.key[2], result.key[3])
                self.cache.put(result.key, error_tile_image(w, h, result.error), error=True)
            else:
                self.stats.read += 1
                self.cache.put(result.key, result.image)
            keys.append(result.key)
        if keys:
            self.stats.delivered += len(keys)
            self.tilesLoaded.emit(keys)

    def shutdown(self) -> None:
        """Stop the workers and close the current slide (call once, when the viewer goes)."""
        self.set_slide(None)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=5)


def centre_out(keys: Iterable[TileKey], centre_col: float, centre_row: float) -> list[TileKey]:
    """``keys`` sorted by distance of the tile centre from ``(centre_col, centre_row)``."""
    return sorted(
        keys, key=lambda k: (k[2] + 0.5 - centre_col) ** 2 + (k[3] + 0.5 - centre_row) ** 2
    )
