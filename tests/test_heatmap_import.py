"""CLAM h5 and Slideflow npz heatmaps in, through read_heatmap_file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pathviewer.core.heatmap import Heatmap
from pathviewer.core.heatmap_export import (
    HeatmapExportError,
    HeatmapImportOptions,
    PatchSizeNeeded,
    foreign_heatmap_kind,
    read_heatmap_file,
)
from pathviewer.core.heatmap_import import PERCENTILE_WARNING, slideflow_grid_shape

DIMS = (8192, 6144)
#: A slide with factor-4 levels, as an SVS has.
DOWNSAMPLES = (1.0, 4.0, 16.0)


def _clam_h5(
    path: Path,
    coords: np.ndarray,
    scores: np.ndarray,
    attrs: dict[str, int] | None = None,
    score_name: str = "attention_scores",
) -> Path:
    """A CLAM file as its heatmap code writes it: (N, 2) int coords, (N, 1) float scores."""
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("coords", data=np.asarray(coords, np.int64))
        for key, value in (attrs or {}).items():
            dataset.attrs[key] = value
        h5.create_dataset(score_name, data=np.asarray(scores, np.float32).reshape(-1, 1))
    return path


def _grid_coords(origin: tuple[int, int], step: int, cols: int, rows: int) -> np.ndarray:
    return np.array(
        [(origin[0] + c * step, origin[1] + r * step) for r in range(rows) for c in range(cols)]
    )


def test_clam_patches_land_on_their_cells(tmp_path: Path) -> None:
    # patch_size 256 at level 1 (downsample 4): 1024 level-0 px; CLAM's grid starts at the
    # tissue's corner, not at (0, 0).
    coords = _grid_coords((100, 200), 1024, 5, 4)
    scores = np.linspace(0.05, 0.95, len(coords))
    path = _clam_h5(tmp_path / "s.h5", coords, scores, {"patch_size": 256, "patch_level": 1})
    heatmap = read_heatmap_file(path, "s.svs", DIMS, HeatmapImportOptions(DOWNSAMPLES))
    assert heatmap.patch_size == (1024, 1024)
    assert heatmap.origin == (100, 200)
    assert heatmap.warnings == ()
    for (x, y), score in zip(coords, scores, strict=True):
        assert heatmap.value_at(x + 512, y + 512) == pytest.approx(score)
        assert heatmap.value_at(x + 1023, y + 1023) == pytest.approx(score)
    assert np.isnan(heatmap.value_at(50, 50))  # before the first patch
    assert int(np.isfinite(heatmap.probs).sum()) == len(coords)


def test_clam_raw_attention_is_shown_as_percentiles(tmp_path: Path) -> None:
    coords = _grid_coords((0, 0), 512, 4, 1)
    raw = np.array([-3.0, 12.5, 0.2, 40.0])  # raw attention: not probabilities
    path = _clam_h5(tmp_path / "a.h5", coords, raw, {"patch_size": 512, "patch_level": 0})
    heatmap = read_heatmap_file(path, "s", DIMS)
    values = [heatmap.value_at(x + 1, y + 1) for x, y in coords]
    np.testing.assert_allclose(values, [0.0, 2 / 3, 1 / 3, 1.0], atol=1e-6)
    assert heatmap.warnings == (PERCENTILE_WARNING,)


def test_clam_overlapping_patches_become_cells_centred_on_them(tmp_path: Path) -> None:
    # 512 px patches every 256 px (CLAM heatmaps with overlap 0.5).
    coords = _grid_coords((0, 0), 256, 6, 3)
    scores = np.linspace(0.0, 1.0, len(coords))
    path = _clam_h5(tmp_path / "o.h5", coords, scores, {"patch_size": 512, "patch_level": 0})
    heatmap = read_heatmap_file(path, "s", DIMS)
    assert heatmap.patch_size == (256, 256)
    assert heatmap.origin == (128, 128)
    for (x, y), score in zip(coords, scores, strict=True):
        assert heatmap.value_at(x + 256, y + 256) == pytest.approx(score)  # the patch centre


def test_clam_overlapping_patches_up_to_the_slide_edge_keep_their_last_cells(
    tmp_path: Path,
) -> None:
    # 256 px patches every 128 px, the last column starting 6 px before the right edge: its
    # centred cell lies past the slide, as a padded border patch does.
    coords = _grid_coords((0, 0), 128, 9, 5)
    scores = np.linspace(0.0, 1.0, len(coords))
    path = _clam_h5(tmp_path / "e.h5", coords, scores, {"patch_size": 256, "patch_level": 0})
    heatmap = read_heatmap_file(path, "s", (1030, 700))
    for (x, y), score in zip(coords, scores, strict=True):
        assert heatmap.value_at(x + 128, y + 128) == pytest.approx(score)  # the patch centre
    assert int(np.isfinite(heatmap.probs).sum()) == len(coords)


def test_clam_named_dataset_and_given_patch_size(tmp_path: Path) -> None:
    coords = _grid_coords((0, 0), 300, 3, 2)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    path = _clam_h5(tmp_path / "n.h5", coords, scores, score_name="tumour_prob")
    with pytest.raises(HeatmapExportError, match=r"n\.h5: .*datasets: coords, tumour_prob"):
        read_heatmap_file(path, "s", DIMS)
    with pytest.raises(PatchSizeNeeded, match=r"n\.h5: the patch size is unknown"):
        read_heatmap_file(path, "s", DIMS, HeatmapImportOptions(dataset="tumour_prob"))
    heatmap = read_heatmap_file(
        path, "s", DIMS, HeatmapImportOptions(patch_size=300, dataset="tumour_prob")
    )
    assert heatmap.value_at(650, 350) == pytest.approx(0.6)
    with pytest.raises(HeatmapExportError, match=r"no dataset 'nope' \(datasets: coords"):
        read_heatmap_file(path, "s", DIMS, HeatmapImportOptions(patch_size=300, dataset="nope"))


def test_clam_bad_files_get_one_line_naming_them(tmp_path: Path) -> None:
    coords = _grid_coords((0, 0), 1024, 3, 1)
    coords[2] = (9216, 0)  # beyond the 8192 px wide slide
    path = _clam_h5(
        tmp_path / "far.h5", coords, [0.1, 0.2, 0.3], {"patch_size": 1024, "patch_level": 0}
    )
    with pytest.raises(HeatmapExportError, match=r"far\.h5: patch 3 at \(9216, 0\) lies outside"):
        read_heatmap_file(path, "s", DIMS)
    path = _clam_h5(
        tmp_path / "lvl.h5", coords[:2], [0.1, 0.2], {"patch_size": 256, "patch_level": 3}
    )
    with pytest.raises(HeatmapExportError, match=r"lvl\.h5: .*level 3.* 3 level"):
        read_heatmap_file(path, "s", DIMS, HeatmapImportOptions(DOWNSAMPLES))
    short = _clam_h5(
        tmp_path / "short.h5", coords, [0.1, 0.2], {"patch_size": 1024, "patch_level": 0}
    )
    with pytest.raises(HeatmapExportError, match=r"short\.h5: 'attention_scores' is \(2,\)"):
        read_heatmap_file(short, "s", DIMS)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(HeatmapExportError, match=r"text\.h5: cannot read as HDF5"):
        read_heatmap_file(text, "s", DIMS)
    with h5py.File(tmp_path / "nocoords.h5", "w") as h5:
        h5.create_dataset("A", data=np.zeros(3))
    with pytest.raises(HeatmapExportError, match=r"no 'coords' dataset.*datasets: A\)"):
        read_heatmap_file(tmp_path / "nocoords.h5", "s", DIMS)


# -- Slideflow ------------------------------------------------------------------------------

SF_DIMS = (60000, 40000)
TILE, STRIDE = 512, 256  # tile_um 256 at 0.5 mpp, stride_div 2


def _slideflow_npz(path: Path, predictions: np.ndarray, key: str = "predictions") -> Path:
    np.savez(path, **{key: predictions})  # what Heatmap.save_npz writes
    return path


def _slideflow_grid(classes: int = 2) -> np.ndarray:
    rows, cols = slideflow_grid_shape(SF_DIMS, TILE, STRIDE)
    rng = np.random.default_rng(3)
    grid = rng.random((rows, cols, classes)).astype(np.float32)
    grid[:5] = -1  # tiles without tissue
    return grid


def test_slideflow_grid_matches_its_tile_layout() -> None:
    # len(arange(0, width + 1 - tile, stride)), as Slideflow's WSI builds its grid.
    rows, cols = slideflow_grid_shape(SF_DIMS, TILE, STRIDE)
    assert cols == len(np.arange(0, SF_DIMS[0] + 1 - TILE, STRIDE)) == 233
    assert rows == len(np.arange(0, SF_DIMS[1] + 1 - TILE, STRIDE)) == 155


@pytest.mark.parametrize("given", [True, False])
def test_slideflow_tiles_land_on_cells_centred_on_them(tmp_path: Path, given: bool) -> None:
    grid = _slideflow_grid()
    path = _slideflow_npz(tmp_path / "slide.npz", grid)
    assert foreign_heatmap_kind(path) == "slideflow"
    options = HeatmapImportOptions(patch_size=TILE if given else None)
    heatmap = read_heatmap_file(path, "slide.svs", SF_DIMS, options)  # size inferred if not given
    assert heatmap.patch_size == (STRIDE, STRIDE)
    assert heatmap.origin == ((TILE - STRIDE) // 2,) * 2
    for row, col in [(5, 0), (7, 13), (154, 232), (100, 50)]:
        centre = (col * STRIDE + TILE / 2, row * STRIDE + TILE / 2)
        assert heatmap.value_at(*centre) == pytest.approx(grid[row, col, 1])  # the second class
    assert np.isnan(heatmap.value_at(TILE / 2, TILE / 2))  # -1: not scored
    assert int(np.isfinite(heatmap.probs).sum()) == int((grid[:, :, 1] != -1).sum())


def test_slideflow_classes_and_old_logits(tmp_path: Path) -> None:
    grid = _slideflow_grid(classes=3)
    path = _slideflow_npz(tmp_path / "three.npz", grid, key="logits")
    with pytest.raises(HeatmapExportError, match=r"three\.npz: predictions of 3 classes"):
        read_heatmap_file(path, "s", SF_DIMS)
    heatmap = read_heatmap_file(path, "s", SF_DIMS, HeatmapImportOptions(class_index=0))
    assert heatmap.value_at(10 * STRIDE + 256, 9 * STRIDE + 256) == pytest.approx(grid[9, 10, 0])
    with pytest.raises(HeatmapExportError, match=r"no class 3 \(the file has 3\)"):
        read_heatmap_file(path, "s", SF_DIMS, HeatmapImportOptions(class_index=3))


def test_slideflow_grid_that_does_not_fit_the_slide_is_refused(tmp_path: Path) -> None:
    path = _slideflow_npz(tmp_path / "other.npz", _slideflow_grid())
    with pytest.raises(HeatmapExportError, match=r"other\.npz: a 155 x 233 tile grid does not fit"):
        read_heatmap_file(path, "s", (30000, 40000), HeatmapImportOptions(patch_size=TILE))
    with pytest.raises(HeatmapExportError, match=r"other\.npz: a 155 x 233 tile grid fits no"):
        read_heatmap_file(path, "s", (3000, 2000))
    # A small grid on a small slide fits several strides: the tile size must be given.
    small = _slideflow_npz(tmp_path / "small.npz", np.full((10, 18), 0.5, np.float32))
    with pytest.raises(PatchSizeNeeded, match=r"small\.npz: .*give the tile size"):
        read_heatmap_file(small, "s", (5000, 3000))
    assert read_heatmap_file(
        small, "s", (5000, 3000), HeatmapImportOptions(patch_size=512)
    ).patch_size == (256, 256)


def test_pathviewer_npz_is_not_taken_for_slideflow(tmp_path: Path) -> None:
    heatmap = Heatmap("s", (512, 512), (0, 0), (256, 256), np.zeros((2, 2), np.float32))
    heatmap.save(tmp_path / "own.npz")
    assert foreign_heatmap_kind(tmp_path / "own.npz") is None
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK not a zip")
    assert foreign_heatmap_kind(broken) is None
    np.savez(tmp_path / "misc.npz", other=np.zeros(3))
    assert foreign_heatmap_kind(tmp_path / "misc.npz") is None
