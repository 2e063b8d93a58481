"""The realistic refinement benchmark: scoring, noise plumbing and one tiny end-to-end case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from shapely.geometry import Point

from pathviewer.bench.refine_realistic import PatchSet, noisy_train_labels, queue_scores
from pathviewer.core.annotations import Annotation
from pathviewer.core.geometry import patch_labels_from_regions


def test_queue_scores_read_the_top_of_the_queue() -> None:
    errors = np.zeros(1000, bool)
    errors[:60] = True
    order = np.r_[np.arange(50), np.arange(500, 550), np.arange(50, 60)]
    flagged = np.zeros(1000, bool)
    flagged[order] = True
    scores = queue_scores(order, flagged, errors)
    assert scores["precision_at_50"] == 1.0
    assert scores["precision_at_100"] == 0.5
    assert scores["precision_at_200"] == round(60 / 110, 4)  # a queue shorter than k
    assert scores["ceiling_at_100"] == 0.6  # only 60 errors exist
    assert scores["flagged"] == 110 and scores["recall"] == 1.0


def _patch_set() -> PatchSet:
    boxes, slide = [], []
    for s in range(3):
        for y in range(0, 1024, 64):
            for x in range(0, 1024, 64):
                boxes.append((x, y, 64, 64))
                slide.append(s)
    boxes_a = np.array(boxes)
    slide_a = np.array(slide)
    annotations = [
        [Annotation(Point(300, 300).buffer(150), "Tumor")],
        [Annotation(Point(600, 600).buffer(60), "Tumor")],
        [],
    ]
    labels = np.zeros(len(boxes), np.int64)
    for s in range(3):
        rows = np.flatnonzero(slide_a == s)
        names = patch_labels_from_regions(annotations[s], [tuple(b) for b in boxes_a[rows]])
        labels[rows] = [n == "Tumor" for n in names]
    return PatchSet(
        np.zeros((len(boxes), 3, 4, 4), np.float32),
        labels,
        slide_a,
        boxes_a,
        np.zeros(len(boxes), bool),
        annotations,
        64,
    )


def test_region_noise_models_make_the_errors_they_describe() -> None:
    data = _patch_set()
    clean = data.labels
    coarse = noisy_train_labels(data, "coarse_outlines", 1.0, seed=0)
    assert ((coarse == 1) & (clean == 0)).sum() > 0 and ((coarse == 0) & (clean == 1)).sum() == 0
    missed = noisy_train_labels(data, "missed_foci", 0.5, seed=0)
    # The smaller of the two regions (slide 1) is missed, the larger is kept.
    assert np.all(missed[data.slide == 1] == 0) and np.array_equal(
        missed[data.slide == 0], clean[data.slide == 0]
    )
    swapped = noisy_train_labels(data, "region_swap", 1.0, seed=0)
    assert ((swapped == 0) & (clean == 1)).sum() > 0 and ((swapped == 1) & (clean == 0)).sum() > 0
    flips = noisy_train_labels(data, "symmetric", 0.3, seed=0)
    assert 0.2 < (flips != clean).mean() < 0.4


def test_stain_benchmark_reports_the_issue_keys(tmp_path: Path) -> None:
    from pathviewer.bench.refine_realistic import run

    report = run(
        1,
        True,
        ["plain_ce", "full"],
        2,
        6,
        2048,
        tmp_path,
        only=["symmetric_strong"],
        digits=False,
        model="stain",
    )
    case = report["cases"]["symmetric_strong"]
    assert report["model"] == "stain" and report["cohort"]["input_px"] == 64
    for method in ("plain_ce", "full"):
        assert 0.0 <= case[method]["balanced_accuracy"] <= 1.0
    assert 0.0 <= case["flags"]["precision_at_100"] <= 1.0
    assert isinstance(report["collapsed_runs"], int)
    # cleanlab is a benchmark extra (pip install -e '.[bench]'); its queue is scored when present.
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        assert "cleanlab" not in case["flags"]
    else:
        assert 0.0 <= case["flags"]["cleanlab"]["precision_at_100"] <= 1.0
    assert set(report["targets"]) >= {"gain_at_least_5_points_when_strong", "never_below_plain_ce"}
    # The queue filtered by the given label: the same order, each class's own errors.
    ours = case["flags"][case["flags"]["ranking"]]
    by_class = ours["by_given_class"]
    assert set(by_class) == {"Normal", "Tumor"}
    for scores in by_class.values():
        assert 0.0 <= scores["precision_at_100"] <= 1.0
    assert sum(c["flagged"] for c in by_class.values()) == ours["flagged"]
    # The clean-label reference trains on the clean labels, so it bounds what plain CE reaches.
    reference = report["clean_labels_reference"]["balanced_accuracy"]
    assert 0.0 <= reference <= 1.0
    assert report["targets"]["headroom_over_plain_ce"]["symmetric_strong"] == round(
        reference - case["plain_ce"]["balanced_accuracy"], 4
    )


def test_the_queue_by_given_class_keeps_the_order_and_counts_each_class() -> None:
    from pathviewer.bench.refine_realistic import queue_by_given_class

    given = np.array([0, 0, 1, 1, 0, 1])
    errors = np.array([True, False, False, True, True, False])
    order = np.array([3, 0, 2, 4, 1])  # 5 is not flagged
    flagged = np.zeros(6, bool)
    flagged[order] = True
    out = queue_by_given_class(order, flagged, errors, given)
    # Normal-labelled queue: 0 (wrong), 4 (wrong), 1 (right); Tumor-labelled: 3 (wrong), 2.
    assert out["Normal"]["errors"] == 2 and out["Normal"]["flagged"] == 3
    assert out["Normal"]["precision_at_50"] == round(2 / 3, 4)
    assert out["Tumor"]["errors"] == 1 and out["Tumor"]["flagged"] == 2
    assert out["Tumor"]["precision_at_50"] == 0.5 and out["Tumor"]["recall"] == 1.0
