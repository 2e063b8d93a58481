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
