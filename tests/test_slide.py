"""The SlideSource reader on real OpenSlide fixtures and in memory."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathviewer.core.errors import PathViewerError, SlideError
from pathviewer.core.slide import ArraySlide, SlideSource, check_readable, open_slide


def test_boxes_tiff_equals_png_pixel_for_pixel(openslide_fixtures: Path) -> None:
    slide = open_slide(openslide_fixtures / "boxes.tiff")
    assert isinstance(slide, SlideSource)
    assert slide.vendor == "generic-tiff"
    assert slide.level_count == 4
    assert slide.dimensions == (300, 250)
    region = slide.read_region((0, 0), 0, slide.dimensions)
    expected = np.asarray(Image.open(openslide_fixtures / "boxes.png").convert("RGB"))
    assert region.shape == expected.shape == (250, 300, 3)
    assert np.array_equal(region, expected)
    # a region straddling the right edge is padded with white, not garbage
    edge = slide.read_region((290, 0), 0, (20, 10))
    assert np.array_equal(edge[:, :10], expected[:10, 290:])
    assert (edge[:, 10:] == 255).all()


def test_levels_and_downsamples_are_consistent(openslide_fixtures: Path) -> None:
    slide = open_slide(openslide_fixtures / "boxes.tiff")
    assert slide.level_downsamples[0] == 1.0
    assert list(slide.level_downsamples) == sorted(slide.level_downsamples)
    assert slide.best_level_for_downsample(1.0) == 0
    assert slide.best_level_for_downsample(1000) == slide.level_count - 1
    coarse = slide.read_region((0, 0), slide.level_count - 1, slide.level_dimensions[-1])
    assert coarse.shape[:2] == slide.level_dimensions[-1][::-1]


def test_dicom_pair_opens(openslide_fixtures: Path) -> None:
    slide = open_slide(openslide_fixtures / "boxes_0.dcm")
    assert slide.vendor == "dicom"
    assert slide.dimensions == (16, 16)
    assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)


def test_real_svs_with_associated_images(cmu_small: Path) -> None:
    slide = open_slide(cmu_small)
    assert slide.vendor == "aperio"
    assert slide.dimensions == (2220, 2967)
    assert slide.mpp is not None and slide.mpp[0] == pytest.approx(0.499)
    assert slide.objective_power == 20
    assert {"label", "macro", "thumbnail"} <= set(slide.associated_image_names)
    for name in ("label", "macro", "thumbnail"):
        image = slide.associated_image(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.size > 0
    thumb = slide.thumbnail((256, 256))
    assert max(thumb.shape[:2]) == 256
    assert thumb.mean() < 250  # tissue, not a blank image
    with pytest.raises(SlideError, match="no associated image"):
        slide.associated_image("nope")


def test_plain_png_opens_as_image_slide(openslide_fixtures: Path) -> None:
    slide = open_slide(openslide_fixtures / "boxes.png")
    assert slide.vendor == "image"
    assert slide.dimensions == (300, 250)


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("unopenable.tiff", "OpenSlide cannot open it"),
        ("README.md", "not a slide or image file"),
        ("does-not-exist.svs", "file not found"),
    ],
)
def test_open_errors_name_file_and_cause(openslide_fixtures: Path, name: str, cause: str) -> None:
    with pytest.raises(SlideError) as info:
        open_slide(openslide_fixtures / name)
    message = str(info.value)
    assert name in message and cause in message
    assert isinstance(info.value, PathViewerError)


def test_folder_is_not_a_slide(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="folder"):
        open_slide(tmp_path)


def test_corrupt_tile_raises_on_read(openslide_fixtures: Path) -> None:
    slide = open_slide(openslide_fixtures / "unreadable.svs")
    with pytest.raises(SlideError, match="unreadable.svs.*cannot read region"):
        check_readable(slide)


def test_parallel_reads_are_consistent(cmu_small: Path) -> None:
    slide = open_slide(cmu_small)
    origins = [(x, y) for x in range(0, 2000, 256) for y in range(0, 2800, 512)]
    serial = {o: slide.read_region(o, 0, (256, 256)) for o in origins}
    results: dict[tuple[int, int], np.ndarray] = {}

    def worker(chunk: list[tuple[int, int]]) -> None:
        for origin in chunk:
            results[origin] = slide.read_region(origin, 0, (256, 256))

    threads = [threading.Thread(target=worker, args=(origins[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(serial[o], results[o]) for o in origins)


def test_array_slide_pyramid_and_padding() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 160, 3), dtype=np.uint8)
    slide = ArraySlide(image, mpp=0.25, levels=3)
    assert slide.level_dimensions == ((160, 100), (80, 50), (40, 25))
    assert slide.level_downsamples == (1.0, 2.0, 4.0)
    assert slide.objective_power == 40
    assert np.array_equal(slide.read_region((10, 20), 0, (30, 40)), image[20:60, 10:40])
    padded = slide.read_region((150, 90), 0, (20, 20))
    assert np.array_equal(padded[:10, :10], image[90:100, 150:160])
    assert (padded[10:, :] == 255).all()
    level1 = slide.read_region((0, 0), 1, (80, 50))
    assert level1.shape == (50, 80, 3)
    with pytest.raises(SlideError, match="level 5"):
        slide.read_region((0, 0), 5, (1, 1))


def test_a_truncated_slide_fails_only_where_tiles_are_missing(
    truncated_slide: tuple[Path, Path],
) -> None:
    truncated, whole = truncated_slide
    expected = open_slide(whole)
    slide = open_slide(truncated)
    try:
        assert slide.level_dimensions == expected.level_dimensions
        check_readable(slide)  # the coarse levels are whole
        with pytest.raises(SlideError) as failure:
            slide.read_region((256, 768), 0, (256, 256))
        message = str(failure.value)
        assert "truncated.tif" in message and "\n" not in message
        assert "(256, 768) level 0, 256 x 256 px" in message
        # OpenSlide poisons a handle after a failed read; the slide must still read the
        # whole tiles (before: every later read failed with the first error).
        for location, level in [((0, 0), 0), ((512, 256), 0), ((0, 0), 1), ((0, 0), 2)]:
            np.testing.assert_array_equal(
                slide.read_region(location, level, (256, 256)),
                expected.read_region(location, level, (256, 256)),
            )
        with pytest.raises(SlideError, match=r"\(768, 512\) level 0"):
            slide.read_region((768, 512), 0, (256, 256))
        assert slide.read_region((0, 0), 0, (16, 16)).shape == (16, 16, 3)
    finally:
        slide.close()
        expected.close()


def test_tiling_a_truncated_slide_names_the_file_and_region(
    truncated_slide: tuple[Path, Path],
) -> None:
    from pathviewer.core.tiling import tile_slide

    slide = open_slide(truncated_slide[0])
    try:
        with pytest.raises(SlideError) as failure:
            tile_slide(slide, 256, 1.0)
    finally:
        slide.close()
    message = str(failure.value)
    assert message.startswith(f"{truncated_slide[0]}: cannot read region at (")
    assert "level 0, 256 x 256 px" in message and "\n" not in message
