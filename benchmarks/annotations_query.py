"""Micro-benchmark: querying and simplifying the visible annotations among 10,000 polygons.

Prints one JSON object: index build time, per-viewport query time and the vertex counts the
painter would draw (full resolution vs simplified) at several zoom levels.

    python benchmarks/annotations_query.py [--n 10000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import shapely

from pathviewer.core.geometry import AnnotationIndex, vertex_count

SLIDE = 100_000  # level-0 px, a typical whole-slide extent
SCREEN = (1920, 1080)


def make_polygons(n: int, seed: int) -> list[shapely.Polygon]:
    """Irregular blobs of 20-400 px radius with 32-128 vertices, like hand-drawn regions."""
    rng = np.random.default_rng(seed)
    polygons = []
    for _ in range(n):
        cx, cy = rng.uniform(0, SLIDE, 2)
        k = int(rng.integers(32, 129))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(20, 400) * rng.uniform(0.7, 1.0, k)
        polygons.append(
            shapely.Polygon(
                np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
            )
        )
    return polygons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    polygons = make_polygons(args.n, args.seed)
    start = time.perf_counter()
    index = AnnotationIndex(polygons)
    index.query((0, 0, 1, 1))  # the tree is built lazily on the first query
    build_ms = (time.perf_counter() - start) * 1000
    rng = np.random.default_rng(args.seed + 1)
    levels = []
    for downsample in (1, 4, 16, 64):
        w, h = SCREEN[0] * downsample, SCREEN[1] * downsample
        views = [
            (x, y, x + w, y + h) for x, y in rng.uniform(0, max(1, SLIDE - max(w, h)), (50, 2))
        ]
        start = time.perf_counter()
        hits = [index.query(v) for v in views]
        query_ms = (time.perf_counter() - start) * 1000 / len(views)
        start = time.perf_counter()
        visible = [index.visible(v, downsample) for v in views]  # cold: simplifies
        cold_ms = (time.perf_counter() - start) * 1000 / len(views)
        start = time.perf_counter()
        visible = [index.visible(v, downsample) for v in views]  # warm: cached
        warm_ms = (time.perf_counter() - start) * 1000 / len(views)
        full_vertices = sum(vertex_count(index.geometry(k)) for h_ in hits for k in h_)
        drawn_vertices = sum(vertex_count(g) for vis in visible for _, g in vis)
        levels.append(
            {
                "downsample": downsample,
                "viewport_px": [w, h],
                "mean_visible_polygons": round(sum(map(len, hits)) / len(views), 1),
                "query_ms": round(query_ms, 3),
                "visible_cold_ms": round(cold_ms, 3),
                "visible_warm_ms": round(warm_ms, 3),
                "mean_vertices_full": round(full_vertices / len(views), 1),
                "mean_vertices_simplified": round(drawn_vertices / len(views), 1),
            }
        )
    print(
        json.dumps(
            {
                "benchmark": "annotations_query",
                "polygons": args.n,
                "total_vertices": sum(vertex_count(p) for p in polygons),
                "index_build_ms": round(build_ms, 2),
                "levels": levels,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
