"""Benchmark: peak memory of reading, writing and converting big annotation files.

Generates a QuPath GeoJSON and an ASAP XML file of about ``--mb`` MB each (irregular polygons of
32-128 vertices, like hand-drawn or detected regions, with a class and a measurement), then runs
each step in a fresh child process and reports the child's peak RSS (``ru_maxrss``), its RSS
before reading (the interpreter and the libraries), the RSS left once the annotations are in
memory (what the shapely objects themselves take) and the ratio of the peak to the file size.
Prints one JSON object.

Steps: ``read_geojson``, ``geojson_to_xml`` (``pathviewer annotations convert``), ``read_xml``
and ``xml_to_geojson``.  Point ``PYTHONPATH`` at another checkout to measure its code on the
same files.

    python benchmarks/annotations_memory.py [--mb 100] [--steps read_xml,geojson_to_xml]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STEPS = ("read_geojson", "geojson_to_xml", "read_xml", "xml_to_geojson")
SLIDE = 100_000  # level-0 px


def _polygons(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` irregular blobs of 20-400 px radius with 32-128 vertices (level-0 px, 0.1 px)."""
    out = []
    for _ in range(n):
        cx, cy = rng.uniform(0, SLIDE, 2)
        k = int(rng.integers(32, 129))
        angles = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(20, 400) * rng.uniform(0.7, 1.0, k)
        ring = np.column_stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)])
        out.append(np.round(ring, 1))
    return out


def make_geojson(path: Path, megabytes: float, seed: int) -> int:
    """A FeatureCollection of about ``megabytes`` MB written feature by feature; returns count."""
    rng = np.random.default_rng(seed)
    target = megabytes * 1e6
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [')
        while handle.tell() < target:
            for ring in _polygons(rng, 1000):
                coords = [*ring.tolist(), ring[0].tolist()]
                feature = {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [coords]},
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": "Tumor", "color": [200, 0, 0]},
                        "measurements": {"prob": round(float(rng.uniform()), 4)},
                    },
                }
                handle.write((", " if count else "") + json.dumps(feature))
                count += 1
        handle.write("]}")
    return count


def make_asap(path: Path, megabytes: float, seed: int) -> int:
    """An ASAP XML file (CAMELYON16 layout) of about ``megabytes`` MB; returns the count."""
    rng = np.random.default_rng(seed)
    target = megabytes * 1e6
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write('<?xml version="1.0"?>\n<ASAP_Annotations>\n\t<Annotations>\n')
        while handle.tell() < target:
            for ring in _polygons(rng, 1000):
                lines = [
                    f'\t\t<Annotation Name="Annotation {count}" Type="Polygon"'
                    ' PartOfGroup="metastasis" Color="#F4FA58">\n\t\t\t<Coordinates>\n'
                ]
                lines += [
                    f'\t\t\t\t<Coordinate Order="{i}" X="{x!r}" Y="{y!r}" />\n'
                    for i, (x, y) in enumerate(ring.tolist())
                ]
                lines.append("\t\t\t</Coordinates>\n\t\t</Annotation>\n")
                handle.write("".join(lines))
                count += 1
        handle.write(
            "\t</Annotations>\n\t<AnnotationGroups>\n"
            '\t\t<Group Name="metastasis" PartOfGroup="None" Color="#00aa00">\n'
            "\t\t\t<Attributes />\n\t\t</Group>\n\t</AnnotationGroups>\n</ASAP_Annotations>\n"
        )
    return count


def _rss() -> int:
    """This process's resident set size in bytes (Linux /proc, else psutil)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def _peak() -> int:
    """Peak RSS of this process in bytes (``ru_maxrss`` is kB on Linux, bytes on macOS)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def objects_floor(source: Path) -> dict[str, object]:
    """RSS of the annotations read from ``source`` when built directly (no file, no parser).

    The floor any reader has to pay: the shapely geometries and :class:`Annotation` objects.
    The same polygons as the generator wrote (same seed) become annotations in a fresh process.
    """
    import shapely

    from pathviewer.core.annotations import Annotation

    count, seed = json.loads(Path(f"{source}.count").read_text())
    rng = np.random.default_rng(seed)
    baseline = _rss()
    annotations = []
    while len(annotations) < count:
        for ring in _polygons(rng, 1000):
            annotations.append(Annotation(shapely.Polygon(ring), "Tumor", (200, 0, 0)))
    del annotations[count:]
    return {
        "annotations": len(annotations),
        "annotations_rss_mb": round((_rss() - baseline) / 1e6, 1),
        "peak_rss_mb": round(_peak() / 1e6, 1),
    }


