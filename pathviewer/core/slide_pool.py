"""Open slides shared by the readers of one process: each slide opened once, fork- and thread-safe.

Training datasets, the review gallery's thumbnail threads and exports read many patches from
few slides; opening a slide costs far more than reading a patch.  A :class:`SlidePool` keys its
handles by :func:`~pathviewer.core.identity.slide_path_key`, so the same file reached by two
paths is opened once.  A forked DataLoader worker must not share OpenSlide handles with its
parent: the pool notices the new process and opens its own.  Pickling a pool (to a spawned
worker) carries no handles.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from pathviewer.core.identity import slide_path_key
from pathviewer.core.slide import SlideSource, open_slide


class SlidePool:
    """Slides by path, opened on first use.

    Parameters
    ----------
    size
        Most slides kept open (least recently used dropped first); None keeps every slide.
        A dropped slide is not closed, since another thread may still be reading it; it is
        released with its last reference.
    """

    def __init__(self, size: int | None = None) -> None:
        self._start(size)

    def _start(self, size: int | None) -> None:
        self.size = size
        self._slides: OrderedDict[str, SlideSource] = OrderedDict()
        self._keys: dict[str, str] = {}  # path as asked -> identity key
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: How many slides this pool has opened (tests, benchmarks).
        self.opened = 0

    def get(self, path: str | os.PathLike[str]) -> SlideSource:
        """The slide at ``path``, opened once per process.

        Raises
        ------
        SlideError
            Missing or unreadable slide (names the file).
        """
        raw = os.fspath(path)
        key = self._keys.get(raw)
        if key is None:
            # Resolving a path is a system call or more; a dataset asks for every patch.
            key = self._keys.setdefault(raw, slide_path_key(Path(raw)))
        with self._lock:
            if os.getpid() != self._pid:
                # A forked child: the parent's handles are not ours to use or to close.
                self._slides = OrderedDict()
                self._pid = os.getpid()
            slide = self._slides.get(key)
            if slide is not None:
                self._slides.move_to_end(key)
                return slide
        # Opened outside the lock: opening a large slide must not stall the other readers.  Two
        # threads may race to open the same slide; the loser's copy is dropped.
        slide = open_slide(path)
        with self._lock:
            existing = self._slides.get(key)
            if existing is not None:
                return existing
            self._slides[key] = slide
            self.opened += 1
            while self.size is not None and len(self._slides) > self.size:
                self._slides.popitem(last=False)
        return slide

    def __len__(self) -> int:
        return len(self._slides)

    def clear(self) -> None:
        """Forget every slide without closing it (readers may still hold one)."""
        with self._lock:
            self._slides = OrderedDict()

    def close(self) -> None:
        """Close this process's slides (when no reader needs them any more)."""
        with self._lock:
            slides = list(self._slides.values()) if os.getpid() == self._pid else []
            self._slides = OrderedDict()
        for slide in slides:
            slide.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._start(state["size"])
