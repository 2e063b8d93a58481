"""GeoJSON polish, geometry measurements, spatial index and patch labelling from regions."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, box

from pathviewer.core.annotations import Annotation
from pathviewer.core.geometry import (
    AnnotationIndex,
    area_um2,
    length_um,
    measure,
    patch_labels_from_regions,
    perimeter_um,
    simplify_for_display,
    tumour_overlap_fractions,
    vertex_count,
)

# --------------------------------------------------------------------------- overlap / labels


def test_tumour_overlap_fractions_exact_values() -> None:
    region = box(0, 0, 100, 100)
    boxes = [
        (0, 0, 50, 50),  # fully inside
        (75, 0, 50, 50),  # half inside
        (200, 200, 10, 10),  # outside
        (90, 90, 20, 20),  # a quarter inside
        (10, 10, 0, 0),  # degenerate
    ]
    fractions = tumour_overlap_fractions(region, boxes)
    assert fractions.dtype == np.float64
    np.testing.assert_allclose(fractions, [1.0, 0.5, 0.0, 0.25, 0.0])


def test_tumour_overlap_fractions_with_hole_and_empty_inputs() -> None:
    donut = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(25, 25), (75, 25), (75, 75)]])
    fractions = tumour_overlap_fractions(donut, [(25, 25, 50, 50)])
    # The hole is a triangle of half the box.
    np.testing.assert_allclose(fractions, [0.5])
    assert tumour_overlap_fractions(Polygon(), [(0, 0, 10, 10)]).tolist() == [0.0]
    assert tumour_overlap_fractions(donut, []).shape == (0,)
    with pytest.raises(ValueError):
        tumour_overlap_fractions(donut, [(1, 2, 3)])


def test_tumour_overlap_fractions_matches_scalar_loop() -> None:
    rng = np.random.default_rng(0)
    region = shapely.union_all([Point(rng.uniform(0, 1000, 2)).buffer(80) for _ in range(12)])
    xy = rng.uniform(-50, 1000, (300, 2))
    boxes = np.column_stack([xy, np.full(300, 64.0), np.full(300, 64.0)])
    fractions = tumour_overlap_fractions(region, boxes)
    expected = [box(x, y, x + w, y + h).intersection(region).area / (w * h) for x, y, w, h in boxes]
    np.testing.assert_allclose(fractions, expected, atol=1e-12)
    assert 0 < (fractions > 0).sum() < 300


def test_patch_labels_from_regions_area_majority() -> None:
    annotations = [
        Annotation(box(0, 0, 100, 100), "Tumor"),
        Annotation(box(100, 0, 200, 100), "Stroma"),
        Annotation(box(40, 0, 60, 10), "Tumor"),  # overlaps the first: must not double count
        Annotation(Point(5, 5).buffer(3), None),  # unclassified: ignored
        Annotation(LineString([(0, 0), (300, 300)]), "Other"),  # not a region: ignored
    ]
    boxes = [
        (0, 0, 50, 50),  # all tumour
        (70, 0, 50, 50),  # 60% tumour / 40% stroma
        (80, 0, 40, 50),  # 50% / 50%: no strict majority -> background
        (150, 50, 100, 100),  # 25% stroma -> background
        (120, 10, 20, 20),  # stroma
        (500, 500, 10, 10),  # nothing
    ]
    labels = patch_labels_from_regions(annotations, boxes, background_class="Normal")
    assert labels == ["Tumor", "Tumor", "Normal", "Normal", "Stroma", "Normal"]
    assert patch_labels_from_regions([], boxes[:2], "Bg") == ["Bg", "Bg"]
    assert patch_labels_from_regions(annotations, []) == []


# --------------------------------------------------------------------------- measurements


def test_measurements_in_microns() -> None:
    square = box(0, 0, 100, 200)
    assert area_um2(square, 0.5) == pytest.approx(20000 * 0.25)
    assert perimeter_um(square, 0.5) == pytest.approx(600 * 0.5)
    # Non-square pixels scale each axis separately.
    assert area_um2(square, (0.5, 0.25)) == pytest.approx(20000 * 0.125)
    assert perimeter_um(square, (0.5, 0.25)) == pytest.approx(2 * 50 + 2 * 50)
    line = LineString([(0, 0), (30, 40)])
    assert length_um(line, 0.25) == pytest.approx(12.5)
    assert perimeter_um(line, 0.25) == 0.0
    donut = square.difference(box(10, 10, 20, 20))
    assert area_um2(donut, 1.0) == pytest.approx(20000 - 100)
    assert perimeter_um(donut, 1.0) == pytest.approx(600 + 40)
    assert measure(square, 0.5) == {"Area µm^2": 5000.0, "Perimeter µm": 300.0}
    assert measure(line, None) == {"Length px": 50.0}
    assert measure(Point(1, 1), 0.5) == {}
    with pytest.raises(ValueError):
        area_um2(square, 0)


# --------------------------------------------------------------------------- display / index


def _random_polygons(n: int, seed: int = 0) -> list[Polygon]:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 100_000, (n, 2))
    return [Point(c).buffer(rng.uniform(20, 200), quad_segs=16) for c in centres]


def test_simplify_for_display_reduces_vertices_and_keeps_small_regions() -> None:
    circle = Point(0, 0).buffer(1000, quad_segs=64)
    simplified = simplify_for_display(circle, 16)
    assert vertex_count(simplified) < vertex_count(circle) / 4
    assert simplified.is_valid
    assert abs(simplified.area - circle.area) / circle.area < 0.02
    assert simplify_for_display(circle, 0) is circle
    tiny = box(0, 0, 2, 2)
    assert not simplify_for_display(tiny, 50).is_empty


def test_annotation_index_matches_brute_force_and_edits() -> None:
    polygons = _random_polygons(2000)
    keys = [f"a{i}" for i in range(len(polygons))]
    index = AnnotationIndex(polygons, keys)
    view = (20_000, 30_000, 40_000, 45_000)
    viewport = box(*view)
    expected = {k for k, p in zip(keys, polygons, strict=True) if p.intersects(viewport)}
    assert set(index.query(view)) == expected
    assert 0 < len(expected) < len(polygons)
    # Edits are seen by the next query.
    index.remove(next(iter(expected)))
    index.set("new", box(25_000, 35_000, 25_100, 35_100))
    hits = set(index.query(view))
    assert "new" in hits and len(hits) == len(expected)
    # Clicking picks the smallest region under the cursor first.
    index.set("big", box(0, 0, 100_000, 100_000))
    assert index.at(25_050, 35_050)[:2] == ["new", "big"]
    simplified = index.visible(view, downsample=64)
    assert {k for k, _ in simplified} == hits | {"big"}
    assert sum(vertex_count(g) for _, g in simplified) < sum(
        vertex_count(index.geometry(k)) for k, _ in simplified
    )


def test_annotation_index_queries_10k_polygons_through_one_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Queries go through one STR-tree built once, not a scan (timings: the annotations benchmark)."""
    from pathviewer.core import geometry

    polygons = _random_polygons(10_000, seed=1)
    builds: list[int] = []
    tree_class = shapely.STRtree

    def counting_tree(geoms, *args, **kwargs):
        builds.append(len(geoms))
        return tree_class(geoms, *args, **kwargs)

    monkeypatch.setattr(geometry.shapely, "STRtree", counting_tree)
    index = AnnotationIndex(polygons)
    for i in range(20):
        view = (i * 1000, i * 1000, i * 1000 + 20_000, i * 1000 + 15_000)
        viewport = box(*view)
        expected = [k for k, p in enumerate(polygons) if p.intersects(viewport)]
        assert index.query(view) == expected
    assert builds == [10_000]


def test_multipolygon_measure() -> None:
    multi = MultiPolygon([box(0, 0, 10, 10), box(20, 0, 30, 10)])
    assert measure(multi, 1.0)["Area µm^2"] == pytest.approx(200)
