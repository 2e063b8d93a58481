"""Stream a tiled, JPEG-compressed pyramidal TIFF that OpenSlide opens as ``generic-tiff``.

OpenSlide's generic-TIFF reader takes the pyramid from successive *top-level* directories
(it ignores SubIFDs), needs every level tiled, and derives ``openslide.mpp-x/y`` from the
``XResolution``/``YResolution`` tags when ``ResolutionUnit`` is centimetre.  This module writes
exactly that layout with :mod:`tifffile`, one tile at a time, so a 20k x 20k slide never exists
as one array:

* the caller supplies ``render_tile(level, x, y)`` returning one ``(tile, tile, 3)`` uint8 tile
  at level pixel ``(x, y)``; every level is rendered (not downsampled from a full-resolution
  array), which keeps memory bounded;
* tifffile's writer runs in a worker thread that pulls tiles from a small queue and
  JPEG-encodes them while this thread renders the next tiles (two cores busy), and the job
  generator yields a :class:`~pathviewer.core.progress.Progress` per tile row;
* the file is written to a temporary name and renamed on success; closing the generator
  (cancel) or any error removes the temporary file, so a half-written slide never exists.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import numpy as np

from pathviewer.core.errors import SlideError
from pathviewer.core.progress import Progress

#: Tile edge in pixels (the de-facto standard of whole-slide formats).
TILE = 256

#: Tiles JPEG-encoded per batch by tifffile (bounds the memory of the writer).
BUFFER_TILES = 32

_ABORT = object()


class _Aborted(Exception):
    """Raised inside the writer thread when the producer gave up (cancel or error)."""


def pyramid_sizes(width: int, height: int, min_size: int = TILE) -> list[tuple[int, int]]:
    """Level sizes halving from ``(width, height)`` while the smaller side stays >= ``min_size``.

    Parameters
    ----------
    width, height
        Level-0 size in pixels.
    min_size
        Smallest allowed short side of a reduced level.

    Returns
    -------
    list of (width, height)
        Level 0 first; level ``k`` is ``ceil(size / 2**k)``.
    """
    sizes = [(width, height)]
    while True:
        w, h = sizes[-1]
        nw, nh = (w + 1) // 2, (h + 1) // 2
        if min(nw, nh) < min_size:
            return sizes
        sizes.append((nw, nh))


def write_pyramid_tiff(
    path: str | os.PathLike[str],
    sizes: list[tuple[int, int]],
    render_tile: Callable[[int, int, int], np.ndarray],
    mpp: float,
    quality: int = 85,
    description: str = "",
    stage: str = "writing",
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> Generator[Progress, None, Path]:
    """Write a pyramidal tiled JPEG TIFF, streaming tiles from ``render_tile``.

    Parameters
    ----------
    path
        Output file (replaced atomically when done).
    sizes
        ``(width, height)`` of each level, level 0 first (see :func:`pyramid_sizes`); level
        ``k`` must be level 0 downsampled by ``2**k``.
    render_tile
        ``render_tile(level, x, y)`` -> ``(TILE, TILE, 3)`` uint8 tile whose top-left pixel is
        ``(x, y)`` in that level's pixels.  Called in row-major order, level by level.
    mpp
        Microns per pixel of level 0 (written as pixels per centimetre).
    quality
        JPEG quality (1-100).
    description
        ImageDescription of level 0 (must not start with a vendor's signature such as
        ``Aperio``, or OpenSlide would take the file for that vendor's).
    stage, progress_offset, progress_total
        Progress events report ``done = progress_offset + rows written`` of
        ``progress_total`` (default: the tile rows of this file), so that a caller writing
        several files can show one bar.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SlideError
        The file cannot be written (disk full, permissions...).
    """
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    rows_per_level = [(h + TILE - 1) // TILE for _, h in sizes]
    total_rows = sum(rows_per_level)
    total = progress_total if progress_total is not None else total_rows
    tiles: queue.Queue[object] = queue.Queue(maxsize=16)
    failure: list[BaseException] = []

    def pull(count: int) -> Iterator[np.ndarray]:
        for _ in range(count):
            item = tiles.get()
            if item is _ABORT:
                raise _Aborted
            yield item  # type: ignore[misc]

    def writer() -> None:
        try:
            # Classic TIFF holds 4 GiB; JPEG tiles of a slide this size stay far below that
            # unless the slide is huge, where BigTIFF (which OpenSlide also reads) is needed.
            big = sizes[0][0] * sizes[0][1] * 3 > 2**32
            with tifffile.TiffWriter(tmp, bigtiff=big) as tiff:
                for level, (width, height) in enumerate(sizes):
                    count = ((width + TILE - 1) // TILE) * ((height + TILE - 1) // TILE)
                    pixels_per_cm = 1e4 / (mpp * 2**level)
                    tiff.write(
                        pull(count),
                        shape=(height, width, 3),
                        dtype=np.uint8,
                        tile=(TILE, TILE),
                        photometric="rgb",
                        compression="jpeg",
                        compressionargs={"level": quality},
                        resolution=(pixels_per_cm, pixels_per_cm),
                        resolutionunit="CENTIMETER",
                        subfiletype=1 if level else 0,
                        description=description if level == 0 and description else None,
                        metadata=None,
                        software=False,
                        # tifffile encodes batches of `buffersize` bytes of tiles in a thread
                        # pool; its default batch (hundreds of MB) would defeat streaming.
                        maxworkers=2,
                        buffersize=BUFFER_TILES * TILE * TILE * 3,
                    )
        except BaseException as error:  # reported by the producer, which owns the job
            failure.append(error)

    def put(item: object) -> None:
        # A dead writer never frees the queue: poll so an error there cannot hang us.
        while True:
            try:
                tiles.put(item, timeout=0.2)
                return
            except queue.Full:
                if not thread.is_alive():
                    raise SlideError(path, f"cannot write slide ({_describe(failure)})") from None

    thread = threading.Thread(target=writer, name=f"tiff-writer {path.name}", daemon=True)
    thread.start()
    finished = False
    try:
        done = 0
        for level, (width, _height) in enumerate(sizes):
            for row in range(rows_per_level[level]):
                for col in range((width + TILE - 1) // TILE):
                    tile = render_tile(level, col * TILE, row * TILE)
                    put(np.ascontiguousarray(tile, dtype=np.uint8))
                done += 1
                yield Progress(
                    stage,
                    progress_offset + done,
                    total,
                    message=f"{path.name}: level {level} row {row + 1}/{rows_per_level[level]}",
                )
        thread.join()
        if failure:
            raise SlideError(path, f"cannot write slide ({_describe(failure)})")
        os.replace(tmp, path)
        finished = True
    finally:
        if not finished:
            if thread.is_alive():
                with contextlib.suppress(SlideError):
                    put(_ABORT)
                thread.join(timeout=10)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return path


def _describe(failure: list[BaseException]) -> str:
    if not failure:
        return "writer stopped"
    error = failure[0]
    return f"{type(error).__name__}: {error}"
