"""Which file a slide path names: the one rule every feature uses to tell two slides apart.

A slide reaches PathViewer under many spellings: relative to a cohort CSV or a run folder,
through a symbolic link, with ``./`` or ``..`` in it.  Every place that stores a slide (the
project), remembers something per slide (display settings, recent files), or matches one slide
to another (heatmaps, flags, cohort rows) goes through :func:`slide_path_key`, so they agree.
"""

from __future__ import annotations

import os
from pathlib import Path


def slide_path_key(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> str:
    """The absolute path, symbolic links resolved, that identifies the file ``path`` names.

    Parameters
    ----------
    path
        A slide path as written somewhere (absolute, or relative to ``base``).
    base
        The folder a relative ``path`` is relative to (a CSV's folder); None: the working
        directory.

    Returns
    -------
    str
        The same string for every spelling of one file.  A file that does not exist (yet) still
        gets its absolute, normalised path; when the file system refuses to resolve (a loop of
        links, a name too long) the absolute path as written is used, never an error.
    """
    candidate = Path(path)
    if not candidate.is_absolute() and base is not None:
        candidate = Path(base) / candidate
    try:
        return str(candidate.resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(candidate)


def same_slide(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file (by :func:`slide_path_key`)."""
    return slide_path_key(a) == slide_path_key(b)


class SlidePathMap:
    """Maps any spelling of a slide path to the string already stored for that file.

    Parameters
    ----------
    known
        The slide paths a store already holds (e.g. a project's slides); a path naming one of
        their files maps to that string, so one file is never stored twice.
    """

    def __init__(self, known: list[str] | tuple[str, ...] = ()) -> None:
        self._by_key: dict[str, str] = {}
        for path in known:
            self._by_key.setdefault(slide_path_key(path), path)

    def stored(
        self, path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None
    ) -> str:
        """The stored string of ``path``'s file (its :func:`slide_path_key` when new)."""
        key = slide_path_key(path, base)
        return self._by_key.setdefault(key, key)
