"""Tiling, the DSMIL edge-score background filter, the cached patch index, heatmaps."""

from __future__ import annotations

import math
import os
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.heatmap import Heatmap, HeatmapError, load_heatmap, save_heatmap
from pathviewer.core.slide import ArraySlide, open_slide
from pathviewer.core.tiling import PatchIndex, edge_score, grid_boxes, tile_slide


def _tissue(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(60, 200, (h, w, 3), dtype=np.uint8)


def test_edge_score_white_vs_tissue() -> None:
    rng = np.random.default_rng(0)
    white = np.full((128, 128, 3), 245, np.uint8)
    assert edge_score(white) == 0.0  # PIL's copied border frame must not count as edges
    assert edge_score(_tissue(rng, 128, 128)) > 100
    soft = np.full((128, 128, 3), 200, np.uint8)
    soft[::16] = 197  # faint stripes: a few edges, still under the threshold
    assert 0 < edge_score(soft) < 15


def _half_tissue_slide() -> ArraySlide:
    rng = np.random.default_rng(1)
    image = np.full((1024, 1536, 3), 242, np.uint8)
    image[:512, :768] = _tissue(rng, 512, 768)
    return ArraySlide(image, name="half.png")


def test_tiling_keeps_only_tissue_patches() -> None:
    slide = _half_tissue_slide()
    index = tile_slide(slide, patch_size=256, read_downsample=2.0)
    assert sorted(map(tuple, index.coords.tolist())) == [
        (x, y) for x in (0, 256, 512) for y in (0, 256)
    ]
    assert index.read_size == 128
    assert (index.scores > 15).all()
    assert index.boxes().shape == (6, 4)
    assert grid_boxes(slide, 256).shape == (4 * 6, 4)


def test_blank_slide_gives_empty_index() -> None:
    slide = ArraySlide(np.full((512, 512, 3), 250, np.uint8))
    assert len(tile_slide(slide, patch_size=128)) == 0


def test_tile_index_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from pathviewer.core import tiling

    reads = {"coarse": 0, "patch": 0}
    coarse_image, read_patch = tiling._coarse_image, tiling.read_patch

    def counting_coarse(*args, **kwargs):
        reads["coarse"] += 1
        return coarse_image(*args, **kwargs)

    def counting_patch(*args, **kwargs):
        reads["patch"] += 1
        return read_patch(*args, **kwargs)

    monkeypatch.setattr(tiling, "_coarse_image", counting_coarse)
    monkeypatch.setattr(tiling, "read_patch", counting_patch)

    rng = np.random.default_rng(2)
    image = np.full((768, 768, 3), 240, np.uint8)
    image[256:, 256:] = _tissue(rng, 512, 512)
    path = tmp_path / "slide.png"
    Image.fromarray(image).save(path)
    cache = tmp_path / "cache"
    slide = open_slide(path)
    try:
        first = tile_slide(slide, 256, 1.0, cache_dir=cache)
        files = list(cache.glob("*.npz"))
        assert len(files) == 1 and len(first) == 4
        assert reads["coarse"] == 1 and reads["patch"] >= 4
        # A cached index comes back identical, without reading the slide again.
        files[0].touch()
        reads.update(coarse=0, patch=0)
        second = tile_slide(slide, 256, 1.0, cache_dir=cache)
        assert reads == {"coarse": 0, "patch": 0}
        np.testing.assert_array_equal(first.coords, second.coords)
        np.testing.assert_allclose(first.scores, second.scores)
        # Other settings -> another cache entry.
        tile_slide(slide, 128, 1.0, cache_dir=cache)
        assert len(list(cache.glob("*.npz"))) == 2
        # A corrupt cache file is rebuilt, not trusted.
        files[0].write_bytes(b"garbage")
        third = tile_slide(slide, 256, 1.0, cache_dir=cache)
        np.testing.assert_array_equal(first.coords, third.coords)
    finally:
        slide.close()
    loaded = PatchIndex.load(files[0])
    assert len(loaded) == 4


def test_heatmap_roundtrip_and_value_at(tmp_path: Path) -> None:
    coords = np.array([[0, 0], [256, 256], [512, 0]])
    probs = np.array([0.1, 0.9, 0.5], np.float32)
    heatmap = Heatmap.from_patches("s.tif", (800, 600), 256, coords, probs, method="ngsd")
    assert heatmap.shape == (2, 3)
    assert heatmap.value_at(10, 10) == pytest.approx(0.1)
    assert heatmap.value_at(300, 300) == pytest.approx(0.9)
    assert math.isnan(heatmap.value_at(300, 10))  # no tissue there
    assert math.isnan(heatmap.value_at(5000, 10))  # outside the grid
    path = tmp_path / "h.npz"
    save_heatmap(heatmap, path)
    back = load_heatmap(path)
    assert back.slide == "s.tif" and back.dimensions == (800, 600)
    assert back.patch_size == (256, 256) and back.origin == (0, 0) and back.method == "ngsd"
    np.testing.assert_array_equal(np.isnan(back.probs), np.isnan(heatmap.probs))
    assert back.value_at(513, 1) == pytest.approx(0.5)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(HeatmapError, match="bad.npz"):
        load_heatmap(tmp_path / "bad.npz")
    with pytest.raises(HeatmapError, match="missing.npz"):
        load_heatmap(tmp_path / "missing.npz")


def _cached_tissue_slide(tmp_path: Path) -> tuple[Path, Path]:
    from PIL import Image

    rng = np.random.default_rng(5)
    image = np.full((768, 768, 3), 240, np.uint8)
    image[256:, 256:] = _tissue(rng, 512, 512)
    path = tmp_path / "slide.bmp"  # uncompressed: another image of this size has the same size
    Image.fromarray(image).save(path)
    return path, tmp_path / "cache"


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda i: i.coords.__setitem__(0, (10**9, 10**9)), "outside the 768 x 768 px slide"),
        (lambda i: i.coords.__setitem__(0, (-256, 0)), "outside"),
        (lambda i: i.coords.__setitem__(0, (300, 256)), "not on the 256 px grid"),
        (lambda i: i.coords.__setitem__(0, i.coords[1]), "listed twice"),
        (lambda i: i.scores.__setitem__(0, np.nan), "score"),
        (lambda i: setattr(i, "scores", i.scores[:2]), "do not match"),
        (lambda i: setattr(i, "dimensions", (100_000, 100_000)), "100000 x 100000"),
        (lambda i: setattr(i, "patch_size", 128), "128 px patches"),
        (lambda i: setattr(i, "threshold", 1.0), "threshold 1"),
    ],
)
def test_a_bad_tile_index_cache_is_discarded_and_rebuilt(
    tmp_path: Path, tamper, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    path, cache = _cached_tissue_slide(tmp_path)
    slide = open_slide(path)
    try:
        good = tile_slide(slide, 256, 1.0, cache_dir=cache)
        (cached,) = cache.glob("*.npz")
        bad = PatchIndex.load(cached)
        tamper(bad)
        bad.save(cached)
        with caplog.at_level("WARNING", logger="pathviewer.core.tiling"):
            again = tile_slide(slide, 256, 1.0, cache_dir=cache)
    finally:
        slide.close()
    np.testing.assert_array_equal(again.coords, good.coords)
    np.testing.assert_allclose(again.scores, good.scores)
    (line,) = [r.getMessage() for r in caplog.records if "tile-index cache" in r.getMessage()]
    assert "slide.bmp" in line and "discarded" in line and problem in line
    # The rebuilt index replaced the bad file.
    np.testing.assert_array_equal(PatchIndex.load(cached).coords, good.coords)


def test_the_tile_index_cache_is_keyed_by_content_and_settings(tmp_path: Path) -> None:
    from PIL import Image

    path, cache = _cached_tissue_slide(tmp_path)
    with closing(open_slide(path)) as slide:
        first = tile_slide(slide, 256, 1.0, cache_dir=cache)
        tile_slide(slide, 256, 1.0, threshold=20.0, cache_dir=cache)
        tile_slide(slide, 256, 2.0, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 3  # threshold and read downsample are in the key
    # Another image in its place: same path, size and modification time (as ``cp -p`` leaves).
    stat = path.stat()
    moved = np.full((768, 768, 3), 240, np.uint8)
    moved[:256, :256] = _tissue(np.random.default_rng(6), 256, 256)
    Image.fromarray(moved).save(path, format="BMP")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    with closing(open_slide(path)) as slide:
        second = tile_slide(slide, 256, 1.0, cache_dir=cache)
    assert first.coords.tolist() == [[256, 256], [512, 256], [256, 512], [512, 512]]
    assert second.coords.tolist() == [[0, 0]]
