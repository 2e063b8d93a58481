"""Synthetic cohort: OpenSlide-readable pyramids, ground truth that matches the pixels, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pathviewer.core.annotations import read_geojson, union_of_class
from pathviewer.core.cohort import read_cohort
from pathviewer.core.errors import PathViewerError
from pathviewer.core.progress import Progress, run_job
from pathviewer.core.slide import open_slide
from pathviewer.core.synth import (
    cohort_plan,
    generate_cohort,
    write_large_slide,
)

LEVEL = 2  # downsample 4: the coarse magnification the ML helpers read patches at


def _mask(geometry, width: int, height: int, downsample: float) -> np.ndarray:
    """Rasterise a (multi)polygon of level-0 px at ``downsample`` (pixel centres)."""
    image = Image.new("1", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for polygon in getattr(geometry, "geoms", [geometry]):
        if polygon.is_empty:
            continue
        draw.polygon(
            [(x / downsample - 0.5, y / downsample - 0.5) for x, y in polygon.exterior.coords],
            fill=1,
        )
        for hole in polygon.interiors:
            draw.polygon(
                [(x / downsample - 0.5, y / downsample - 0.5) for x, y in hole.coords], fill=0
            )
    return np.asarray(image, dtype=bool)


def _level_image(path: Path) -> tuple[np.ndarray, float]:
    slide = open_slide(path)
    try:
        width, height = slide.level_dimensions[LEVEL]
        return slide.read_region((0, 0), LEVEL, (width, height)), slide.level_downsamples[LEVEL]
    finally:
        slide.close()


def _tissue(rgb: np.ndarray) -> np.ndarray:
    """Stained pixels: glass is near-white and grey (low saturation)."""
    rgb = rgb.astype(np.int16)
    return (rgb.max(axis=2) - rgb.min(axis=2) > 25) | (rgb.mean(axis=2) < 200)


def test_slides_open_as_generic_tiff_with_pyramid_and_mpp(small_cohort: Path) -> None:
    entry = read_cohort(small_cohort)[0]
    slide = open_slide(entry.path)
    try:
        assert slide.vendor == "generic-tiff"
        assert slide.dimensions == (3072, 3072)
        assert slide.level_count >= 4
        assert slide.level_downsamples[:4] == pytest.approx((1.0, 2.0, 4.0, 8.0))
        assert slide.mpp == pytest.approx((0.5, 0.5))
        assert slide.objective_power == 20.0
        tile = slide.read_region((1024, 1024), 0, (256, 256))
        assert tile.shape == (256, 256, 3) and tile.dtype == np.uint8
    finally:
        slide.close()


def test_cohort_csv_columns_labels_and_splits(small_cohort: Path) -> None:
    with open(small_cohort, newline="", encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["slide", "label", "split", "annotations"]
    entries = read_cohort(small_cohort)  # also checks every referenced file exists
    assert len(entries) == 6
    assert sum(e.label == 1 for e in entries) == 3
    for split in ("train", "test"):
        assert {e.label for e in entries if e.split == split} == {0, 1}
    assert all(not Path(e.slide).is_absolute() for e in entries)


@pytest.mark.parametrize("n_slides", [4, 5, 6, 12, 21])
def test_plan_is_balanced_and_both_splits_hold_both_classes(n_slides: int) -> None:
    plan = cohort_plan(n_slides, seed=1)
    labels = [label for label, _ in plan]
    assert abs(sum(labels) - n_slides / 2) <= 0.5
    for split in ("train", "test"):
        assert {label for label, s in plan if s == split} == {0, 1}


def test_tumour_polygons_only_on_positives_inside_bounds_and_over_tissue(
    small_cohort: Path,
) -> None:
    for entry in read_cohort(small_cohort):
        assert entry.annotations is not None
        annotations = read_geojson(entry.annotations)
        tumour = [a for a in annotations if a.class_name == "Tumor"]
        assert all(a.object_type == "annotation" for a in annotations)
        if entry.label == 0:
            assert tumour == []
            continue
        assert tumour, f"{entry.slide} is positive but has no tumour polygon"
        region = union_of_class(annotations, "Tumor")
        minx, miny, maxx, maxy = region.bounds
        assert minx >= 0 and miny >= 0 and maxx <= 3072 and maxy <= 3072
        rgb, downsample = _level_image(entry.path)
        inside = _mask(region, rgb.shape[1], rgb.shape[0], downsample)
        assert inside.sum() > 0
        assert _tissue(rgb)[inside].mean() > 0.97
        # Each tumour blob spans several 256-px patches, so patch labels are meaningful.
        assert max(p.area for p in getattr(region, "geoms", [region])) > (3 * 256) ** 2


def test_tumour_covers_about_the_requested_fraction_of_tissue(small_cohort: Path) -> None:
    for entry in read_cohort(small_cohort):
        if entry.label != 1:
            continue
        rgb, downsample = _level_image(entry.path)
        tissue = _tissue(rgb)
        region = union_of_class(read_geojson(entry.annotations), "Tumor")
        inside = _mask(region, rgb.shape[1], rgb.shape[0], downsample)
        fraction = inside.sum() / tissue.sum()
        assert 0.12 < fraction < 0.4, f"{entry.slide}: tumour is {fraction:.2f} of tissue"


def _dark_fraction(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel 'nucleus' indicator: dark and bluish (haematoxylin)."""
    rgb = rgb.astype(np.int16)
    return ((rgb.mean(axis=2) < 140) & (rgb[..., 2] > rgb[..., 0] - 10)).astype(np.float32)


