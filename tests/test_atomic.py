"""atomic_write: all or nothing, the directory entry made durable, and orphans of kills swept."""

from __future__ import annotations

import os
import stat
import sys
import time
from pathlib import Path

import pytest

from pathviewer.core import atomic
from pathviewer.core.atomic import atomic_write

HOUR = 3600.0


def _age(path: Path, seconds: float) -> Path:
    past = time.time() - seconds
    os.utime(path, (past, past), follow_symlinks=False)
    return path


def test_writes_whole_files_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    with atomic_write(target) as handle:
        handle.write("one")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("two")
        raise RuntimeError("cancelled")
    assert target.read_text() == "one" and os.listdir(tmp_path) == ["out.json"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX directory fsync")
def test_the_directory_is_fsynced_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 15 item 9: without it a power cut after the rename can lose the new directory entry.
    target = tmp_path / "out.bin"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        events.append("fsync dir" if is_dir else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_write(target, "wb") as handle:
        handle.write(b"data")
    assert events == ["fsync file", "replace", "fsync dir"]


def test_a_directory_fsync_that_is_unsupported_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # what some file systems answer
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_write(tmp_path / "out.txt") as handle:
        handle.write("fine")
    assert (tmp_path / "out.txt").read_text() == "fine"


def test_orphan_temp_files_of_the_target_are_swept(tmp_path: Path) -> None:
    # Issue 15 item 9: a kill during a write left `.model.pt.<random>.tmp` (once 179 MB) forever.
    orphan = tmp_path / ".model.pt.k2x9_q0a.tmp"
    orphan.write_bytes(b"x" * 1000)
    _age(orphan, 2 * HOUR)
    kept = {
        # young: perhaps another process is writing it right now
        ".model.pt.abcdefgh.tmp": 60.0,
        # another target's temp file (swept when that target is written)
        ".other.pt.abcdefgh.tmp": 2 * HOUR,
        # not this module's name pattern (8 characters of [a-z0-9_])
        ".model.pt.user-notes.tmp": 2 * HOUR,
        ".model.pt.ABCDEFGH.tmp": 2 * HOUR,
        "model.pt.abcdefgh.tmp": 2 * HOUR,
    }
    for name, age in kept.items():
        (tmp_path / name).write_text("keep")
        _age(tmp_path / name, age)
    folder = tmp_path / ".model.pt.folder00.tmp"
    folder.mkdir()
    _age(folder, 2 * HOUR)
    link = tmp_path / ".model.pt.symlink0.tmp"
    link.symlink_to(tmp_path / ".other.pt.abcdefgh.tmp")
    _age(link, 2 * HOUR)
    with atomic_write(tmp_path / "model.pt", "wb") as handle:
        handle.write(b"new")
    left = set(os.listdir(tmp_path))
    assert orphan.name not in left
    assert left == {"model.pt", folder.name, link.name, *kept}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file locks")
def test_a_slow_write_in_progress_is_not_swept(tmp_path: Path) -> None:
    target = tmp_path / "slow.json"
    with atomic_write(target) as slow:
        slow.write("slow")
        (temp,) = tmp_path.glob(".slow.json.*.tmp")
        _age(temp, 2 * HOUR)  # a writer that has written nothing for two hours
        atomic._SWEPT.clear()  # as a fresh process would see the folder
        with atomic_write(target) as quick:
            quick.write("quick")
        assert temp.exists()  # still locked by the slow writer: left alone
    assert target.read_text() == "slow"
    assert os.listdir(tmp_path) == ["slow.json"]
