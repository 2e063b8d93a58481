"""Slide I/O: one :class:`SlideSource` protocol in level-0 pixel coordinates.

Implementations
---------------
* :class:`OpenSlideSource`: every format OpenSlide 4 reads (SVS, NDPI, MRXS, DICOM, generic
  tiled TIFF...) and plain PNG/JPEG/TIFF images through OpenSlide's ImageSlide.  One OpenSlide
  handle is shared by all threads: the C library is thread-safe and openslide-python releases the
  GIL while it decodes, so the viewer's thread pool reads tiles in parallel.
* :class:`ArraySlide`: an in-memory slide built from a numpy array, for tests and benchmarks.

:func:`open_slide` is the entry point; it raises :class:`~pathviewer.core.errors.SlideError` with
a message naming the file and the cause for a missing, foreign, unsupported or broken file.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

import numpy as np
from PIL import Image

from pathviewer.core.errors import SlideError

if TYPE_CHECKING:
    import openslide

log = logging.getLogger(__name__)

#: Objective power assumed for a given MPP when the scanner wrote none (10 um / mpp: 0.25 um -> 40x).
MPP_AT_10X = 1.0

#: File suffixes offered in file dialogs and accepted on the command line.
SLIDE_SUFFIXES = (
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
    ".dcm", ".png", ".jpg", ".jpeg",
)  # fmt: skip


@runtime_checkable
class SlideSource(Protocol):
    """A multi-resolution slide addressed in level-0 pixel coordinates.

    ``read_region`` always returns an ``(height, width, 3)`` uint8 RGB array; transparent or
    out-of-slide pixels are composited on white (the colour of glass on a scan).
    """

    @property
    def path(self) -> str: ...

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def level_count(self) -> int: ...

    @property
    def native_level_count(self) -> int:
        """Levels stored in the file (the rest, up to ``level_count``, are made on the fly)."""
        ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def mpp(self) -> tuple[float, float] | None: ...

    @property
    def objective_power(self) -> float | None: ...

    @property
    def vendor(self) -> str: ...

    @property
    def properties(self) -> Mapping[str, str]: ...

    @property
    def associated_image_names(self) -> tuple[str, ...]: ...

    @property
    def icc_profile(self) -> bytes | None:
        """The scan's ICC colour profile (bytes of an ``.icc`` file), or None."""
        ...

    def associated_image(self, name: str) -> np.ndarray: ...

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray: ...

    def best_level_for_downsample(self, downsample: float) -> int: ...

    def thumbnail(self, max_size: tuple[int, int]) -> np.ndarray: ...

    def close(self) -> None: ...


def read_box(
    slide: SlideSource, box: tuple[int, int, int, int], out_size: tuple[int, int] | int
) -> np.ndarray:
    """The level-0 ``box`` (``x, y, width, height``) as ``out_size`` pixels, read one way.

    Training, inference and the review queue all read patches here, so the model and the
    annotator see the same pixels for the same box.  The coarsest pyramid level that still has
    at least ``out_size`` pixels across the box is read, then resized: an area (box) filter
    when shrinking, which averages instead of aliasing, and bilinear when enlarging.

    Parameters
    ----------
    box
        Level-0 ``(x, y, width, height)``.
    out_size
        ``(width, height)`` of the result, or one side of a square.

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8.
    """
    x, y, width, height = (int(v) for v in box)
    out_w, out_h = (out_size, out_size) if isinstance(out_size, int) else out_size
    out_w, out_h = max(1, int(out_w)), max(1, int(out_h))
    downsample = max(1.0, min(width / out_w, height / out_h))
    level = slide.best_level_for_downsample(downsample)
    level_ds = slide.level_downsamples[level]
    native = (max(1, math.ceil(width / level_ds)), max(1, math.ceil(height / level_ds)))
    region = slide.read_region((x, y), level, native)
    if native == (out_w, out_h):
        return region
    shrinking = native[0] >= out_w and native[1] >= out_h
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(region).resize((out_w, out_h), resample))


#: Most level pixels read at once when shrinking a whole level (a 2048 x 2048 block: 16 MiB as
#: OpenSlide's RGBA buffer).  A slide without a pyramid is shrunk block by block, so the memory
#: needed does not grow with the slide.
OVERVIEW_BLOCK = 2048


#: A slide whose coarsest level is longer than this (a file without a pyramid) gets virtual
#: levels, each 4x coarser, until one is no longer: views, thumbnails and tiling then read
#: small images whatever the file holds.
VIRTUAL_LEVEL_MAX = 4096