def test_tumour_texture_differs_learnably_at_coarse_magnification(small_cohort: Path) -> None:
    """At downsample 4, 32 x 32 px blocks (128 level-0 px) inside tumour polygons are darker.

    A single threshold on the share of nucleus pixels must separate tumour blocks from other
    tissue blocks well (AUC), which is what makes the cohort learnable for patch models.
    """
    tumour_scores: list[float] = []
    other_scores: list[float] = []
    for entry in read_cohort(small_cohort):
        rgb, downsample = _level_image(entry.path)
        tissue = _tissue(rgb)
        region = union_of_class(read_geojson(entry.annotations), "Tumor")
        inside = _mask(region, rgb.shape[1], rgb.shape[0], downsample)
        dark = _dark_fraction(rgb)
        block = 32
        for y in range(0, rgb.shape[0] - block + 1, block):
            for x in range(0, rgb.shape[1] - block + 1, block):
                cell = (slice(y, y + block), slice(x, x + block))
                if tissue[cell].mean() < 0.9:
                    continue
                share = inside[cell].mean()
                if share == 1.0:
                    tumour_scores.append(float(dark[cell].mean()))
                elif share == 0.0:
                    other_scores.append(float(dark[cell].mean()))
    assert len(tumour_scores) > 20 and len(other_scores) > 100
    tumour = np.array(tumour_scores)
    other = np.array(other_scores)
    auc = (tumour[:, None] > other[None, :]).mean() + 0.5 * (
        tumour[:, None] == other[None, :]
    ).mean()
    assert tumour.mean() > 1.5 * other.mean()
    assert auc > 0.9


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix in (".tif", ".geojson", ".csv")
    }


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path: Path) -> None:
    digests = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        run_job(generate_cohort(tmp_path / name, n_slides=2, seed=seed, size=1024))
        digests.append(_digest(tmp_path / name))
    assert len(digests[0]) == 5
    assert digests[0] == digests[1]
    assert digests[0]["slide_01.tif"] != digests[2]["slide_01.tif"]


