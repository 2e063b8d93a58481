"""Per-user folders (platformdirs): demo cohort, runs, settings."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from pathviewer.logs import APP_NAME


def user_data_dir() -> Path:
    """User data folder (overridable with ``PATHVIEWER_DATA_DIR``, which tests use)."""
    override = os.environ.get("PATHVIEWER_DATA_DIR")
    return (
        Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    )


def demo_cohort_dir() -> Path:
    """Where ``make run`` generates the demo cohort once."""
    return user_data_dir() / "demo-cohort"


def runs_dir() -> Path:
    """Where the GUI saves training runs."""
    return user_data_dir() / "runs"