def _shrink_region(
    read: Callable[[tuple[int, int], int, tuple[int, int]], np.ndarray],
    level: int,
    level_ds: float,
    source: tuple[float, float, float, float],
    out_size: tuple[int, int],
    block: int = OVERVIEW_BLOCK,
) -> np.ndarray:
    """``source`` (``x0, y0, x1, y1`` in pixels of ``level``) area-averaged to ``out_size``.

    Read in blocks of at most ``block`` x ``block`` level pixels; each block is shrunk by
    Pillow's BOX filter into its part of the result, whose support is the block's own pixels, so
    the result equals one shrink of the whole region while memory stays at about two blocks.
    """
    x0, y0, x1, y1 = source
    out_w, out_h = out_size
    sx, sy = (x1 - x0) / out_w, (y1 - y0) / out_h  # level pixels per result pixel
    out = np.empty((out_h, out_w, 3), np.uint8)
    step_x = max(1, int(block // max(sx, 1e-9)))
    step_y = max(1, int(block // max(sy, 1e-9)))
    for oy in range(0, out_h, step_y):
        oy1 = min(oy + step_y, out_h)
        by0, by1 = y0 + oy * sy, y0 + oy1 * sy
        ry0, ry1 = math.floor(by0), max(math.floor(by0) + 1, math.ceil(by1))
        for ox in range(0, out_w, step_x):
            ox1 = min(ox + step_x, out_w)
            bx0, bx1 = x0 + ox * sx, x0 + ox1 * sx
            rx0, rx1 = math.floor(bx0), max(math.floor(bx0) + 1, math.ceil(bx1))
            region = read(
                (round(rx0 * level_ds), round(ry0 * level_ds)), level, (rx1 - rx0, ry1 - ry0)
            )
            shrunk = Image.fromarray(region).resize(
                (ox1 - ox, oy1 - oy),
                Image.Resampling.BOX,
                box=(bx0 - rx0, by0 - ry0, bx1 - rx0, by1 - ry0),
            )
            out[oy:oy1, ox:ox1] = np.asarray(shrunk)
    return out


def read_overview(
    slide: SlideSource, downsample: float, block: int = OVERVIEW_BLOCK
) -> tuple[np.ndarray, float]:
    """The whole slide at about ``downsample`` and the downsample reached, in bounded memory.

    The level nearest ``downsample`` from below is read in blocks of at most ``block`` x
    ``block`` level pixels and area-averaged (:func:`_shrink_region`).  Peak memory is the
    result plus about two blocks, whatever the slide's size: a 65,536 px single-level TIFF no
    longer asks for one 17 GB buffer.

    Parameters
    ----------
    slide
        The slide.
    downsample
        Level-0 pixels per result pixel wanted (at least 1).
    block
        Side of the blocks read (level pixels).

    Returns
    -------
    (image, reached)
        ``(h, w, 3)`` uint8 RGB, and the level-0 pixels per result pixel along x.

    Raises
    ------
    SlideError
        A block cannot be read (the message names the slide, and says when memory ran out).
    """
    downsample = max(float(downsample), 1.0)
    level = slide.best_level_for_downsample(downsample)
    level_ds = float(slide.level_downsamples[level])
    lw, lh = (int(v) for v in slide.level_dimensions[level])
    factor = downsample / level_ds
    if factor <= 1.01:
        out = np.empty((lh, lw, 3), np.uint8)
        for y in range(0, lh, block):
            for x in range(0, lw, block):
                size = (min(block, lw - x), min(block, lh - y))
                out[y : y + size[1], x : x + size[0]] = slide.read_region(
                    (round(x * level_ds), round(y * level_ds)), level, size
                )
        return out, level_ds
    tw, th = max(1, round(lw / factor)), max(1, round(lh / factor))
    out = _shrink_region(slide.read_region, level, level_ds, (0, 0, lw, lh), (tw, th), block)
    return out, slide.dimensions[0] / tw


def _rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite premultiplied-free RGBA on white; OpenSlide marks no-data pixels alpha 0."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.uint16)
    out = (rgb.astype(np.uint16) * a + 255 * (255 - a)) // 255
    return out.astype(np.uint8)


def _out_of_memory(width: int, height: int, level: int) -> str:
    gib = width * height * 4 / 2**30
    return (
        f"out of memory reading {width} x {height} px of level {level} ({gib:.1f} GiB);"
        " a slide without a pyramid needs one (e.g. vips tiffsave --tile --pyramid)"
    )


def _best_level(downsamples: tuple[float, ...], downsample: float) -> int:
    """Index of the coarsest level whose downsample does not exceed ``downsample`` (as OpenSlide)."""
    best = 0
    for index, value in enumerate(downsamples):
        if value <= downsample * 1.0001:
            best = index
    return best


class _SlideBase:
    """Shared derived properties (objective power from MPP, thumbnail)."""

    _path: str

    @property
    def path(self) -> str:
        return self._path

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def native_level_count(self) -> int:
        return self.level_count

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        raise NotImplementedError

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        raise NotImplementedError

    @property
    def mpp(self) -> tuple[float, float] | None:
        raise NotImplementedError

    @property
    def objective_power(self) -> float | None:
        """Scanner objective power, or derived from MPP (10 um / mpp) when the file has none."""
        raw = self._raw_objective_power()
        if raw is not None:
            return raw
        mpp = self.mpp
        if mpp is None:
            return None
        # Round to the nearest standard objective so 0.499 um/px reads as 20x, not 20.04x.
        derived = MPP_AT_10X * 10.0 / mpp[0]
        for standard in (1.25, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0):
            if abs(derived - standard) / standard < 0.1:
                return standard
        return round(derived, 2)

    def _raw_objective_power(self) -> float | None:
        return None

    @property
    def icc_profile(self) -> bytes | None:
        return None

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        raise NotImplementedError

    def best_level_for_downsample(self, downsample: float) -> int:
        return _best_level(self.level_downsamples, downsample)

    def thumbnail(self, max_size: tuple[int, int]) -> np.ndarray:
        """The whole slide scaled to fit ``max_size`` (width, height), aspect kept.

        Read in bounded memory (:func:`read_overview`), area-averaged.
        """
        width, height = self.dimensions
        scale = max(width / max_size[0], height / max_size[1], 1.0)
        image, _reached = read_overview(cast("SlideSource", self), scale)
        target = (max(1, round(width / scale)), max(1, round(height / scale)))
        if (image.shape[1], image.shape[0]) != target:
            image = np.asarray(Image.fromarray(image).resize(target, Image.Resampling.BOX))
        return image


class OpenSlideSource(_SlideBase):
    """A slide read by OpenSlide (any vendor format, or a plain image through ImageSlide).

    Parameters
    ----------
    path
        The slide file.

    Raises
    ------
    SlideError
        The file is missing, not a slide, or in a format OpenSlide does not support.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import openslide

        self._path = str(path)
        if not os.path.exists(self._path):
            raise SlideError(self._path, "file not found")
        if os.path.isdir(self._path):
            raise SlideError(self._path, "is a folder, not a slide file")
        try:
            self._slide: openslide.AbstractSlide = openslide.open_slide(self._path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise SlideError(self._path, "not a slide format that OpenSlide can read") from None
        except openslide.OpenSlideError as error:
            raise SlideError(self._path, f"OpenSlide cannot open it ({error})") from None
        except Exception as error:  # PIL's UnidentifiedImageError and friends for non-images
            raise SlideError(
                self._path, f"not a slide or image file ({type(error).__name__}: {error})"
            ) from None
        self._is_image_slide = isinstance(self._slide, openslide.ImageSlide)
        self._lock = threading.Lock()  # ImageSlide wraps a PIL image, which is not thread-safe
        dimensions = [(int(d[0]), int(d[1])) for d in self._slide.level_dimensions]
        downsamples = [float(d) for d in self._slide.level_downsamples]
        # Levels in the file; those after them are virtual (VIRTUAL_LEVEL_MAX).
        self._native_levels = len(dimensions)
        width, height = dimensions[0]
        while max(dimensions[-1]) > VIRTUAL_LEVEL_MAX:
            downsample = downsamples[-1] * 4.0
            dimensions.append(
                (max(1, math.ceil(width / downsample)), max(1, math.ceil(height / downsample)))
            )
            downsamples.append(downsample)
        self._level_dimensions = tuple(dimensions)
        self._level_downsamples = tuple(downsamples)
        self._properties = dict(self._slide.properties)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._level_downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        import openslide

        try:
            mpp_x = float(self._properties[openslide.PROPERTY_NAME_MPP_X])
            mpp_y = float(self._properties[openslide.PROPERTY_NAME_MPP_Y])
        except (KeyError, ValueError):
            return None
        if not (math.isfinite(mpp_x) and math.isfinite(mpp_y)) or mpp_x <= 0 or mpp_y <= 0:
            return None
        return (mpp_x, mpp_y)

    def _raw_objective_power(self) -> float | None:
        import openslide

        try:
            value = float(self._properties[openslide.PROPERTY_NAME_OBJECTIVE_POWER])
        except (KeyError, ValueError):
            return None
        return value if value > 0 else None

    @property
    def vendor(self) -> str:
        if self._is_image_slide:
            return "image"
        return self._properties.get("openslide.vendor", "unknown")

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._slide.associated_images.keys())

    @property
    def icc_profile(self) -> bytes | None:
        try:
            profile = self._slide.color_profile
        except Exception as error:  # a damaged profile must not keep the slide from opening
            log.warning("%s: colour profile unreadable: %s", self._path, error)
            return None
        return None if profile is None else bytes(profile.tobytes())

    def associated_image(self, name: str) -> np.ndarray:
        """An associated image (``label``, ``macro``, ``thumbnail``...) as RGB."""
        try:
            image = self._slide.associated_images[name]
        except KeyError:
            raise SlideError(self._path, f"has no associated image named {name!r}") from None
        except Exception as error:
            raise SlideError(
                self._path, f"associated image {name!r} cannot be decoded ({error})"
            ) from None
        return _rgba_to_rgb_on_white(np.asarray(image.convert("RGBA")))

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        """Read ``size`` (width, height) pixels of ``level`` whose top-left is ``location`` in level-0 px.

        Raises
        ------
        SlideError
            A tile of the region cannot be decoded.
        """
        if not 0 <= level < self.level_count:
            raise SlideError(
                self._path, f"level {level} does not exist (slide has {self.level_count})"
            )
        width, height = int(size[0]), int(size[1])
        if width <= 0 or height <= 0:
            return np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        if level >= self._native_levels:
            # A virtual level: shrink the coarsest stored level block by block.
            source_level = self._native_levels - 1
            source_ds = self._level_downsamples[source_level]
            scale = self._level_downsamples[level] / source_ds
            x0, y0 = location[0] / source_ds, location[1] / source_ds
            box = (x0, y0, x0 + width * scale, y0 + height * scale)
            return _shrink_region(self._read_native, source_level, source_ds, box, (width, height))
        return self._read_native(location, level, (width, height))

    @property
    def native_level_count(self) -> int:
        return self._native_levels

    def _read_native(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        width, height = size
        origin = (int(location[0]), int(location[1]))
        try:
            if self._is_image_slide:
                with self._lock:
                    image = self._slide.read_region(origin, level, (width, height))
            else:
                image = self._read_openslide(origin, level, (width, height))
        except MemoryError:
            raise SlideError(self._path, _out_of_memory(width, height, level)) from None
        except SlideError:
            raise
        except Exception as error:
            raise SlideError(
                self._path,
                f"cannot read region at {origin} level {level}, {width} x {height} px ({error})",
            ) from None
        try:
            return _rgba_to_rgb_on_white(np.asarray(image))
        except MemoryError:
            raise SlideError(self._path, _out_of_memory(width, height, level)) from None

    def _read_openslide(
        self, origin: tuple[int, int], level: int, size: tuple[int, int]
    ) -> Image.Image:
        """OpenSlide's ``read_region``, tried again on a private handle after a failed read.

        An OpenSlide handle that failed once (a truncated file's missing tile, a corrupt JPEG)
        fails every later read with the same error.  So the shared handle is replaced for the
        regions that follow, and the failed region is read once more on a handle of its own:
        another thread's damaged region cannot poison that one in between, so a region that
        fails there is damaged itself and is reported, and any other is read.  Readers still
        inside the old handle keep it until they return.
        """
        import openslide

        handle = self._slide
        try:
            return handle.read_region(origin, level, size)
        except openslide.OpenSlideError:
            self._reopen(handle)
            try:
                private = openslide.open_slide(self._path)
            except Exception as error:  # the file went away or changed meanwhile
                raise SlideError(self._path, f"cannot be reopened ({error})") from None
            try:
                return private.read_region(origin, level, size)
            finally:
                private.close()

    def _reopen(self, failed: openslide.AbstractSlide) -> openslide.AbstractSlide:
        """Replace the handle ``failed`` with a new one (once, whichever thread asks first)."""
        import openslide

        with self._lock:
            if self._slide is failed:
                log.warning("%s: a read failed; reopening the slide", self._path)
                try:
                    self._slide = openslide.open_slide(self._path)
                except Exception as error:  # the file went away or changed meanwhile
                    raise SlideError(self._path, f"cannot be reopened ({error})") from None
            return self._slide

    def close(self) -> None:
        self._slide.close()


class ArraySlide(_SlideBase):
    """An in-memory slide built from an RGB array, with a power-of-two pyramid.

    Parameters
    ----------
    image
        ``(height, width, 3)`` uint8 level-0 pixels.
    mpp
        Microns per pixel at level 0 (None for unknown).
    levels
        Number of pyramid levels (each halves the previous one).
    name
        What :attr:`path` reports (for messages).
    properties
        Extra properties.
    associated
        Associated images by name.
    icc_profile
        An ICC colour profile to report (tests of colour management).
    """

    def __init__(
        self,
        image: np.ndarray,
        mpp: float | None = 0.5,
        levels: int = 3,
        name: str = "<memory>",
        properties: Mapping[str, str] | None = None,
        associated: Mapping[str, np.ndarray] | None = None,
        icc_profile: bytes | None = None,
    ) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise SlideError(name, "in-memory slide must be an (H, W, 3) uint8 array")
        self._path = name
        self._icc_profile = icc_profile
        self._levels = [np.ascontiguousarray(image)]
        for _ in range(1, levels):
            previous = self._levels[-1]
            if min(previous.shape[:2]) < 2:
                break
            pil = Image.fromarray(previous)
            self._levels.append(
                np.asarray(
                    pil.resize(
                        (previous.shape[1] // 2, previous.shape[0] // 2), Image.Resampling.BOX
                    )
                )
            )
        height, width = image.shape[:2]
        self._level_dimensions = tuple((lvl.shape[1], lvl.shape[0]) for lvl in self._levels)
        self._level_downsamples = tuple(width / lvl.shape[1] for lvl in self._levels)
        self._mpp = (mpp, mpp) if mpp else None
        self._properties = dict(properties or {})
        if mpp:
            self._properties.setdefault("openslide.mpp-x", str(mpp))
            self._properties.setdefault("openslide.mpp-y", str(mpp))
        self._associated = dict(associated or {})

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._level_downsamples

    @property
    def mpp(self) -> tuple[float, float] | None:
        return self._mpp

    @property
    def vendor(self) -> str:
        return "memory"

    @property
    def properties(self) -> Mapping[str, str]:
        return self._properties

    @property
    def icc_profile(self) -> bytes | None:
        return self._icc_profile

    @property
    def associated_image_names(self) -> tuple[str, ...]:
        return tuple(self._associated)

    def associated_image(self, name: str) -> np.ndarray:
        try:
            return self._associated[name]
        except KeyError:
            raise SlideError(self._path, f"has no associated image named {name!r}") from None

    def read_region(
        self, location: tuple[int, int], level: int, size: tuple[int, int]
    ) -> np.ndarray:
        if not 0 <= level < self.level_count:
            raise SlideError(
                self._path, f"level {level} does not exist (slide has {self.level_count})"
            )
        data = self._levels[level]
        downsample = self._level_downsamples[level]
        width, height = int(size[0]), int(size[1])
        out = np.full((max(height, 0), max(width, 0), 3), 255, np.uint8)
        x0 = int(math.floor(location[0] / downsample))
        y0 = int(math.floor(location[1] / downsample))
        src_x0, src_y0 = max(x0, 0), max(y0, 0)
        src_x1 = min(x0 + width, data.shape[1])
        src_y1 = min(y0 + height, data.shape[0])
        if src_x1 > src_x0 and src_y1 > src_y0:
            out[src_y0 - y0 : src_y1 - y0, src_x0 - x0 : src_x1 - x0] = data[
                src_y0:src_y1, src_x0:src_x1
            ]
        return out

    def close(self) -> None:
        self._levels = []


def open_slide(path: str | os.PathLike[str]) -> SlideSource:
    """Open a slide or plain image file.

    Parameters
    ----------
    path
        Any file OpenSlide reads, or a PNG/JPEG/TIFF image.

    Returns
    -------
    SlideSource
        The opened slide; call ``close()`` when done.

    Raises
    ------
    SlideError
        Missing file, folder, unsupported format, or a file that is not an image at all.
    """
    return OpenSlideSource(Path(path))


def check_readable(slide: SlideSource) -> None:
    """Read the centre of the coarsest level, so that a corrupt file fails early with a clear message."""
    level = slide.level_count - 1
    width, height = slide.level_dimensions[level]
    downsample = slide.level_downsamples[level]
    size = (min(width, 256), min(height, 256))
    origin = (int((width - size[0]) / 2 * downsample), int((height - size[1]) / 2 * downsample))
    slide.read_region(origin, level, size)
