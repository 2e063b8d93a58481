"""Writers on a full disk: one line, and neither a half-written file nor a temporary one.

A full disk is simulated in a subprocess by a file-size limit (``RLIMIT_FSIZE``, with SIGXFSZ
ignored, so a write past it fails with EFBIG as a full disk fails with ENOSPC).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")

_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, signal, sys
    import numpy as np
    from shapely.geometry import box
    from pathviewer.core.annotations import Annotation, write_geojson
    from pathviewer.core.asap import write_asap
    from pathviewer.core.heatmap import Heatmap
    from pathviewer.core.heatmap_export import write_heatmap
    from pathviewer.core.slide import ArraySlide
    from pathviewer.core.store import Project

    out = sys.argv[1]
    annotations = [Annotation(box(i, i, i + 9.5, i + 7.25), "Tumor") for i in range(5000)]
    rng = np.random.default_rng(0)
    cols = rows = 100
    coords = np.array([(c * 32, r * 32) for r in range(rows) for c in range(cols)])
    heatmap = Heatmap.from_patches(
        "s.tif", (cols * 32, rows * 32), 32, coords, rng.random(len(coords)).astype(np.float32)
    )
    slide = ArraySlide(np.zeros((rows * 32, cols * 32, 3), np.uint8), levels=3)
    project = Project.create(os.path.join(out, "proj"))
    sid = project.add_slide("/s/a.svs")
    project.add_patch_labels(
        [(sid, x, y, 32, 32, "Tumor") for x, y in coords.tolist()], "annotator"
    )
    # From here on no file may grow past 16 KiB: a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))
    jobs = {
        "annotations.geojson": lambda p: write_geojson(p, annotations),
        "annotations.xml": lambda p: write_asap(p, annotations),
        "heatmap-qupath.geojson": lambda p: write_heatmap(heatmap, p, "qupath"),
        "heatmap.csv": lambda p: write_heatmap(heatmap, p, "csv"),
        "heatmap-contours.geojson": lambda p: write_heatmap(heatmap, p, "contours"),
        "heatmap-contours.xml": lambda p: write_heatmap(heatmap, p, "contours-asap"),
        "heatmap-asap.tif": lambda p: write_heatmap(heatmap, p, "asap", slide),
        "heatmap.tif": lambda p: write_heatmap(heatmap, p, "tiff", slide),
        "labels.csv": lambda p: project.export_trusted_labels_csv(p),
    }
    results = {}
    for name, job in jobs.items():
        try:
            job(os.path.join(out, name))
            results[name] = None
        except Exception as error:
            results[name] = f"{type(error).__name__}: {error}"
    print(json.dumps(results))
    """
)


def test_writers_on_a_full_disk_leave_nothing_behind(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for name, outcome in results.items():
        assert outcome is not None, f"{name} was written past the file-size limit"
        assert "\n" not in outcome and "File too large" in outcome, (name, outcome)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["proj"], left  # no output, no half-written file, no temporary file
