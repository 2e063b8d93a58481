"""Viewer benchmark: ``python -m pathviewer.bench viewer --json OUT.json``.

Measures, on a synthetic slide of at least 20k x 20k px (generated once with
:func:`pathviewer.core.synth.write_large_slide` and cached):

``first_complete_frame_ms``
    opening the slide in the real main window (fit to window) until the end of the first paint
    that shows every visible tile, none stood in for by a coarser tile (the view's
    ``last_complete_paint``); ``first_complete_frame_20x_ms`` does the same but jumps to 20x
    in the slide centre first, so every visible tile must be read.
``first_paint_ms``, ``first_paint_20x_ms``
    the same opens until the view is idle: the visible tiles and the one-tile ring read ahead
    around them are in, and the view repainted (what these two figures always measured).
``tile_ratio``
    tiles/s delivered into the cache by the viewer's :class:`~pathviewer.gui.viewer.tiles.TilePipeline`
    over tiles/s of plain ``read_region`` calls on a thread pool of the same size, on the same
    level-0 tiles, each with a freshly opened slide (cold OpenSlide cache); best of
    ``--rounds`` alternating rounds.  Target >= 0.9 (issue 18).
``max_ui_stall_ms``
    the longest gap of a 5 ms QTimer heartbeat beyond its interval, during a scripted pan/zoom
    tour of ``--tour-seconds`` (smooth pans at several zooms, wheel zooms, jumps).  Target < 30.
``display_repaint_ms``
    a full repaint of the view after a brightness/contrast/gamma or stain-channel change, per
    kind of change (``unadjusted`` is the same repaint without adjustments); no tile is read.
    ``display_change_ms`` is what applying the change costs before that repaint (the lookup
    tables built; ``*_first`` when the case's stain tables are new).
``peak_rss_mb``
    the process's peak resident memory during the viewer part, against ``cache_cap_mb``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from pathviewer.bench import emit_report

if TYPE_CHECKING:
    pass

#: Slide edge of the benchmark slide (level-0 px).
DEFAULT_SIZE = 20000


def bench_cache_dir() -> Path:
    """Where the generated slide is kept between runs (``PATHVIEWER_BENCH_CACHE`` overrides)."""
    override = os.environ.get("PATHVIEWER_BENCH_CACHE")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_cache_dir("pathviewer", appauthor=False)) / "bench"


def ensure_slide(size: int = DEFAULT_SIZE, seed: int = 0) -> tuple[Path, str]:
    """The cached benchmark slide, generated once by :func:`~pathviewer.core.synth.write_large_slide`.

    Returns the slide path and the name of the generator that made it.
    """
    from pathviewer.core.progress import drive
    from pathviewer.core.synth import write_large_slide

    directory = bench_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"large-{size}-seed{seed}.tif"
    if not path.is_file():
        print(f"generating {path} (once)...", file=sys.stderr)
        drive(write_large_slide(path, size=size, seed=seed), quiet=not sys.stderr.isatty())
    return path, "pathviewer.core.synth.write_large_slide"


def current_rss_mb() -> float:
    """Resident set size of this process now, in MiB."""
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _warm_os_cache(path: Path) -> None:
    """Read the file once so both contenders of the tile ratio find it in the page cache."""
    with open(path, "rb") as handle:
        while handle.read(8 << 20):
            pass


def _tile_keys(grid, count: int, generation: int) -> list[tuple[int, int, int, int]]:
    """``count`` level-0 tiles in a square block around the slide centre."""
    side = max(1, int(math.sqrt(count)))
    col0 = max(0, grid.cols // 2 - side // 2)
    row0 = max(0, grid.rows // 2 - side // 2)
    return [
        (generation, 0, col, row)
        for row in range(row0, min(grid.rows, row0 + side))
        for col in range(col0, min(grid.cols, col0 + side))
    ]


def measure_tile_ratio(path: Path, threads: int, count: int, rounds: int) -> dict[str, float]:
    """Pipeline tiles/s over raw ``read_region`` tiles/s (see the module docstring)."""
    from pathviewer.core.slide import open_slide
    from pathviewer.gui.viewer.tiles import TileCache, TilePipeline, level_grids

    _warm_os_cache(path)
    raw_rates: list[float] = []
    pipe_rates: list[float] = []
    n_tiles = 0

    def run_raw() -> None:
        # The same reads a viewer needs, on a plain thread pool, fresh handle (cold cache).
        slide = open_slide(path)
        grid = level_grids(slide)[0]
        keys = _tile_keys(grid, count, 1)

        def read(key: tuple[int, int, int, int]) -> int:
            x, y, w, h = grid.tile_level_rect(key[2], key[3])
            return int(slide.read_region((x, y), 0, (w, h)).shape[0])

        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            done = len(list(pool.map(read, keys)))
        raw_rates.append(done / (time.perf_counter() - start))
        slide.close()

    def run_pipeline() -> int:
        # The viewer's loader, fresh handle, results delivered into the cache on the UI thread.
        slide = open_slide(path)
        grid = level_grids(slide)[0]
        cache = TileCache(4 * count * grid.tile_size**2 * 4)
        pipeline = TilePipeline(cache, threads)
        generation = pipeline.set_slide(slide)
        keys = _tile_keys(grid, count, generation)
        start = time.perf_counter()
        pipeline.request(keys)
        pipeline.wait_until_idle(120)
        elapsed = time.perf_counter() - start
        delivered = sum(1 for key in keys if key in cache)
        pipe_rates.append(delivered / elapsed)
        pipeline.shutdown()
        return len(keys)

    for round_index in range(rounds):
        # Alternate who goes first so that neither always meets a busier machine.
        if round_index % 2 == 0:
            run_raw()
            n_tiles = run_pipeline()
        else:
            n_tiles = run_pipeline()
            run_raw()
    raw, pipe = max(raw_rates), max(pipe_rates)
    return {
        "tile_ratio": round(pipe / raw, 3),
        "raw_tiles_per_s": round(raw, 1),
        "pipeline_tiles_per_s": round(pipe, 1),
        "tile_ratio_tiles": n_tiles,
        "tile_ratio_rounds": rounds,
    }


class _Heartbeat:
    """A 5 ms timer that records its gaps (UI stalls) and samples RSS."""

    def __init__(self, interval_ms: int = 5) -> None:
        from PySide6.QtCore import Qt, QTimer

        self.interval = interval_ms / 1000
        self.gaps: list[float] = []
        self.peak_rss = current_rss_mb()
        self._last = time.perf_counter()
        self._last_rss = self._last
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def start(self) -> None:
        self._last = time.perf_counter()
        self.gaps.clear()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now
        if now - self._last_rss > 0.1:
            self._last_rss = now
            self.peak_rss = max(self.peak_rss, current_rss_mb())


def _spin(seconds: float) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def run_tour(window, seconds: float, heartbeat: _Heartbeat, seed: int = 0) -> dict[str, float]:
    """Pan and zoom around the slide for ``seconds``, driven by a 16 ms timer (60 steps/s)."""
    from PySide6.QtCore import QEventLoop, QPointF, QTimer

    view = window.slide_view
    slide = view.current_slide
    width, height = slide.dimensions
    rng = random.Random(seed)
    state: dict[str, float] = {
        "phase": 0,
        "t0": time.perf_counter(),
        "steps": 0,
        "dx": 9.0,
        "dy": 5.0,
        "max_step_ms": 0.0,
    }
    phase_len = 2.5  # seconds per movement pattern
    loop = QEventLoop()

    def step() -> None:
        started = time.perf_counter()
        try:
            move()
        finally:
            state["max_step_ms"] = max(state["max_step_ms"], (time.perf_counter() - started) * 1000)

    def move() -> None:
        now = time.perf_counter()
        elapsed = now - state["t0"]
        if elapsed >= seconds:
            loop.quit()
            return
        phase = int(elapsed / phase_len)
        if phase != state["phase"]:
            state["phase"] = phase
            kind = phase % 4
            if kind == 0:  # jump somewhere at a random standard magnification
                view.center_on(
                    rng.uniform(0.15, 0.85) * width,
                    rng.uniform(0.15, 0.85) * height,
                    rng.choice((2.5, 5.0, 10.0, 20.0, 40.0)),
                )
            angle = rng.uniform(0, 2 * math.pi)
            speed = rng.choice((6.0, 12.0, 24.0))  # screen px per step: 360..1440 px/s
            state["dx"], state["dy"] = speed * math.cos(angle), speed * math.sin(angle)
        kind = int(state["phase"]) % 4
        if kind in (0, 2):  # smooth pan, bounce at the slide edge
            rect = view.visible_level0_rect()
            centre = rect.center()
            if not 0 < centre.x() < width:
                state["dx"] = (
                    -state["dx"] if (centre.x() <= 0) == (state["dx"] < 0) else state["dx"]
                )
            if not 0 < centre.y() < height:
                state["dy"] = (
                    -state["dy"] if (centre.y() <= 0) == (state["dy"] < 0) else state["dy"]
                )
            view.pan_by(state["dx"], state["dy"])
        elif kind == 1:  # wheel-like zoom in and out around a point off centre
            vp = view.viewport().rect()
            anchor = QPointF(vp.width() * 0.35, vp.height() * 0.6)
            factor = 1.03 if (state["steps"] // 45) % 2 == 0 else 1 / 1.03
            view.zoom_by(factor, anchor)
        else:  # pan while zooming slowly
            view.pan_by(state["dx"], state["dy"])
            view.zoom_by(1.004 if (state["steps"] // 60) % 2 == 0 else 1 / 1.004)
        state["steps"] += 1

    driver = QTimer()
    driver.setInterval(16)
    driver.timeout.connect(step)
    delivered_before = view.pipeline.stats.delivered
    view.max_paint_ms = 0.0
    view.pipeline.stats.max_drain_ms = 0.0
    heartbeat.start()
    driver.start()
    loop.exec()
    driver.stop()
    heartbeat.stop()
    gaps_ms = [g * 1000 for g in heartbeat.gaps]
    interval_ms = heartbeat.interval * 1000
    return {
        "max_ui_stall_ms": round(max(0.0, max(gaps_ms) - interval_ms), 1),
        "p99_ui_gap_ms": round(sorted(gaps_ms)[int(0.99 * (len(gaps_ms) - 1))], 1),
        "median_ui_gap_ms": round(statistics.median(gaps_ms), 2),
        "tour_steps": state["steps"],
        "tour_tiles_delivered": view.pipeline.stats.delivered - delivered_before,
        "tour_paints": view.paint_count,
        "max_paint_ms": round(view.max_paint_ms, 1),
        "max_tile_delivery_ms": round(view.pipeline.stats.max_drain_ms, 1),
        "max_tour_step_ms": round(state["max_step_ms"], 1),
    }


def measure_display_repaint(window, repeats: int = 12) -> dict[str, object]:
    """Milliseconds of a full synchronous repaint of the view after each kind of display change.

    The view sits at 5x in the slide centre with every tile cached, so a repaint is what a
    slider move costs: painting the cached tiles, plus the lookups when the display is adjusted.
    """
    from pathviewer.session.display import DisplaySettings

    view = window.slide_view
    slide = view.current_slide
    width, height = slide.dimensions
    view.center_on(width / 2, height / 2, 5.0)
    view.wait_until_idle(60)
    _spin(0.3)
    cases = {
        "unadjusted": lambda i: DisplaySettings(),
        "gamma": lambda i: DisplaySettings(gamma=1.5 + 0.01 * (i % 2)),
        "contrast_brightness": lambda i: DisplaySettings(contrast=1.4, brightness=0.01 * (i % 2)),
        "haematoxylin": lambda i: DisplaySettings(channel="stain1", gamma=1.0 + 0.01 * (i % 2)),
        "both_stains": lambda i: DisplaySettings(channel="stains", gamma=1.0 + 0.01 * (i % 2)),
    }
    figures: dict[str, float] = {}
    changes: dict[str, float] = {}
    reads_before = view.pipeline.stats.read
    for name, make in cases.items():
        times, change_times = [], []
        for i in range(repeats):
            settings = make(i)
            start = time.perf_counter()
            view.set_display(settings)  # builds the lookup tables (a slider move costs both)
            change_times.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            view.viewport().repaint()
            times.append((time.perf_counter() - start) * 1000)
        figures[name] = round(statistics.median(times), 2)
        # The first change of a case builds its stain tables; later ones recolour them.
        changes[name] = round(statistics.median(change_times[1:]), 2)
        changes[f"{name}_first"] = round(change_times[0], 2)
    view.set_display(DisplaySettings())
    return {
        "display_repaint_ms": figures,
        "display_change_ms": changes,
        "display_tile_reads": view.pipeline.stats.read - reads_before,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the viewer benchmark; print and optionally write the JSON figures."""
    parser = argparse.ArgumentParser(prog="python -m pathviewer.bench viewer", description=__doc__)
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="slide edge in px")
    parser.add_argument("--slide", type=Path, help="use this slide instead of the synthetic one")
    parser.add_argument("--threads", type=int, default=0, help="tile threads (0 = automatic)")
    parser.add_argument("--tour-seconds", type=float, default=30.0)
    parser.add_argument("--cache-mb", type=int, default=256, help="tile cache cap")
    parser.add_argument("--ratio-tiles", type=int, default=196, help="tiles per tile-ratio pass")
    parser.add_argument("--rounds", type=int, default=4, help="tile-ratio rounds (best kept)")
    parser.add_argument("--viewport", default="1600x1000", help="window size WxH")
    args = parser.parse_args(argv)

    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QSettings

    from pathviewer.gui.app import create_main_window, ensure_application
    from pathviewer.gui.viewer.tiles import CACHE_SETTING, default_threads

    if args.slide:
        slide_path, generator = args.slide, "given"
    else:
        slide_path, generator = ensure_slide(args.size)
    threads = args.threads or default_threads()
    app = ensure_application()
    results: dict[str, object] = {
        "slide": str(slide_path),
        "slide_generator": generator,
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "tour_seconds": args.tour_seconds,
        "cache_cap_mb": args.cache_mb,
        "qt_platform": app.platformName(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
    }
    results.update(measure_tile_ratio(slide_path, threads, args.ratio_tiles, args.rounds))
    if threads > 1:
        # Context: on a small, busy machine the raw pool can lose to its own thread contention.
        single = measure_tile_ratio(slide_path, 1, args.ratio_tiles, args.rounds)
        results["tile_ratio_single_thread"] = single["tile_ratio"]
        results["raw_tiles_per_s_single_thread"] = single["raw_tiles_per_s"]

    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "bench.ini"), QSettings.Format.IniFormat)
        settings.setValue(CACHE_SETTING, args.cache_mb)
        width, height = (int(v) for v in args.viewport.split("x"))
        # The window (and every installed extension) is built before the clock starts: the
        # figures are about opening and showing a slide.
        window = create_main_window(settings=settings, threads=threads)
        window.resize(width, height)
        window.show()
        _spin(0.3)
        rss_before = current_rss_mb()
        heartbeat = _Heartbeat()
        heartbeat.start()

        # First paint at fit-to-window: open -> complete frame.
        start = time.perf_counter()
        window.open_paths([str(slide_path)], raise_errors=True)
        # The first complete frame: every visible tile painted (the thumbnail comes later, off
        # the UI thread, for the minimap and the coarse fall-back).
        view = window.slide_view
        view.wait_for_complete_frame(start, 60)
        results["first_complete_frame_ms"] = round((view.last_complete_paint - start) * 1000, 1)
        # ... and until the ring of tiles read ahead around the view is in too.
        view.wait_until_idle(60, thumbnail=False)
        results["first_paint_ms"] = round((time.perf_counter() - start) * 1000, 1)
        slide = window.slide_view.current_slide
        if slide is None:
            raise SystemExit(f"{slide_path}: the slide did not open")
        results["slide_px"] = list(slide.dimensions)
        results["slide_levels"] = slide.level_count

        # First paint at 20x in the centre: open -> every visible tile read and painted.
        window.slide_view.close_slide()
        start = time.perf_counter()
        window.open_paths([str(slide_path)], raise_errors=True)
        slide = window.slide_view.current_slide
        if slide is None:
            raise SystemExit(f"{slide_path}: the slide did not open")
        sw, sh = slide.dimensions
        window.slide_view.center_on(sw / 2, sh / 2, 20.0)
        view.wait_for_complete_frame(start, 60)
        results["first_complete_frame_20x_ms"] = round((view.last_complete_paint - start) * 1000, 1)
        window.slide_view.wait_until_idle(60, thumbnail=False)
        results["first_paint_20x_ms"] = round((time.perf_counter() - start) * 1000, 1)
        results["first_paint_20x_tiles"] = len(window.slide_view.visible_tile_keys())
        _spin(0.2)

        results.update(run_tour(window, args.tour_seconds, heartbeat))
        results.update(measure_display_repaint(window))
        results["viewport"] = [
            window.slide_view.viewport().width(),
            window.slide_view.viewport().height(),
        ]
        results["cache_bytes_mb"] = round(window.slide_view.cache.bytes_used / 2**20, 1)
        results["rss_before_viewer_mb"] = round(rss_before, 1)
        peak_rss = round(max(heartbeat.peak_rss, current_rss_mb()), 1)
        results["peak_rss_mb"] = peak_rss
        results["viewer_rss_growth_mb"] = round(peak_rss - rss_before, 1)
        window.close()
        app.processEvents()

    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["targets"] = {
        "tile_ratio": ">= 0.9 (issue 18)",
        "max_ui_stall_ms": "< 30",
        "first_complete_frame_ms": "<= 50 (issue 18)",
        "first_complete_frame_20x_ms": "<= 120 (issue 18)",
        "display_repaint_ms": "<= 16 at 1600x1000 (issue 18)",
        "peak_rss_mb": "bounded: peak_rss_mb - rss_before_viewer_mb <= cache_cap_mb + ~150",
    }
    emit_report(results, args.json)
    return 0