def child(step: str, source: Path, target: Path) -> None:
    """Run one step in this (fresh) process and print its figures as JSON."""
    from pathviewer.core.annotations import read_annotations, write_annotations

    if step == "objects":
        print(json.dumps(objects_floor(source)))
        return
    baseline = _rss()
    start = time.perf_counter()
    annotations = read_annotations(source)
    read_s = time.perf_counter() - start
    held = _rss()  # the annotations themselves (allocator slack included)
    vertices = sum(len(a.geometry.exterior.coords) for a in annotations)
    if step in ("geojson_to_xml", "xml_to_geojson"):
        write_annotations(target, annotations)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "annotations": len(annotations),
                "vertices": vertices,
                "baseline_rss_mb": round(baseline / 1e6, 1),
                "annotations_rss_mb": round((held - baseline) / 1e6, 1),
                "peak_rss_mb": round(_peak() / 1e6, 1),
                "read_s": round(read_s, 2),
                "seconds": round(seconds, 2),
            }
        )
    )


def run_step(step: str, source: Path, target: Path) -> dict[str, object]:
    """``step`` in a child process; adds the file size and the peak / size ratio."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", step, str(source), str(target)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # the step failed: its last line says why
        return {"error": done.stderr.strip().splitlines()[-1:] or done.returncode}
    figures: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    size = source.stat().st_size
    figures["file_mb"] = round(size / 1e6, 1)
    if target.exists():
        figures["output_mb"] = round(target.stat().st_size / 1e6, 1)
    peak = float(figures["peak_rss_mb"])  # type: ignore[arg-type]
    baseline = float(figures.get("baseline_rss_mb", 0.0))  # type: ignore[arg-type]
    figures["peak_over_file"] = round(peak * 1e6 / size, 2)
    figures["peak_less_baseline_over_file"] = round((peak - baseline) * 1e6 / size, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0, help="size of each generated file")
    parser.add_argument("--steps", default=",".join(STEPS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", help="where to write the files (default: a temporary one)")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "SOURCE", "TARGET"))
    args = parser.parse_args()
    if args.child:
        step, source, target = args.child
        child(step, Path(source), Path(target))
        return
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        work = Path(folder)
        geojson, xml = work / "big.geojson", work / "big.xml"
        start = time.perf_counter()
        counts = {"geojson": make_geojson(geojson, args.mb, args.seed)}
        counts["xml"] = make_asap(xml, args.mb, args.seed + 1)
        Path(f"{geojson}.count").write_text(json.dumps([counts["geojson"], args.seed]))
        Path(f"{xml}.count").write_text(json.dumps([counts["xml"], args.seed + 1]))
        generate_s = time.perf_counter() - start
        results = {}
        for step in steps:
            source = {"read_geojson": geojson, "geojson_to_xml": geojson}.get(step, xml)
            target = work / ("out.xml" if step == "geojson_to_xml" else "out.geojson")
            target.unlink(missing_ok=True)
            results[step] = run_step(step, source, target)
            objects = run_step("objects", source, work / "unused")
            # What the annotations alone take (the reader's floor), for where the memory goes.
            results[step]["objects_only_rss_mb"] = objects.get("annotations_rss_mb")
        print(
            json.dumps(
                {
                    "generated_mb": args.mb,
                    "generated_annotations": counts,
                    "generate_s": round(generate_s, 1),
                    "python": sys.version.split()[0],
                    "target_ratio": 4.0,
                    "steps": results,
                    "all_within_target": all(
                        isinstance(r.get("peak_over_file"), float)
                        and not math.isnan(r["peak_over_file"])  # type: ignore[arg-type]
                        and r["peak_over_file"] <= 4.0  # type: ignore[operator]
                        for r in results.values()
                    ),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
