"""A slide without a pyramid: ``python -m pathviewer.bench big-slide --json OUT.json``.

Writes a valid 65,536 x 65,536 single-level tiled TIFF (about 30 MB on disk; a textured disc of
tissue on glass) and measures, each in a fresh process, the peak resident memory and the time of

``tiling``
    the background filter that ``infer``, ``train`` and ``labels from-annotations`` run first;
``thumbnail``
    the slide's thumbnail (triage, the viewer's minimap);
``screenshot``
    ``pathviewer screenshot`` of the whole slide in the real main window (offscreen).

Peak memory is the child's own ``ru_maxrss`` (``os.wait4``).  Target: at most 1 GiB for each.  Before the
bounded reads, the coarse pass asked OpenSlide for one 17 GB buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pathviewer.bench import emit_report

SIDE = 65_536
TILE = 512


def write_slide(path: Path, side: int = SIDE) -> None:
    """A single-level tiled TIFF: glass, with a disc of textured tissue in the middle."""
    import numpy as np
    import tifffile

    rng = np.random.default_rng(0)
    # A few distinct tissue tiles of 8 px cells, repeated: edges for the tissue filter, yet
    # small on disk once compressed.
    cells = TILE // 8
    tissue = [
        np.kron(
            rng.integers(90, 200, (cells, cells, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8)
        )
        for _ in range(4)
    ]
    glass = np.full((TILE, TILE, 3), 236, np.uint8)
    grid = side // TILE
    radius = grid * 0.23

    def tiles() -> Any:
        for ty in range(grid):
            for tx in range(grid):
                inside = (ty - grid / 2) ** 2 + (tx - grid / 2) ** 2 < radius**2
                yield tissue[(tx + ty) % 4] if inside else glass

    tifffile.imwrite(
        path,
        tiles(),
        shape=(side, side, 3),
        dtype=np.uint8,
        tile=(TILE, TILE),
        compression="zlib",
        photometric="rgb",
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )


CHILD = r"""
import json, sys, time
from pathviewer.core.slide import open_slide
what, path = sys.argv[1], sys.argv[2]
slide = open_slide(path)
start = time.perf_counter()
if what == "tiling":
    from pathviewer.core.tiling import tile_slide
    result = {"patches": int(len(tile_slide(slide, 512, 1.0).coords))}
else:
    result = {"shape": list(slide.thumbnail((1024, 1024)).shape)}
result["seconds"] = round(time.perf_counter() - start, 1)
print(json.dumps(result))
"""


def _measure(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv``; its exit code, wall time, own peak RSS (``wait4``) and printed JSON."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, stdout=out, stderr=err, env=env, text=True)
        _pid, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result: dict[str, Any] = {
        "exit_code": child.returncode,
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # KiB on Linux
    }
    lines = stdout.strip().splitlines()
    if child.returncode == 0 and lines and lines[-1].startswith("{"):
        result.update(json.loads(lines[-1]))
    elif child.returncode != 0:
        result["error"] = (stderr.strip().splitlines() or [""])[-1]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pathviewer.bench big-slide")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--side", type=int, default=SIDE, help="slide side in px")
    parser.add_argument("--skip-screenshot", action="store_true", help="tiling and thumbnail only")
    args = parser.parse_args(argv)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "single-level.tif"
        started = time.perf_counter()
        write_slide(path, args.side)
        results: dict[str, Any] = {
            "slide": {
                "side_px": args.side,
                "levels_in_file": 1,
                "file_mib": round(path.stat().st_size / 2**20, 1),
                "write_s": round(time.perf_counter() - started, 1),
            }
        }
        results["thumbnail"] = _measure([sys.executable, "-c", CHILD, "thumbnail", str(path)], env)
        results["tiling"] = _measure([sys.executable, "-c", CHILD, "tiling", str(path)], env)
        if not args.skip_screenshot:
            shot = [sys.executable, "-m", "pathviewer", "screenshot", str(path)]
            shot += [str(Path(tmp) / "shot.png"), "--timeout", "900"]
            results["screenshot"] = _measure(shot, env)
        results["target_peak_rss_mib"] = 1024
    emit_report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
