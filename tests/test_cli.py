"""The ``pathviewer`` command: version, help, and one-line errors without tracebacks."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from shapely.geometry import box

from pathviewer import __version__
from pathviewer.cli import main
from pathviewer.core.annotations import Annotation, write_geojson
from pathviewer.core.errors import AnnotationError


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


# --------------------------------------------------------------------------- one error path


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert captured.err.startswith("pathviewer: error: ")
    return captured.err.removeprefix("pathviewer: error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/full/out.xml"),
            "/full/out.xml: No space left on device",
        ),
        (
            PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/ro/out.xml"),
            "/ro/out.xml: Permission denied",
        ),
        (
            OSError(errno.EXDEV, os.strerror(errno.EXDEV), "/a/.x.tmp", None, "/b/x"),
            "/a/.x.tmp -> /b/x: Invalid cross-device link",
        ),
        (OSError("cannot identify image file"), "cannot identify image file"),
        (
            sqlite3.OperationalError("database or disk is full"),
            "database error: database or disk is full",
        ),
        (sqlite3.OperationalError("database is locked"), "database error: database is locked"),
        (MemoryError(), "out of memory"),
        (
            MemoryError("Unable to allocate 16.0 GiB for an array with shape (65536, 65536, 4)"),
            "out of memory (Unable to allocate 16.0 GiB for an array with shape (65536, 65536, 4))",
        ),
        (
            AnnotationError("a.geojson feature 3: first\nsecond"),
            "a.geojson feature 3: first second",
        ),
    ],
)
def test_disk_memory_and_database_errors_are_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: BaseException,
    line: str,
) -> None:
    # Issue 15 item 8: these used to end every command with a traceback (exit 1).
    from pathviewer.core import annotations

    def fail(*_args: object) -> None:
        raise error

    monkeypatch.setattr(annotations, "read_annotations", fail)
    argv = ["annotations", "convert", str(tmp_path / "in.geojson"), str(tmp_path / "o.xml")]
    assert _one_line_error(capsys, argv) == line


def test_a_bug_still_shows_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathviewer.core import annotations

    def fail(*_args: object) -> None:
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(annotations, "read_annotations", fail)
    with pytest.raises(ValueError, match="a bug"):
        main(["annotations", "convert", str(tmp_path / "in.geojson"), str(tmp_path / "o.xml")])


def test_convert_to_or_from_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.geojson"
    write_geojson(source, [Annotation(box(0, 0, 5, 5), "Tumor")])
    target = tmp_path / "out.xml"
    target.mkdir()
    line = _one_line_error(capsys, ["annotations", "convert", str(source), str(target)])
    assert line == f"{target}: Is a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.geojson", "out.xml"]  # no temp
    folder = tmp_path / "folder.geojson"
    folder.mkdir()
    line = _one_line_error(capsys, ["annotations", "convert", str(folder), str(tmp_path / "o.xml")])
    assert line.startswith(str(folder)) and not (tmp_path / "o.xml").exists()


def test_a_mistyped_command_is_named_not_opened_as_a_slide(capsys, tmp_path, monkeypatch) -> None:
    from pathviewer import cli

    opened = []
    monkeypatch.setattr(cli, "_run_gui", lambda args: opened.append(args.paths) or 0)
    assert cli.main(["exprot", "heatmap", "preds"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'exprot'" in err and "did you mean 'export'" in err
    assert cli.main(["nosuchword"]) == 2
    assert "did you mean" not in capsys.readouterr().err
    slide = tmp_path / "slide"  # an existing file without a suffix still opens
    slide.write_bytes(b"")
    assert cli.main([str(slide)]) == 0 and opened == [[str(slide)]]
    assert opened and not opened.clear()
    assert cli.main(["missing.svs"]) == 0 and opened == [["missing.svs"]]  # the viewer says why
