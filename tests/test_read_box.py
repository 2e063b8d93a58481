"""One way to read a box: NGSD patches, label-refinement patches and review thumbnails agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.slide import ArraySlide, open_slide, read_box
from pathviewer.core.tiling import read_patch
from pathviewer.ml.patch_data import read_patch_image


def _noise_slide(levels: int = 3) -> ArraySlide:
    rng = np.random.default_rng(0)
    return ArraySlide(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8), levels=levels)


def test_shrinking_averages_blocks_and_enlarging_interpolates() -> None:
    slide = _noise_slide(levels=1)  # no pyramid: the resize does all the work
    box = (100, 200, 64, 64)
    region = slide.read_region((100, 200), 0, (64, 64)).astype(float)
    half = read_box(slide, box, 32)
    expected = region.reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - expected).max() <= 1  # an area filter, not a point sample
    double = read_box(slide, box, 128)
    assert double.shape == (128, 128, 3)
    assert len(np.unique(double.reshape(-1, 3), axis=0)) > 64 * 64  # new, interpolated values


def test_reads_the_coarsest_level_with_enough_pixels_and_keeps_aspect() -> None:
    slide = _noise_slide(levels=3)
    out = read_box(slide, (0, 0, 512, 256), (128, 64))
    # downsample 4 is level 2 exactly: the level's own pixels, no resize
    np.testing.assert_array_equal(out, slide.read_region((0, 0), 2, (128, 64)))


def _qimage_rgb(image) -> np.ndarray:  # type: ignore[no-untyped-def]
    from PySide6.QtGui import QImage

    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    stride = rgb.bytesPerLine()
    data = np.frombuffer(rgb.constBits(), np.uint8, count=stride * rgb.height())
    # copied while ``rgb`` is alive: the buffer is Qt's and goes with it
    return (
        data.reshape(rgb.height(), stride)[:, : rgb.width() * 3]
        .reshape(rgb.height(), rgb.width(), 3)
        .copy()
    )


@pytest.mark.parametrize("size", [64, 96, 200])
def test_training_inference_and_review_read_identical_pixels(qapp, cmu_small: Path, size) -> None:
    from pathviewer.gui.review.panel import read_patch as review_patch

    slide = open_slide(cmu_small)
    x, y, side = 600, 400, 256
    ngsd = read_patch(slide, x, y, side, side / size)  # NGSD training and inference
    refine = read_patch_image(slide, x, y, side, side, size)  # label refinement
    review = _qimage_rgb(review_patch(slide, (x, y, side, side), size))  # the review queue
    assert ngsd.shape == (size, size, 3)
    np.testing.assert_array_equal(ngsd, refine)
    np.testing.assert_array_equal(review, refine)
