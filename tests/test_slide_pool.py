"""One slide-handle pool: opened once per slide and per process, whatever the path spelling."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathviewer.core.errors import SlideError
from pathviewer.core.slide_pool import SlidePool


@pytest.fixture
def slides(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(3):
        path = tmp_path / f"s{i}.png"
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(path)
        paths.append(path)
    return paths


def test_each_slide_is_opened_once_by_any_path_and_threads(slides: list[Path]) -> None:
    pool = SlidePool()
    first = pool.get(slides[0])
    relative = os.path.relpath(slides[0])
    assert pool.get(relative) is first and pool.get(str(slides[0])) is first
    threads = [threading.Thread(target=pool.get, args=(slides[1],)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pool.opened == 2 and len(pool) == 2
    with pytest.raises(SlideError, match="not found"):
        pool.get(slides[0].parent / "gone.svs")
    pool.close()
    assert len(pool) == 0


def test_least_recently_used_slides_go_first(slides: list[Path]) -> None:
    pool = SlidePool(size=2)
    a = pool.get(slides[0])
    pool.get(slides[1])
    assert pool.get(slides[0]) is a  # now the most recent
    pool.get(slides[2])  # drops slides[1]
    assert pool.opened == 3
    pool.get(slides[0])
    assert pool.opened == 3
    pool.get(slides[1])
    assert pool.opened == 4


def test_a_pickled_or_forked_pool_opens_its_own_handles(slides: list[Path], monkeypatch) -> None:
    pool = SlidePool(size=5)
    parent = pool.get(slides[0])
    copy = pickle.loads(pickle.dumps(pool))
    assert len(copy) == 0 and copy.size == 5
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a forked DataLoader worker
    assert pool.get(slides[0]) is not parent
