"""Benchmark: frame time while panning over 10,000 annotation polygons in the real main window.

Runs offscreen.  A synthetic slide is shown with ``--n`` irregular polygons (32-128 vertices, the
kind a brush or polygon tool produces) stored in a throw-away project; a scripted tour pans
smoothly at several zooms (from cell level to the whole slide), repainting the viewport
synchronously each step.  Prints one JSON object: mean / p95 / max frame time in ms overall and
per zoom, which drawing mode the layer used (vector paths or the raster overview), and the same
tour without the annotation layer as a baseline.

    python benchmarks/annotations_pan.py [--n 10000] [--seconds 20] [--size 6144]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import shapely  # noqa: E402

#: (scale in screen px per level-0 px, label); the last is "fit to window".
ZOOMS = ((1.0, "1:1"), (0.25, "1:4"), (0.0625, "1:16"), (0.0, "fit"))


def make_polygons(n: int, size: int, seed: int) -> list[shapely.Polygon]:
    """Irregular blobs with 32-128 vertices spread over a ``size`` x ``size`` slide."""
    rng = np.random.default_rng(seed)
    polygons = []
    scale = size / 100_000 * 8  # radius relative to the slide, like 20-400 px on 100k px
    for _ in range(n):
        cx, cy = rng.uniform(0, size, 2)
        k = int(rng.integers(32, 129))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(20, 400) * scale * rng.uniform(0.7, 1.0, k)
        polygons.append(
            shapely.Polygon(
                np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
            )
        )
    return polygons


def tour(window, seconds: float) -> dict[str, list[float]]:
    """Pan along a circle-ish path at each zoom for ``seconds / len(ZOOMS)``; frame times in ms."""
    from PySide6.QtWidgets import QApplication

    view = window.slide_view
    width, height = view.current_slide.dimensions
    times: dict[str, list[float]] = {}
    app = QApplication.instance()
    for scale, label in ZOOMS:
        if scale:
            view.set_scale(scale)
            view.center_on(width * 0.3, height * 0.3)
        else:
            view.fit_to_window()
        app.processEvents()
        frames: list[float] = []
        deadline = time.perf_counter() + seconds / len(ZOOMS)
        step = 0
        while time.perf_counter() < deadline:
            # 12 screen px per frame, turning slowly so the tour stays over the slide.
            angle = step / 60.0
            view.pan_by(12 * np.cos(angle), 12 * np.sin(angle))
            start = time.perf_counter()
            view.viewport().repaint()
            frames.append((time.perf_counter() - start) * 1000)
            app.processEvents()  # deliver tiles as a user session would
            step += 1
        times[label] = frames
    return times


def summary(frames: list[float]) -> dict[str, float]:
    ordered = sorted(frames)
    return {
        "frames": len(frames),
        "mean_ms": round(statistics.fmean(frames), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "max_ms": round(ordered[-1], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of polygons")
    parser.add_argument("--seconds", type=float, default=20.0, help="tour length (with + without)")
    parser.add_argument("--size", type=int, default=6144, help="slide edge in level-0 px")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from pathviewer.core.slide import ArraySlide
    from pathviewer.gui import project as project_module
    from pathviewer.gui.annotations import controller as annotations
    from pathviewer.gui.app import ensure_application
    from pathviewer.gui.main_window import MainWindow

    ensure_application()
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings=settings, threads=2)
        project = project_module.install(window)
        controller = annotations.install(window, project=project)
        window.resize(1600, 1000)
        window.show()
        QApplication.processEvents()
        rng = np.random.default_rng(args.seed)
        image = rng.integers(180, 240, (args.size, args.size, 3), dtype=np.uint8)
        window.slide_view.set_slide(ArraySlide(image, mpp=0.25, levels=5, name="bench"))
        project.open(Path(tmp) / "project", create=True)
        polygons = make_polygons(args.n, args.size, args.seed)
        start = time.perf_counter()
        controller.add(polygons, "benchmark polygons")
        store_s = time.perf_counter() - start
        layer = controller.layer
        modes: dict[str, str] = {}
        original_paint = layer.paint

        def paint(painter, option, widget=None):  # record the mode per zoom
            original_paint(painter, option, widget)
            modes[current[0]] = layer.last_mode

        current = ["warmup"]
        layer.paint = paint  # type: ignore[method-assign]
        # Warm up tiles and the raster overview once, as a user would see on opening.
        window.slide_view.fit_to_window()
        window.slide_view.wait_until_idle(30)
        with_layer: dict[str, list[float]] = {}
        for scale, label in ZOOMS:
            current[0] = label
            with_layer.update(tour_one(window, scale, label, args.seconds / 2))
        layer.setVisible(False)
        without = {}
        for scale, label in ZOOMS:
            current[0] = "off"
            without.update(tour_one(window, scale, label, args.seconds / 2))
        all_with = [t for frames in with_layer.values() for t in frames]
        all_without = [t for frames in without.values() for t in frames]
        result = {
            "polygons": args.n,
            "vertices": int(sum(shapely.get_num_coordinates(polygons))),
            "slide_px": args.size,
            "viewport": [
                window.slide_view.viewport().width(),
                window.slide_view.viewport().height(),
            ],
            "store_insert_s": round(store_s, 2),
            "seconds": args.seconds,
            "with_annotations": summary(all_with),
            "without_annotations": summary(all_without),
            "per_zoom": {
                label: {**summary(with_layer[label]), "mode": modes.get(label, "")}
                for _, label in ZOOMS
            },
        }
        window.close()
    json.dump(result, sys.stdout, indent=2)
    print()


def tour_one(window, scale: float, label: str, seconds: float) -> dict[str, list[float]]:
    """The tour at one zoom (a quarter of ``seconds``)."""
    global ZOOMS
    saved = ZOOMS
    ZOOMS = ((scale, label),)
    try:
        return tour(window, seconds / len(saved))
    finally:
        ZOOMS = saved


if __name__ == "__main__":
    main()