def test_progress_events_and_cancel_leave_no_partial_files(tmp_path: Path) -> None:
    events: list[Progress] = []
    run_job(generate_cohort(tmp_path / "full", n_slides=2, seed=1, size=1024), events.append)
    assert events[-1].done == events[-1].total
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert len(events) >= 2 * 4  # at least one per tile row of level 0

    job = generate_cohort(tmp_path / "cancelled", n_slides=2, seed=1, size=1024)
    for _ in range(3):
        next(job)
    job.close()
    left = sorted(p.name for p in (tmp_path / "cancelled").iterdir())
    assert "cohort.csv" not in left
    assert not [name for name in left if name.endswith(".tif") or "partial" in name]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n_slides": 0}, "at least 2 slides"),
        ({"size": 100}, "at least 1024"),
        ({"tumour_fraction": 1.5}, "tumour fraction"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path: Path, kwargs: dict, words: str) -> None:
    with pytest.raises(PathViewerError, match=words):
        run_job(generate_cohort(tmp_path, **kwargs))


def test_large_slide_writer(tmp_path: Path) -> None:
    path = run_job(write_large_slide(tmp_path / "big.tif", size=2560, seed=3))
    slide = open_slide(path)
    try:
        assert slide.vendor == "generic-tiff"
        assert slide.dimensions == (2560, 2560)
        assert slide.level_count == 4
    finally:
        slide.close()
    assert [a.class_name for a in read_geojson(path.with_suffix(".geojson"))].count("Tumor") >= 1


def test_cli_synth_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pathviewer.cli import main

    out = tmp_path / "cli"
    assert main(["synth", str(out), "--slides", "2", "--seed", "4", "--size", "1024", "-q"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "cohort.csv")
    assert len(read_cohort(out / "cohort.csv")) == 2

    assert main(["synth", str(tmp_path / "bad"), "--slides", "0", "-q"]) == 2
    err = capsys.readouterr().err
    assert "at least 2 slides" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_demo_generates_once_without_gui(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pathviewer.core.realistic as realistic
    from pathviewer.cli import main
    from pathviewer.paths import demo_cohort_dir

    assert realistic.demo_settings()["n_slides"] >= 4
    monkeypatch.setattr(
        realistic, "demo_settings", lambda: {"n_slides": 2, "seed": 5, "size": 1024}
    )
    assert main(["demo", "--no-gui", "-q"]) == 0
    csv_path = Path(capsys.readouterr().out.strip())
    assert csv_path == demo_cohort_dir() / "cohort.csv"
    stamp = csv_path.stat().st_mtime_ns
    assert main(["demo", "--no-gui", "-q"]) == 0  # complete: not generated again
    assert csv_path.stat().st_mtime_ns == stamp
    assert not [p for p in demo_cohort_dir().parent.iterdir() if p.name.startswith(".demo")]
    assert main(["demo", "--no-gui", "-q", "--regenerate"]) == 0
    assert len(read_cohort(csv_path)) == 2


def test_ground_truth_polygons_agree_with_painted_classes() -> None:
    """The GeoJSON polygons, rasterised, match the class map the tiles were painted from."""
    from pathviewer.core.synth import (
        STROMA,
        TUMOUR,
        SlidePainter,
        annotations_for,
        make_atlases,
        make_layout,
    )

    layout = make_layout(np.random.default_rng([3, 1, 1]), 3072, 3072, True, 0.25)
    painter = SlidePainter(layout, make_atlases(3), (3, 1), levels=4)
    annotations = annotations_for(layout)
    for level in (0, 2):
        downsample = 2**level
        for cls, name in ((TUMOUR, "Tumor"), (STROMA, "Stroma")):
            region = union_of_class(annotations, name)
            # A window on the region's edge: both classes and the boundary are in it.
            edge = region.geoms[0].exterior if hasattr(region, "geoms") else region.exterior
            point = edge.interpolate(0.25, normalized=True)
            size = 256 if level == 0 else 768
            x = max(0, int(point.x / downsample) - size // 2)
            y = max(0, int(point.y / downsample) - size // 2)
            painted = painter.class_map(level, x, y, size) == cls
            shifted = _mask(
                shapely_translate(region, -x * downsample, -y * downsample),
                size,
                size,
                downsample,
            )
            assert 0 < painted.sum() < painted.size
            agreement = (painted == shifted).mean()
            assert agreement > 0.995, f"{name} level {level}: {agreement:.4f}"


def shapely_translate(geometry, dx: float, dy: float):
    from shapely import affinity

    return affinity.translate(geometry, dx, dy)
