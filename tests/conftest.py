"""Shared test set-up: offscreen Qt, private user folders, shared fixtures, a small cohort."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Qt must never try to reach a display in CI; set before any Qt import.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _private_user_dirs(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the user's data, log and settings folders out of the test run."""
    base = tmp_path_factory.mktemp("userdirs")
    os.environ["PATHVIEWER_DATA_DIR"] = str(base / "data")
    os.environ["PATHVIEWER_LOG_DIR"] = str(base / "logs")
    os.environ["XDG_CONFIG_HOME"] = str(base / "config")


@pytest.fixture(autouse=True)
def _collect_on_the_main_thread():
    """After each test, the cycle collection that the GUI's timer would make (gc stays off
    once a QApplication exists, see ``collect_garbage_on_gui_thread``), so tests that run no
    event loop do not pile up garbage, and none is left for a later test's worker thread."""
    yield
    import sys

    app = sys.modules.get("pathviewer.gui.app")
    if app is not None:
        app.collect_pending_garbage()


def shared_file(*parts: str) -> Path:
    """A file of ../shared, or skip the test cleanly when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture not available: {path}")
    return path


@pytest.fixture
def openslide_fixtures() -> Path:
    """``../shared/fixtures/openslide`` (skips when absent)."""
    return shared_file("fixtures", "openslide")


@pytest.fixture
def cmu_small() -> Path:
    """The real H&E scan CMU-1-Small-Region.svs (skips when absent)."""
    return shared_file("fixtures", "real", "CMU-1-Small-Region.svs")


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic cohort (6 slides, half positive) shared by the whole session; returns cohort.csv."""
    from pathviewer.core.progress import run_job
    from pathviewer.core.synth import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    return run_job(generate_cohort(out, n_slides=6, seed=7, size=3072))


@pytest.fixture
def truncated_slide(tmp_path: Path, openslide_fixtures: Path) -> tuple[Path, Path]:
    """A 1024 x 1024 pyramid TIFF whose level-0 tiles of rows 2 and 3 are cut off, and the whole file.

    The pixels are the fixture ``boxes.png`` repeated.  OpenSlide refuses a truncated copy of the
    shared fixtures at open (their directories follow the tile data, so a cut loses them); here
    level 0's tile data is moved to the end of the file, as writers that put tiles last leave
    it, so the cut removes tiles and keeps every directory and the coarse levels.

    Returns
    -------
    (truncated, whole)
    """
    import numpy as np
    import tifffile
    from PIL import Image

    from pathviewer.core.progress import run_job
    from pathviewer.core.tiff_writer import TILE, pyramid_sizes, write_pyramid_tiff

    boxes = np.asarray(Image.open(openslide_fixtures / "boxes.png").convert("RGB"))
    sizes = pyramid_sizes(1024, 1024)
    level0 = np.tile(boxes, (5, 4, 1))[:1024, :1024]

    def render(level: int, x: int, y: int) -> np.ndarray:
        scale = 2**level
        image = level0[::scale, ::scale]
        tile = np.full((TILE, TILE, 3), 255, np.uint8)
        part = image[y : y + TILE, x : x + TILE]
        tile[: part.shape[0], : part.shape[1]] = part
        return tile

    whole = tmp_path / "whole.tif"
    run_job(write_pyramid_tiff(whole, sizes, render, mpp=0.5))
    data = whole.read_bytes()
    with tifffile.TiffFile(whole, mode="r+b") as tiff:
        page = tiff.pages[0]
        offsets = np.asarray(page.dataoffsets, np.int64)
        counts = np.asarray(page.databytecounts, np.int64)
        page.tags["TileOffsets"].overwrite((offsets + len(data) - offsets[0]).tolist())
    tiles = data[offsets[0] : offsets[-1] + counts[-1]]
    with open(whole, "ab") as handle:
        handle.write(tiles)
    # Rows 0 and 1 of level 0's 4 x 4 tiles stay whole; rows 2 and 3 are gone.
    kept = len(whole.read_bytes()) - len(tiles) + int(offsets[8] - offsets[0]) + 10
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(whole.read_bytes()[:kept])
    return truncated, whole
