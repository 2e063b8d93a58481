"""Heatmaps out (QuPath tiles, ASAP likelihood map, TIFF, CSV) and back in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pathviewer.core.heatmap import Heatmap
from pathviewer.core.heatmap_export import (
    HeatmapExportError,
    map_factor,
    read_heatmap_file,
    write_probability_tiff,
    write_qupath_tiles,
    write_table,
)
from pathviewer.core.predictions import SlideOutput, write_predictions

DIMS = (4000, 3000)
PATCH = 128


def _heatmap(slide: str = "slide.svs", dims: tuple[int, int] = DIMS) -> Heatmap:
    rows, cols = dims[1] // PATCH, dims[0] // PATCH
    rng = np.random.default_rng(1)
    probs = rng.random((rows, cols)).astype(np.float32)
    probs[::3, ::4] = np.nan  # unscored background
    return Heatmap(slide, dims, (0, 0), (PATCH, PATCH), probs, method="ngsd")


@pytest.mark.parametrize("fmt", ["qupath", "csv"])
def test_exported_cells_read_back_as_the_same_heatmap(tmp_path: Path, fmt: str) -> None:
    heatmap = _heatmap()
    path = tmp_path / ("t.geojson" if fmt == "qupath" else "t.csv")
    count = (write_qupath_tiles if fmt == "qupath" else write_table)(heatmap, path)
    assert count == int(np.isfinite(heatmap.probs).sum())
    back = read_heatmap_file(path, heatmap.slide, DIMS)
    assert back.shape == heatmap.shape and back.patch_size == heatmap.patch_size
    np.testing.assert_allclose(back.probs, heatmap.probs, atol=1e-6, equal_nan=True)


def test_qupath_tiles_are_tile_objects_with_a_measurement(tmp_path: Path) -> None:
    path = tmp_path / "t.geojson"
    write_qupath_tiles(_heatmap(), path)
    feature = json.loads(path.read_text())["features"][0]
    props = feature["properties"]
    assert props["objectType"] == "tile"
    assert set(props["measurements"]) == {"Tumor probability"}


def test_asap_likelihood_map_has_the_slides_downsamples(tmp_path: Path) -> None:
    heatmap = _heatmap(dims=(16000, 12000))
    # A slide pyramid with factor-4 levels, as an SVS has (ASAP misaligns factor-2 maps on it).
    dims = [(16000, 12000), (4000, 3000), (1000, 750), (250, 187)]
    downsamples = [1.0, 4.0, 16.0, 16000 / 250]
    path = tmp_path / "slide_likelihood_map.tif"
    sizes = write_probability_tiff(heatmap, path, dims, downsamples, mpp=0.5, kind="asap")
    factor = map_factor(heatmap)
    # the levels a map of >= 64 px can follow: each the slide level integer-divided by the one
    # factor (ASAP reads the scale as slide // map: a rounded-up side would change it)
    assert sizes == [(w // factor, h // factor) for w, h in dims[:2]]
    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        assert len(pages) == 2
        assert [p.shape[::-1] for p in pages] == sizes
        assert pages[0].dtype == np.float32
        level0 = pages[0].asarray()
        ratio = [pages[0].shape[1] / p.shape[1] for p in pages]
    np.testing.assert_allclose(ratio, downsamples[:2], rtol=0.01)
    # map pixel at the centre of cell (r, c) holds that cell's probability (0 where unscored)
    r, c = 5, 7
    v = level0[int((r + 0.5) * PATCH / factor), int((c + 0.5) * PATCH / factor)]
    assert v == pytest.approx(float(np.nan_to_num(heatmap.probs[r, c])))


def test_probability_tiff_opens_in_openslide_aligned_with_the_slide(tmp_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    heatmap = _heatmap(dims=(8000, 6000))
    path = tmp_path / "slide_probability.tif"
    dims = [(8000, 6000), (4000, 3000), (2000, 1500)]
    write_probability_tiff(heatmap, path, dims, [1.0, 2.0, 4.0], mpp=0.25, kind="tiff")
    slide = openslide.OpenSlide(str(path))
    factor = map_factor(heatmap)
    assert slide.level_count == 2  # 250 px, 125 px, then 62 px: under the 64 px floor
    assert slide.level_dimensions == ((250, 187), (125, 93))  # 6000 // 32, 3000 // 32
    assert slide.level_downsamples[1] == pytest.approx(2.0, rel=0.01)
    assert factor == 32
    slide.close()


def test_a_map_for_another_slide_is_refused(tmp_path: Path) -> None:
    with pytest.raises(HeatmapExportError, match="4000 x 3000 slide"):
        write_probability_tiff(_heatmap(), tmp_path / "x.tif", [(500, 500)], [1.0], None)
    assert not (tmp_path / "x.tif").exists()


def test_off_grid_or_foreign_patches_are_named(tmp_path: Path) -> None:
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("x,y,width,height,value\n0,0,128,128,0.5\n64,0,128,128,0.5\n")
    with pytest.raises(HeatmapExportError, match="patch 2 .* off the grid"):
        read_heatmap_file(csv_path, "s", DIMS)
    csv_path.write_text("x,y,width,height,value\n0,0,128,128,0.5\n8960,0,128,128,0.5\n")
    with pytest.raises(HeatmapExportError, match="another slide"):
        read_heatmap_file(csv_path, "s", DIMS)
    csv_path.write_text("x,y,width,height,value\n0,0,128,128,1.5\n")
    with pytest.raises(HeatmapExportError, match="row 2: value 1.5 is not in"):
        read_heatmap_file(csv_path, "s", DIMS)


def _predictions(tmp_path: Path, slide: str, dims: tuple[int, int]) -> Path:
    heatmap = _heatmap(slide, dims)
    boxes = np.array([row[:4] for row in _rows(heatmap)], np.int64).reshape(-1, 4)
    probs = np.array([row[4] for row in _rows(heatmap)], np.float32)
    out = tmp_path / "pred"
    write_predictions(out, [SlideOutput(slide, 0.7, boxes, probs, heatmap)], {"method": "ngsd"})
    return out


def _rows(heatmap: Heatmap) -> list[tuple[int, int, int, int, float]]:
    from pathviewer.core.heatmap_export import cell_rows

    return cell_rows(heatmap)


def test_cli_exports_every_format_for_a_real_slide(tmp_path: Path, cmu_small: Path) -> None:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(cmu_small)) as slide:
        dims = slide.dimensions
    pred = _predictions(tmp_path, str(cmu_small), dims)
    for fmt, name in [
        ("qupath", "CMU-1-Small-Region.tiles.geojson"),
        ("asap", "CMU-1-Small-Region_likelihood_map.tif"),
        ("tiff", "CMU-1-Small-Region_probability.tif"),
        ("csv", "CMU-1-Small-Region.patches.csv"),
    ]:
        out = tmp_path / fmt
        result = subprocess.run(
            [sys.executable, "-m", "pathviewer", "export", "heatmap", str(pred),
             "--format", fmt, "--out", str(out)],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert [p.name for p in out.iterdir()] == [name]


def test_cli_names_a_missing_slide_and_writes_nothing(tmp_path: Path) -> None:
    pred = _predictions(tmp_path, "gone/slide.svs", DIMS)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pathviewer", "export", "heatmap", str(pred),
         "--format", "asap", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("gone/slide.svs: slide file not found (give --cohort)")
    )
    assert "Traceback" not in result.stderr and not out.exists()


def test_tumour_contours_follow_the_cells_and_carry_their_probabilities(tmp_path) -> None:
    import shapely

    from pathviewer.core.annotations import read_annotations
    from pathviewer.core.heatmap import Heatmap
    from pathviewer.core.heatmap_export import tumour_contours, write_heatmap

    probs = np.full((6, 8), 0.1, np.float32)
    probs[1:3, 1:4] = 0.8  # a 2 x 3 region
    probs[2, 2] = 0.95
    probs[4, 6] = 0.6  # a single cell
    probs[5, 0] = np.nan
    heatmap = Heatmap("s.svs", (800, 600), (10, 20), (100, 100), probs)
    big, small = tumour_contours(heatmap)
    assert big.geometry.equals(shapely.box(110, 120, 410, 320))
    assert big.class_name == "Tumor" and big.measurements["Patches"] == 6
    assert big.measurements["Max tumor probability"] == pytest.approx(0.95)
    assert small.geometry.equals(shapely.box(610, 420, 710, 520))
    for fmt, name in (("contours", "s.tumour.geojson"), ("contours-asap", "s.tumour.xml")):
        assert write_heatmap(heatmap, tmp_path / name, fmt) == 2
        back = read_annotations(tmp_path / name)
        assert sorted(a.geometry.area for a in back) == [10_000, 60_000]
