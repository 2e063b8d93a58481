"""Annotator-like noise models: what each changes in the annotations and the patch labels."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from pathviewer.core.annotations import Annotation
from pathviewer.core.errors import PathViewerError
from pathviewer.core.geometry import patch_labels_from_regions
from pathviewer.core.label_noise import (
    coarse_outlines,
    missed_foci,
    noisy_cohort_annotations,
    region_swap,
    symmetric_flips,
)


def _grid(size: int = 1024, patch: int = 64) -> list[tuple[int, int, int, int]]:
    return [(x, y, patch, patch) for y in range(0, size, patch) for x in range(0, size, patch)]


def test_symmetric_flips_hit_the_rate_and_always_change_the_class() -> None:
    labels = np.random.default_rng(0).integers(0, 3, 20000)
    noisy = symmetric_flips(labels, 0.3, 3, seed=1)
    flipped = noisy != labels
    assert abs(flipped.mean() - 0.3) < 0.015
    assert set(np.unique(noisy)) == {0, 1, 2}
    assert np.array_equal(symmetric_flips(labels, 0.3, 3, seed=1), noisy)
    with pytest.raises(PathViewerError, match="rate"):
        symmetric_flips(labels, 1.5, 3, seed=1)


def test_coarse_outlines_turn_only_border_normal_patches_into_tumour() -> None:
    tumour = [Annotation(Point(512, 512).buffer(200), "Tumor")]
    boxes = _grid()
    clean = np.array(patch_labels_from_regions(tumour, boxes, "Normal"))
    loose = np.array(
        patch_labels_from_regions(coarse_outlines(tumour, "Tumor", 64), boxes, "Normal")
    )
    looser = np.array(
        patch_labels_from_regions(coarse_outlines(tumour, "Tumor", 128), boxes, "Normal")
    )
    # Nothing that was tumour is lost; normal patches next to the outline become Tumor.
    assert np.all(loose[clean == "Tumor"] == "Tumor")
    gained = (loose == "Tumor") & (clean == "Normal")
    assert gained.sum() > 0
    assert ((looser == "Tumor") & (clean == "Normal")).sum() > gained.sum()
    centres = np.array([(x + 32, y + 32) for x, y, _, _ in boxes])
    distance = np.hypot(centres[:, 0] - 512, centres[:, 1] - 512)
    assert distance[gained].max() < 200 + 64 + 32 * 1.5


def test_missed_foci_drop_the_smallest_regions_of_the_cohort_first() -> None:
    big = Annotation(box(0, 0, 400, 400), "Tumor")
    small = Annotation(box(0, 0, 50, 50), "Tumor")
    medium = Annotation(box(0, 0, 150, 150), "Tumor")
    stroma = Annotation(box(0, 0, 10, 10), "Stroma")
    slides = [[big, stroma], [small], [medium]]
    out = missed_foci(slides, "Tumor", 1 / 3)
    assert out == [[big, stroma], [], [medium]]
    out = missed_foci(slides, "Tumor", 2 / 3)
    assert out == [[big, stroma], [], []]
    assert missed_foci(slides, "Tumor", 0) == slides


def test_region_swap_moves_regions_onto_uncovered_background_of_matched_size() -> None:
    tumour = Annotation(Point(200, 200).buffer(100), "Tumor")
    slides = [[tumour], []]
    points = [np.array([[200, 200], [800, 800]]), np.array([[500, 500]])]
    out = region_swap(slides, "Tumor", 1.0, points, seed=3)
    regions = [a for s in out for a in s]
    assert len(regions) == 1 and regions[0].class_name == "Tumor"
    assert regions[0].name == "swapped region"
    assert abs(regions[0].geometry.area - tumour.geometry.area) / tumour.geometry.area < 0.01
    centre = regions[0].geometry.centroid
    # Never centred on tissue the region it replaces covered.
    assert (round(centre.x), round(centre.y)) in {(800, 800), (500, 500)}
    assert region_swap(slides, "Tumor", 0.0, points, seed=3) == slides


def test_unknown_model_and_bad_strength_are_refused() -> None:
    with pytest.raises(PathViewerError, match="unknown noise model"):
        noisy_cohort_annotations([[]], "spilled coffee", 0.1)
    with pytest.raises(PathViewerError, match="share"):
        noisy_cohort_annotations([[]], "missed_foci", 2.0)
    with pytest.raises(PathViewerError, match="growth"):
        noisy_cohort_annotations([[]], "coarse_outlines", -1.0)
