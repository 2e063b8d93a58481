"""Heatmaps that travel, on the real CMU-1-Small-Region scan: export -> re-import gives the same
heatmap, and other tools' files (CLAM, Slideflow) convert through ``pathviewer export heatmap``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pathviewer.cli import main
from pathviewer.core.heatmap import Heatmap
from pathviewer.core.heatmap_export import (
    HeatmapImportOptions,
    cell_rows,
    read_heatmap_file,
    write_heatmap,
)
from pathviewer.core.heatmap_import import slideflow_grid_shape

PATCH = 256


@pytest.fixture
def slide_dims(cmu_small: Path) -> tuple[int, int]:
    openslide = pytest.importorskip("openslide")
    with openslide.OpenSlide(str(cmu_small)) as slide:
        return tuple(slide.dimensions)  # type: ignore[return-value]


def _heatmap(slide: Path, dims: tuple[int, int]) -> Heatmap:
    """Scores with full float32 precision, cells past the slide's edge and unscored background."""
    rows, cols = -(-dims[1] // PATCH), -(-dims[0] // PATCH)
    probs = np.random.default_rng(7).random((rows, cols)).astype(np.float32)
    probs[::2, ::3] = np.nan
    probs[0, 0] = np.float32(1 / 3)  # no short decimal
    return Heatmap(str(slide), dims, (0, 0), (PATCH, PATCH), probs, method="ngsd")


@pytest.mark.parametrize(("fmt", "name"), [("qupath", "tiles.geojson"), ("csv", "patches.csv")])
def test_exported_heatmap_reads_back_equal_on_a_real_slide(
    tmp_path: Path, cmu_small: Path, slide_dims: tuple[int, int], fmt: str, name: str
) -> None:
    heatmap = _heatmap(cmu_small, slide_dims)
    path = tmp_path / f"CMU-1-Small-Region.{name}"
    write_heatmap(heatmap, path, fmt)
    back = read_heatmap_file(path, str(cmu_small), slide_dims)
    assert back.shape == heatmap.shape and back.patch_size == heatmap.patch_size
    assert back.origin == heatmap.origin
    # equal, not close: every float32 score survives the text
    assert np.array_equal(back.probs, heatmap.probs, equal_nan=True)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _clam(path: Path, dims: tuple[int, int]) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CLAM heatmap h5 (its heatmap code writes no patch size) of patches on the tissue grid."""
    coords = np.array(
        [(x, y) for y in range(0, dims[1] - PATCH, PATCH) for x in range(0, dims[0] - PATCH, PATCH)]
    )
    scores = np.random.default_rng(3).random(len(coords)).astype(np.float32)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("coords", data=coords.astype(np.int64))
        h5.create_dataset("attention_scores", data=scores.reshape(-1, 1))
    return path, coords, scores


def test_clam_h5_converts_to_qupath_tiles_for_its_slide(
    tmp_path: Path, cmu_small: Path, slide_dims: tuple[int, int], capsys
) -> None:
    source, coords, scores = _clam(tmp_path / "clam.h5", slide_dims)
    out = tmp_path / "out"
    code, _out, err = _run(
        capsys, "export", "heatmap", str(source), "--slide", str(cmu_small),
        "--format", "qupath", "--out", str(out),
    )  # fmt: skip
    assert code == 2 and not out.exists()
    (line,) = err.strip().splitlines()
    assert str(source) in line and "--patch-size" in line
    code, printed, err = _run(
        capsys, "export", "heatmap", str(source), "--slide", str(cmu_small),
        "--format", "qupath", "--out", str(out), "--patch-size", str(PATCH),
    )  # fmt: skip
    assert code == 0, err
    written = out / "CMU-1-Small-Region.tiles.geojson"
    assert printed.strip() == str(written)
    back = read_heatmap_file(written, str(cmu_small), slide_dims)
    cols, rows = coords[:, 0] // PATCH, coords[:, 1] // PATCH
    assert np.array_equal(back.probs[rows, cols], scores)  # each patch on its cell
    assert int(np.isfinite(back.probs).sum()) == len(scores)


def test_slideflow_npz_converts_with_its_class_and_stride(
    tmp_path: Path, cmu_small: Path, slide_dims: tuple[int, int], capsys
) -> None:
    tile, divisor = 300, 3
    stride = tile // divisor
    rows, cols = slideflow_grid_shape(slide_dims, tile, stride)
    grid = np.random.default_rng(5).random((rows, cols, 3)).astype(np.float32)
    grid[0, 0] = -1.0  # Slideflow's unscored tile
    source = tmp_path / "slideflow.npz"
    np.savez(source, predictions=grid)
    out = tmp_path / "out"
    base = ["export", "heatmap", str(source), "--slide", str(cmu_small), "--out", str(out)]
    code, _out, err = _run(capsys, *base, "--format", "csv", "--patch-size", str(tile))
    assert code == 2 and "which class" in err and not out.exists()
    code, _out, err = _run(
        capsys, *base, "--format", "csv", "--patch-size", str(tile), "--class", "1",
        "--stride-div", str(divisor),
    )  # fmt: skip
    assert code == 0, err
    back = read_heatmap_file(out / "CMU-1-Small-Region.patches.csv", str(cmu_small), slide_dims)
    options = HeatmapImportOptions(patch_size=tile, class_index=1, stride_div=divisor)
    direct = read_heatmap_file(source, str(cmu_small), slide_dims, options)
    assert direct.patch_size == (stride, stride)
    assert direct.origin == ((tile - stride) // 2,) * 2  # cells centred on their tiles
    assert cell_rows(back) == cell_rows(direct)  # the same cells, boxes and scores
    first = cell_rows(direct)[0]
    assert first[:2] == (stride + direct.origin[0], direct.origin[1])  # tile (0, 0) unscored
    assert first[4] == pytest.approx(float(grid[0, 1, 1]))


def test_export_heatmap_file_options_are_checked(tmp_path: Path, cmu_small: Path, capsys) -> None:
    source, _coords, _scores = _clam(tmp_path / "clam.h5", (2220, 2967))
    predictions = tmp_path / "preds"
    predictions.mkdir()
    out = tmp_path / "out"
    cases = [
        (["export", "heatmap", str(source), "--format", "qupath", "--out", str(out)],
         "give its slide file with --slide"),
        (["export", "heatmap", str(tmp_path / "gone.h5"), "--slide", str(cmu_small),
          "--format", "qupath", "--out", str(out)], "not found"),
        (["export", "heatmap", str(predictions), "--format", "qupath", "--out", str(out),
          "--patch-size", "256"], "--patch-size is for another tool's heatmap file"),
        (["export", "heatmap", str(source), "--slide", str(cmu_small), "--format", "qupath",
          "--out", str(out), "--patch-size", "0"], "patch size must be positive"),
        (["export", "heatmap", str(source), "--slide", str(cmu_small), "--format", "qupath",
          "--out", str(out), "--patch-size", "256", "--dataset", "scores"],
         "no dataset 'scores'"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _out, err = _run(capsys, *argv)
        assert code == 2, argv
        (line,) = err.strip().splitlines()
        assert message in line and "Traceback" not in err, line
        assert not out.exists()


def asap_overlay_problem(
    slide_levels: list[tuple[int, int]], map_levels: list[tuple[int, int]]
) -> str | None:
    """What ASAP (computationalpathologygroup/ASAP, master) does with a likelihood map, or None.

    Restates, not copies, ASAP's own rules: VisualizationWorkstationExtensionPlugin::
    loadNewForegroundImage shows the overlay only when the slide's width and height, integer-
    divided by the map's, give one scale; IOWorker::getForegroundTile then draws slide level
    ``j`` from map level ``j - getBestLevelForDownSample(scale)``, clamped with ``>`` (so a
    level one past the map's last is read: getLevelDimensions returns nothing there), and places
    the map by the ratio of level widths in both axes.
    """
    (width, height), (map_width, map_height) = slide_levels[0], map_levels[0]
    if width // map_width != height // map_height:
        return f"refused: {width}//{map_width} != {height}//{map_height}"
    scale = width // map_width
    downsamples = [width / w for w, _h in slide_levels]
    best = len(slide_levels) - 1  # MultiResolutionImage::getBestLevelForDownSample
    if scale < 1.0:
        best = 0
    else:
        for i in range(1, len(slide_levels)):
            if scale < downsamples[i]:
                near = abs(downsamples[i] - scale) <= abs(downsamples[i - 1] - scale)
                best = i if near else i - 1
                break
    for level in range(len(slide_levels)):
        map_level = level - best
        if map_level > len(map_levels):
            map_level = len(map_levels) - 1
        elif map_level < 0:
            map_level = 0
        if map_level >= len(map_levels):
            return f"slide level {level} reads map level {map_level}, which does not exist"
    # ASAP stretches the map over the slide by the width ratio, in both axes: the map's height
    # must then cover the slide's to within one map pixel.
    if abs(map_height * width / map_width - height) > width / map_width:
        return f"a {map_width} x {map_height} map is not the shape of a {width} x {height} slide"
    return None


def _pyramid(dims: tuple[int, int], downsamples: list[int]) -> list[tuple[int, int]]:
    return [(dims[0] // d, dims[1] // d) for d in downsamples]


@pytest.mark.parametrize("patch", [256, 512, 64])
def test_asap_likelihood_map_passes_asaps_own_check_on_a_real_slide(
    tmp_path: Path, cmu_small: Path, slide_dims: tuple[int, int], patch: int
) -> None:
    import tifffile

    from pathviewer.core.slide import open_slide

    rows, cols = slide_dims[1] // patch, slide_dims[0] // patch
    probs = np.random.default_rng(2).random((rows, cols)).astype(np.float32)
    heatmap = Heatmap(str(cmu_small), slide_dims, (0, 0), (patch, patch), probs)
    path = tmp_path / "CMU-1-Small-Region_likelihood_map.tif"
    slide = open_slide(cmu_small)
    try:
        write_heatmap(heatmap, path, "asap", slide)
        slide_levels = [tuple(d) for d in slide.level_dimensions]
    finally:
        slide.close()
    with tifffile.TiffFile(path) as tif:
        map_levels = [(p.shape[1], p.shape[0]) for p in tif.pages]
        assert all(p.dtype == np.float32 and p.is_tiled for p in tif.pages)
    assert asap_overlay_problem(slide_levels, map_levels) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dims", "downsamples"),
    [
        ((46000, 32900), [1, 4, 16, 64]),  # an SVS: factor-4 levels
        ((100000, 220000), [1, 2, 4, 8, 16, 32, 64, 128, 256]),  # an MRXS: factor 2, many levels
        ((3001, 2999), [1]),  # one level, not a multiple of anything
    ],
)
def test_asap_likelihood_map_passes_asaps_own_check_on_slide_pyramids(
    tmp_path: Path, dims: tuple[int, int], downsamples: list[int]
) -> None:
    import tifffile

    from pathviewer.core.heatmap_export import write_probability_tiff

    levels = _pyramid(dims, downsamples)
    probs = np.full((dims[1] // 256, dims[0] // 256), 0.5, np.float32)
    heatmap = Heatmap("s.svs", dims, (0, 0), (256, 256), probs)
    path = tmp_path / "s_likelihood_map.tif"
    written = write_probability_tiff(
        heatmap, path, levels, [dims[0] / w for w, _h in levels], mpp=0.25, kind="asap"
    )
    with tifffile.TiffFile(path) as tif:
        map_levels = [(p.shape[1], p.shape[0]) for p in tif.pages]
    assert map_levels == written
    assert asap_overlay_problem(levels, map_levels) is None
    # each map level is its slide level divided by the one factor: the slide's downsamples
    factor = dims[0] // map_levels[0][0]
    for (w, h), (mw, mh) in zip(levels, map_levels, strict=False):
        assert (mw, mh) == (max(1, w // factor), max(1, h // factor))


def test_asaps_check_catches_what_asap_refuses() -> None:
    # the checker itself: rounded sizes that integer-divide to two scales, a missing level
    assert "refused" in asap_overlay_problem([(2220, 2967)], [(35, 46)])  # type: ignore[operator]
    # scale 1 (level 0 of the slide): slide level 3 would be drawn from map level 3 of 3
    problem = asap_overlay_problem(
        _pyramid((16000, 12000), [1, 4, 16, 64]), _pyramid((16000, 12000), [1, 4, 16])
    )
    assert problem is not None and "does not exist" in problem


def test_qupath_heatmaps_move_with_the_bounds_of_a_cropped_slide(tmp_path: Path) -> None:
    """QuPath shows an MRXS with bounds cropped to them: tiles and regions go out in QuPath's
    coordinates and QuPath tiles come back in OpenSlide's, as annotations do."""
    import json

    from pathviewer.core.annotations import read_annotations
    from pathviewer.core.slide import ArraySlide

    bounds = {"openslide.bounds-x": "320", "openslide.bounds-y": "128"}
    slide = ArraySlide(np.full((1024, 1024, 3), 200, np.uint8), properties=bounds)
    probs = np.full((16, 16), np.nan, np.float32)
    probs[6:10, 7:11] = 0.9  # one tumour region of 4 x 4 cells of 64 px
    heatmap = Heatmap("s.mrxs", (1024, 1024), (0, 0), (64, 64), probs)
    tiles = tmp_path / "s.tiles.geojson"
    write_heatmap(heatmap, tiles, "qupath", slide)
    features = json.loads(tiles.read_text())["features"]
    xs = [pt[0] for f in features for pt in f["geometry"]["coordinates"][0]]
    ys = [pt[1] for f in features for pt in f["geometry"]["coordinates"][0]]
    assert (min(xs), min(ys)) == (7 * 64 - 320, 6 * 64 - 128)  # in QuPath's cropped frame
    back = read_heatmap_file(
        tiles, "s.mrxs", (1024, 1024), HeatmapImportOptions(qupath_offset=(320.0, 128.0))
    )
    assert cell_rows(back) == cell_rows(heatmap)  # the same cells of the same slide
    for fmt, shift in (("contours", (320, 128)), ("contours-asap", (0, 0))):
        out = tmp_path / f"s.{fmt}.{'xml' if fmt.endswith('asap') else 'geojson'}"
        write_heatmap(heatmap, out, fmt, slide)
        (region,) = read_annotations(out)
        x0, y0, _x1, _y1 = region.geometry.bounds
        # ASAP shows the whole slide, so its regions keep OpenSlide's coordinates.
        assert (x0, y0) == (7 * 64 - shift[0], 6 * 64 - shift[1])
