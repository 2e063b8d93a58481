"""The ``pathviewer`` command: version, help, and one-line errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pathviewer import __version__


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pathviewer", *args], capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pathviewer {__version__}"


def test_help_lists_subcommands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for name in ("gui", "train", "labels", "annotations"):
        assert name in result.stdout


def test_bad_cohort_is_one_line_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "cohort.csv"
    bad.write_text("slide,label\nmissing.tif,1\n")
    result = _run("train", "ngsd", "--cohort", str(bad), "--out", str(tmp_path / "run"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and "missing.tif" in lines[-1]
