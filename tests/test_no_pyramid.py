"""Slides without a pyramid: bounded reads, virtual levels, and "out of memory" in words.

The memory figures (a 65,536 px single-level TIFF through tiling and the viewer) are measured by
``python -m pathviewer.bench big-slide``; here the reads are counted, which is deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tifffile = pytest.importorskip("tifffile")

from pathviewer.core import slide as slide_module  # noqa: E402
from pathviewer.core.errors import SlideError  # noqa: E402
from pathviewer.core.slide import ArraySlide, open_slide, read_overview  # noqa: E402
from pathviewer.core.tiling import tile_slide  # noqa: E402


class CountingSlide(ArraySlide):
    """An in-memory slide that records the largest region it was asked for."""

    largest = 0

    def read_region(self, location, level, size):  # type: ignore[no-untyped-def]
        self.largest = max(self.largest, int(size[0]) * int(size[1]))
        return super().read_region(location, level, size)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_an_overview_reads_blocks_and_equals_one_shrink() -> None:
    image = _texture(1000, 1500)
    slide = CountingSlide(image, levels=1)
    out, reached = read_overview(slide, 7.0, block=256)
    whole = np.asarray(Image.fromarray(image).resize(out.shape[1::-1], Image.Resampling.BOX))
    assert slide.largest <= 257 * 257
    assert out.shape == whole.shape == (143, 214, 3)
    assert np.abs(out.astype(int) - whole.astype(int)).max() <= 1
    assert reached == pytest.approx(1500 / 214)
    same, level_ds = read_overview(slide, 1.0, block=256)
    assert np.array_equal(same, image) and level_ds == 1.0


@pytest.fixture
def single_level_tiff(tmp_path: Path, monkeypatch) -> tuple[Path, np.ndarray]:
    """A tiled TIFF of one level whose side exceeds the (lowered) virtual-level limit."""
    monkeypatch.setattr(slide_module, "VIRTUAL_LEVEL_MAX", 256)
    image = _texture(1024, 1536)
    path = tmp_path / "flat.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    return path, image


def test_a_slide_without_a_pyramid_gets_virtual_levels_read_in_blocks(single_level_tiff) -> None:
    path, image = single_level_tiff
    slide = open_slide(path)
    assert slide.native_level_count == 1
    assert slide.level_downsamples == (1.0, 4.0, 16.0)
    assert slide.level_dimensions == ((1536, 1024), (384, 256), (96, 64))
    coarse = slide.read_region((512, 256), 1, (64, 32))
    expected = np.asarray(
        Image.fromarray(image[256:384, 512:768]).resize((64, 32), Image.Resampling.BOX)
    )
    assert np.abs(coarse.astype(int) - expected.astype(int)).max() <= 1
    assert slide.best_level_for_downsample(20) == 2
    assert slide.thumbnail((96, 96)).shape == (64, 96, 3)
    index = tile_slide(slide, 256, 1.0)  # the coarse pass reads a virtual level
    assert len(index.coords) == 24  # every patch of the texture is tissue


def test_running_out_of_memory_is_said_in_words(single_level_tiff, monkeypatch) -> None:
    path, _image = single_level_tiff
    slide = open_slide(path)

    def no_memory(*_args, **_kwargs):
        raise MemoryError

    monkeypatch.setattr(slide._slide, "read_region", no_memory)
    with pytest.raises(SlideError, match=r"out of memory reading 1536 x 1024 px of level 0"):
        slide.read_region((0, 0), 0, (1536, 1024))
