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


def _full_disk_on_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file's fsync fails as on a full disk (ENOSPC is reported there by NFS and others)."""
    import errno

    from pathviewer.core import atomic

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)


def test_the_app_says_a_full_disk_in_one_line_on_export(qtbot, tmp_path: Path, monkeypatch) -> None:
    """Annotation, heatmap and figure exports: a dialog with the CLI's line, no file left."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import numpy as np
    import shapely
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from pathviewer.core.heatmap import Heatmap
    from pathviewer.core.slide import ArraySlide
    from pathviewer.gui.context import build_features
    from pathviewer.gui.heatmap import dock as heatmap_dock
    from pathviewer.gui.main_window import MainWindow

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    build_features(window)
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.show()
    window.slide_view.set_slide(
        ArraySlide(np.full((512, 512, 3), 200, np.uint8), mpp=0.5, name=str(tmp_path / "s.png"))
    )
    window.context.annotations.add([shapely.box(10, 10, 100, 100)], "box")
    window.context.heatmap.set_heatmap(
        Heatmap("s.png", (512, 512), (0, 0), (64, 64), np.full((8, 8), 0.7, np.float32))
    )
    out = tmp_path / "out"
    out.mkdir()
    shown: list[tuple[str, str]] = []

    def capture(_parent, title, text, *_args):
        shown.append((title, text))
        return QMessageBox.StandardButton.Ok

    monkeypatch.setattr(QMessageBox, "critical", capture)
    monkeypatch.setattr(QMessageBox, "warning", capture)
    _full_disk_on_fsync(monkeypatch)
    targets = {
        "annotations": out / "a.geojson",
        "heatmap": out / "h.tiles.geojson",
        "figure": out / "f.png",
    }
    first_filter = next(iter(heatmap_dock.EXPORT_FILTERS))
    for kind, target in targets.items():
        monkeypatch.setattr(
            QFileDialog, "getSaveFileName", lambda *a, t=target, **k: (str(t), first_filter)
        )
        if kind == "annotations":
            window.context.annotations.export_interactively()
        elif kind == "heatmap":
            heatmap_dock.choose_and_export(window, window.context.heatmap)
        else:
            window.choose_figure_file()
    assert [text for _title, text in shown] == [
        f"{target}: No space left on device" for target in targets.values()
    ]
    assert list(out.iterdir()) == []  # neither a file nor a temporary one


def test_the_cli_says_a_full_disk_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """`annotations convert` of a file bigger than the disk's room: exit 2, one line, no output."""
    import resource
    import signal

    from shapely.geometry import box

    from pathviewer.core.annotations import Annotation, write_geojson

    source = tmp_path / "in.geojson"
    write_geojson(source, [Annotation(box(i, i, i + 9.5, i + 7.25), "Tumor") for i in range(3000)])
    target = tmp_path / "out" / "o.xml"
    target.parent.mkdir()
    # The log file is past the limit too, as on a full disk: its failures must stay quiet.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "pathviewer.log").write_text("earlier runs\n" * 2000)

    def full_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, "-m", "pathviewer", "annotations", "convert", str(source), str(target)],
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            PYTHONPATH=str(REPO_ROOT),
            PYTHONDONTWRITEBYTECODE="1",
            PATHVIEWER_LOG_DIR=str(logs),
        ),
        preexec_fn=full_disk,  # noqa: PLW1509 - a child process of its own, nothing threaded
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "File too large" in lines[0] and "o.xml" in lines[0], lines
    assert list(target.parent.iterdir()) == []
