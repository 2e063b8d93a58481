"""Tile pipeline and cache: threads, stale requests, byte cap, error tiles, closing slides."""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtGui import QImage  # noqa: E402

from pathviewer.core.slide import ArraySlide, open_slide  # noqa: E402
from pathviewer.gui.viewer.tiles import (  # noqa: E402
    TileCache,
    TileGrid,
    TilePipeline,
    centre_out,
    level_grids,
    rgb_to_qimage,
)


class RecordingSlide(ArraySlide):
    """An ArraySlide that records which thread reads it, can block reads, and counts closes."""

    def __init__(self, size: int = 1024, levels: int = 3) -> None:
        rng = np.random.default_rng(0)
        super().__init__(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), levels=levels)
        self.threads: set[int] = set()
        self.reads: list[tuple[tuple[int, int], int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.closes = 0
        self._lock = threading.Lock()

    def read_region(self, location, level, size):
        with self._lock:
            self.threads.add(threading.get_ident())
            self.reads.append(((int(location[0]), int(location[1])), level))
        self.started.set()
        assert self.gate.wait(10)
        return super().read_region(location, level, size)

    def close(self) -> None:
        self.closes += 1


def _image(width: int = 64, height: int = 64) -> QImage:
    return rgb_to_qimage(np.zeros((height, width, 3), np.uint8))


def test_cache_respects_byte_cap_and_lru_order() -> None:
    one = _image().sizeInBytes()
    cache = TileCache(cap_bytes=one * 5 + one // 2)
    for i in range(5):
        cache.put((1, 0, i, 0), _image())
    assert cache.get((1, 0, 0, 0)) is not None  # now most recently used
    for i in range(5, 20):
        cache.put((1, 0, i, 0), _image())
        assert cache.bytes_used <= cache.cap_bytes
    assert len(cache) == 5
    assert cache.bytes_used == 5 * one
    assert (1, 0, 1, 0) not in cache  # evicted oldest first
    cache.cap_bytes = one * 2
    assert len(cache) == 2 and cache.bytes_used == 2 * one
    cache.clear()
    assert len(cache) == 0 and cache.bytes_used == 0


def test_rgb_to_qimage_owns_its_pixels() -> None:
    rgb = np.zeros((3, 5, 3), np.uint8)
    rgb[1, 2] = (10, 200, 30)
    image = rgb_to_qimage(rgb)
    del rgb
    assert (image.width(), image.height()) == (5, 3)
    color = image.pixelColor(2, 1)
    assert (color.red(), color.green(), color.blue()) == (10, 200, 30)


def test_tile_grid_geometry_covers_edges() -> None:
    grid = TileGrid(level=1, downsample=2.0, width=1100, height=600, tile_size=512)
    assert (grid.cols, grid.rows) == (3, 2)
    assert grid.tile_level_rect(2, 1) == (1024, 512, 76, 88)
    assert grid.tile_scene_rect(2, 1) == (2048.0, 1024.0, 152.0, 176.0)
    assert grid.tiles_in(0, 0, 1024, 1024) == (0, 0, 0, 0)
    assert grid.tiles_in(1000, 1000, 1e9, 1e9) == (0, 0, 2, 1)


def test_centre_out_orders_by_distance() -> None:
    keys = [(1, 0, c, r) for r in range(3) for c in range(3)]
    ordered = centre_out(keys, 1.5, 1.5)
    assert ordered[0] == (1, 0, 1, 1)
    assert set(ordered[-4:]) == {(1, 0, 0, 0), (1, 0, 2, 0), (1, 0, 0, 2), (1, 0, 2, 2)}


def test_tiles_are_read_off_the_ui_thread(qtbot) -> None:
    slide = RecordingSlide()
    cache = TileCache(64 << 20)
    pipeline = TilePipeline(cache, threads=2, tile_size=256)
    try:
        generation = pipeline.set_slide(slide)
        keys = [(generation, 0, c, r) for r in range(4) for c in range(4)]
        loaded: list = []
        pipeline.tilesLoaded.connect(loaded.extend)
        assert pipeline.request(keys) == 16
        assert pipeline.wait_until_idle(10)
        assert sorted(loaded) == sorted(keys)
        assert all(key in cache for key in keys)
        assert threading.get_ident() not in slide.threads
        assert slide.threads and threading.get_ident() not in pipeline.stats.worker_threads
        # Pixels arrive where they belong.
        image = cache.get((generation, 0, 1, 2))
        expected = slide.read_region((256, 512), 0, (1, 1))[0, 0]
        color = image.pixelColor(0, 0)
        assert (color.red(), color.green(), color.blue()) == tuple(int(v) for v in expected)
    finally:
        pipeline.shutdown()


def test_stale_requests_are_dropped(qtbot) -> None:
    slide = RecordingSlide()
    cache = TileCache(64 << 20)
    pipeline = TilePipeline(cache, threads=1, tile_size=256)
    try:
        generation = pipeline.set_slide(slide)
        slide.gate.clear()
        first = [(generation, 0, c, 0) for c in range(4)]
        second = [(generation, 0, c, 3) for c in range(4)]
        pipeline.request(first)
        assert slide.started.wait(5)  # the worker is now blocked inside the first read
        pipeline.request(second)  # the view moved: the rest of `first` must never be read
        slide.gate.set()
        assert pipeline.wait_until_idle(10)
        read_rows = [loc[1] // 256 for loc, _ in slide.reads]
        assert read_rows.count(0) == 1  # only the tile already in flight
        assert read_rows.count(3) == 4
        assert pipeline.stats.dropped == 3
        assert all(key in cache for key in second)
        assert sum(key in cache for key in first) == 1
    finally:
        pipeline.shutdown()


def test_old_slide_closed_only_after_its_reads_end(qtbot) -> None:
    old, new = RecordingSlide(), RecordingSlide()
    cache = TileCache(64 << 20)
    pipeline = TilePipeline(cache, threads=1, tile_size=256)
    try:
        generation = pipeline.set_slide(old)
        old.gate.clear()
        pipeline.request([(generation, 0, 0, 0), (generation, 0, 1, 0)])
        assert old.started.wait(5)
        new_generation = pipeline.set_slide(new)
        assert old.closes == 0  # a worker is still reading it
        old.gate.set()
        pipeline.request([(new_generation, 0, 0, 0)])
        assert pipeline.wait_until_idle(10)
        assert old.closes == 1
        assert len(old.reads) == 1  # the second request died with the switch
        assert cache.keys() == [(new_generation, 0, 0, 0)]  # nothing of the old slide cached
    finally:
        pipeline.shutdown()
    assert new.closes == 1


def test_unreadable_slide_gives_error_tile(qtbot, openslide_fixtures) -> None:
    slide = open_slide(openslide_fixtures / "unreadable.svs")
    cache = TileCache(16 << 20)
    pipeline = TilePipeline(cache, threads=1)
    try:
        generation = pipeline.set_slide(slide)
        key = (generation, 0, 0, 0)
        pipeline.request([key])
        assert pipeline.wait_until_idle(10)
        assert key in cache.errors
        assert pipeline.stats.failed == 1
        image = cache.get(key)
        assert (image.width(), image.height()) == (16, 16)
        # Red-hatched: red dominates somewhere in the tile.
        colors = [image.pixelColor(x, y) for x in range(16) for y in range(16)]
        assert any(c.red() > 150 and c.green() < 100 for c in colors)
    finally:
        pipeline.shutdown()


def test_level_grids_match_slide(openslide_fixtures) -> None:
    slide = open_slide(openslide_fixtures / "boxes.tiff")
    try:
        grids = level_grids(slide, tile_size=64)
        assert [(g.width, g.height) for g in grids] == list(slide.level_dimensions)
        assert grids[0].cols == 5 and grids[0].rows == 4
    finally:
        slide.close()


def test_a_truncated_slide_gives_error_tiles_only_where_tiles_are_missing(
    qtbot, truncated_slide
) -> None:
    slide = open_slide(truncated_slide[0])
    cache = TileCache(64 << 20)
    pipeline = TilePipeline(cache, threads=1)  # one worker: the order of reads is the request's
    failures: list[str] = []
    pipeline.tileFailed.connect(failures.append)
    try:
        generation = pipeline.set_slide(slide)
        # Level 0 in 512 px tiles: row 0 is whole, row 1 lies in the cut-off part of the file.
        bad = [(generation, 0, 0, 1), (generation, 0, 1, 1)]
        good = [(generation, 0, 0, 0), (generation, 0, 1, 0), (generation, 1, 0, 0)]
        for key in bad + good:  # the failures come first, as in a view opened at the bottom
            pipeline.request([key])
            assert pipeline.wait_until_idle(10)
        assert set(cache.errors) == set(bad)
        for key in good:
            assert cache.get(key) is not None and key not in cache.errors
        assert pipeline.stats.failed == 2 and pipeline.stats.read == 3
        assert len(failures) == 1  # one announcement per slide, not one per tile
    finally:
        pipeline.shutdown()
