"""Realistic synthetic cohort: real texture, a tumour that differs only by its change, stains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import shape

from pathviewer.core.errors import PathViewerError
from pathviewer.core.progress import run_job
from pathviewer.core.realistic import (
    ScanLook,
    TumourChange,
    apply_tumour_change,
    generate_realistic_cohort,
    load_texture,
    make_realistic_atlases,
    tissue_cells,
)
from pathviewer.core.slide import open_slide
from pathviewer.core.synth import NORMAL, STROMA, TUMOUR


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("realistic")
    return run_job(generate_realistic_cohort(out, n_slides=4, seed=2, size=2048))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_texture_is_real_tissue() -> None:
    texture = load_texture()
    assert texture.dtype == np.uint8 and min(texture.shape[:2]) >= 1024
    cells, haem = tissue_cells(texture)
    assert len(cells) >= 8 and np.all(np.isfinite(haem))
    # Real H&E: haematoxylin-rich and eosin-rich crops both occur.
    assert haem.max() > 1.5 * haem.min()


def test_tumour_differs_from_normal_only_by_the_change() -> None:
    atlases = make_realistic_atlases(seed=1, strength=0.5, size=1024)
    normal = atlases.levels[NORMAL][0][:1024, :1024]
    tumour = atlases.levels[TUMOUR][0][:1024, :1024]
    unchanged = make_realistic_atlases(seed=1, strength=0.0, size=1024)
    np.testing.assert_array_equal(unchanged.levels[TUMOUR][0], unchanged.levels[NORMAL][0])
    # Same texture in the same place (strongly correlated) but more haematoxylin, less eosin.
    corr = np.corrcoef(normal[..., 1].ravel(), tumour[..., 1].ravel())[0, 1]
    assert corr > 0.8
    assert tumour[..., 0].mean() > 1.1 * normal[..., 0].mean()
    assert tumour[..., 1].mean() < normal[..., 1].mean()
    assert not np.array_equal(atlases.levels[STROMA][0], atlases.levels[NORMAL][0])


def test_change_grows_with_strength() -> None:
    rng = np.random.default_rng(0)
    conc = np.zeros((256, 256, 3), np.float32)
    conc[..., 0], conc[..., 1] = 0.1, 0.3
    for y, x in rng.integers(10, 246, (40, 2)):
        conc[y - 3 : y + 4, x - 3 : x + 4, 0] = rng.uniform(0.7, 1.0)
    means = [
        apply_tumour_change(conc, TumourChange.from_strength(s), np.random.default_rng(1))[
            ..., 0
        ].mean()
        for s in (0.0, 0.5, 1.0)
    ]
    assert means[0] == pytest.approx(conc[..., 0].mean())
    assert means[0] < means[1] < means[2]
    with pytest.raises(PathViewerError, match="strength"):
        TumourChange.from_strength(1.5)


def test_cohort_files_ground_truth_and_tumour_fraction(cohort: Path) -> None:
    lines = cohort.read_text().splitlines()
    assert lines[0] == "slide,label,split,annotations" and len(lines) == 5
    labels = {}
    for line in lines[1:]:
        name, label, _split, geo = line.split(",")
        labels[name] = int(label)
        slide = open_slide(cohort.parent / name)
        assert slide.dimensions == (2048, 2048)
        assert slide.mpp == pytest.approx((0.5, 0.5))
        slide.close()
        features = json.loads((cohort.parent / geo).read_text())["features"]
        tumour = [
            shape(f["geometry"])
            for f in features
            if f["properties"]["classification"]["name"] == "Tumor"
        ]
        assert bool(tumour) == bool(int(label))
    assert sorted(labels.values()) == [0, 0, 1, 1]


def test_tumour_fraction_bounds_are_respected() -> None:
    from pathviewer.core.realistic import make_realistic_layout

    for seed in range(6):
        rng = np.random.default_rng(seed)
        layout = make_realistic_layout(rng, 6144, True, (0.02, 0.2))
        share = layout.tumour_region.area / layout.tissue_region.area
        assert 0.01 < share < 0.3, share
        assert shapely.is_valid(layout.tumour_region)


def test_slides_differ_in_stain_and_cohorts_are_reproducible(cohort: Path, tmp_path: Path) -> None:
    looks = [ScanLook.draw(np.random.default_rng([2, i, 9])) for i in range(1, 5)]
    assert len({round(float(look.amount[0]), 3) for look in looks}) == 4
    assert np.ptp([look.stain[0, 0] for look in looks]) > 0.01
    again = run_job(generate_realistic_cohort(tmp_path, n_slides=4, seed=2, size=2048))
    for name in ("slide_01.tif", "slide_03.tif", "cohort.csv"):
        assert _md5(cohort.parent / name) == _md5(again.parent / name)


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(PathViewerError, match="tumour fraction"):
        run_job(generate_realistic_cohort(tmp_path / "a", tumour_fraction=(0.3, 0.1)))
    with pytest.raises(PathViewerError, match="stain variation"):
        run_job(generate_realistic_cohort(tmp_path / "b", stain_variation=-1))
    with pytest.raises(PathViewerError, match="strength"):
        run_job(generate_realistic_cohort(tmp_path / "c", strength=2.0))
    with pytest.raises(PathViewerError, match="not found"):
        run_job(generate_realistic_cohort(tmp_path / "d", texture=tmp_path / "missing.svs"))
    assert not [p for p in tmp_path.iterdir() if p.name in "abcd"]  # nothing written


def test_texture_from_a_users_slide(cmu_small: Path) -> None:
    texture = load_texture(cmu_small, max_side=1536)
    assert texture.shape[0] == texture.shape[1] == 1536
    # The window sits on tissue, not glass.
    od = -np.log10(np.maximum(texture.astype(np.float32), 1) / 255).sum(-1)
    assert (od > 0.15).mean() > 0.5


def test_synth_cli_styles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pathviewer.cli import main

    assert main(["synth", str(tmp_path / "r"), "--slides", "2", "--size", "1024", "-q"]) == 0
    assert "realistic" in open_slide(tmp_path / "r" / "slide_01.tif").properties.get(
        "tiff.ImageDescription", ""
    )
    assert (
        main(["synth", str(tmp_path / "s"), "--style", "stylised", "--slides", "2", "-q",
              "--size", "1024"])
        == 0
    )  # fmt: skip
    code = main(["synth", str(tmp_path / "x"), "--tumour-fraction", "a,b", "-q"])
    assert code == 2 and "--tumour-fraction" in capsys.readouterr().err
