"""Write files so that a crash or a cancel never leaves a half-written one.

:func:`atomic_write` writes a temporary file next to the target, named
``.<target name>.<8 random characters>.tmp``, fsyncs it, renames it over the target and fsyncs
the folder, so that after a power cut the target is the old file or the new one, never a part.
A process killed mid-write leaves its temporary file behind; the next write of the same target
removes such orphans once they are an hour old (a writer holds a lock on its temporary file, so a
slow write in progress is never taken for one).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

try:  # POSIX; elsewhere an open file cannot be deleted anyway
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Temporary files older than this (by modification time) whose writer is gone are orphans.
ORPHAN_AGE_S = 3600.0
#: The names :func:`tempfile.mkstemp` gives with our prefix and suffix: group 1 is the target.
_TEMP_NAME = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")
#: Folder -> target name -> orphan temp names found when this process first wrote there.  One scan
#: per folder, not per write: a predictions folder can hold thousands of files.
_SWEPT: dict[str, dict[str, list[str]]] = {}
_SWEPT_LOCK = threading.Lock()


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file name of :func:`atomic_write` (``.<target>.<8>.tmp``)."""
    return _TEMP_NAME.fullmatch(name) is not None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it over ``path``, else delete it.

    Parameters
    ----------
    path
        Final file.
    mode
        ``"w"`` (text, UTF-8 by default) or ``"wb"``.

    Raises
    ------
    IsADirectoryError
        ``path`` is a folder (raised before anything is written).
    OSError
        Writing failed (a full disk, a file-size limit); one that named no file names ``path``.
    """
    path = Path(path)
    if path.is_dir():  # refused before writing (a temp file can be large), naming the target
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_orphans(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    lock = _lock(fd)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:  # type: ignore[call-overload]
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error.filename is None and error.errno is not None:
            # A failed write() or fsync() names no file; the user needs to know which one
            # (the CLI and the dialogs print "FILE: No space left on device").
            raise OSError(
                error.errno, error.strerror or os.strerror(error.errno), str(path)
            ) from error
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        if lock is not None:
            os.close(lock)
    fsync_directory(path.parent)


def _lock(fd: int) -> int | None:
    """Lock the temporary file until it is renamed (on a duplicate: closing the file keeps it)."""
    if fcntl is None:
        return None
    try:
        lock = os.dup(fd)
    except OSError:  # out of file descriptors: write unlocked rather than not at all
        return None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a file system without locks: the age alone protects the write
        pass
    return lock


def fsync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); silently skipped where folders cannot be."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse (EINVAL); the rename itself is done
        pass
    finally:
        os.close(fd)


def _sweep_orphans(path: Path) -> None:
    """Remove ``path``'s temporary files left by killed writers (see the module notes)."""
    folder = os.path.abspath(path.parent)
    with _SWEPT_LOCK:
        found = _SWEPT.get(folder)
        if found is None:
            found = _SWEPT[folder] = _find_orphans(folder)
        names = found.pop(path.name, [])
    for name in names:
        _remove_orphan(os.path.join(folder, name))


def _find_orphans(folder: str) -> dict[str, list[str]]:
    cutoff = time.time() - ORPHAN_AGE_S
    found: dict[str, list[str]] = {}
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry.name)
            # Only regular files: never follow a link, never touch a folder.
            if match is None or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    found.setdefault(match.group(1), []).append(entry.name)
    return found


def _remove_orphan(temp: str) -> None:
    try:
        fd = os.open(temp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # gone already, or not ours to open
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held: a writer is still at work (or locks are unsupported)
                return
        with contextlib.suppress(OSError):
            os.unlink(temp)
    finally:
        os.close(fd)
