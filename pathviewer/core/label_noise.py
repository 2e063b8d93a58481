"""Annotator-like label noise, for benchmarks of label refinement.

Real annotation errors are not coin flips: a pathologist draws an outline too loosely, overlooks
a small focus or calls a whole region the wrong class.  The region models below change the
*annotations* and let the patch labeller (:func:`pathviewer.core.geometry.patch_labels_from_regions`)
turn them into patch labels, exactly as ``pathviewer labels from-annotations`` does with a real
annotator's outlines; :func:`symmetric_flips` is the classic patch-level model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import Annotation, valid_geometry
from pathviewer.core.errors import PathViewerError

#: The noise models of :func:`noisy_annotations` and what their strength means.
REGION_MODELS = {
    "coarse_outlines": "outline growth in level-0 px (polygons dilated, then simplified)",
    "missed_foci": "share of the class's regions left out, smallest first",
    "region_swap": "share of the class's regions called background, and as many background "
    "regions of matched size called the class",
}


def symmetric_flips(labels: np.ndarray, rate: float, num_classes: int, seed: int) -> np.ndarray:
    """Flip each label with probability ``rate`` to a uniformly drawn *other* class.

    Parameters
    ----------
    labels
        ``(N,)`` class indices.
    rate
        Flip probability, 0-1.
    num_classes
        Number of classes (>= 2).
    seed
        Random seed.
    """
    if not 0 <= rate <= 1:
        raise PathViewerError(f"flip rate must be within 0-1 (got {rate})")
    if num_classes < 2:
        raise PathViewerError("symmetric flips need at least two classes")
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64)
    noisy = labels.copy()
    flip = rng.random(len(labels)) < rate
    noisy[flip] = (labels[flip] + rng.integers(1, num_classes, int(flip.sum()))) % num_classes
    return noisy


def _regions(annotations: Sequence[Annotation], class_name: str) -> list[int]:
    return [
        i
        for i, a in enumerate(annotations)
        if a.class_name == class_name and a.geometry.geom_type in ("Polygon", "MultiPolygon")
    ]


def coarse_outlines(
    annotations: Sequence[Annotation], class_name: str, grow: float
) -> list[Annotation]:
    """Outlines drawn loosely: every region of ``class_name`` dilated by ``grow`` px, simplified.

    The simplification tolerance equals the growth, as a hand tracing with a coarse brush would
    cut corners; overlapping grown regions are kept as they are (the labeller unions a class).
    """
    if grow < 0:
        raise PathViewerError(f"outline growth must be >= 0 px (got {grow})")
    out = list(annotations)
    for i in _regions(annotations, class_name):
        shape = annotations[i].geometry.buffer(grow).simplify(grow, preserve_topology=True)
        out[i] = _with_geometry(annotations[i], valid_geometry(shape))
    return out


Regions = list[list[Annotation]]


def _cohort_regions(
    slides: Sequence[Sequence[Annotation]], class_name: str
) -> list[tuple[int, int]]:
    return [
        (s, i) for s, annotations in enumerate(slides) for i in _regions(annotations, class_name)
    ]


def missed_foci(slides: Sequence[Sequence[Annotation]], class_name: str, share: float) -> Regions:
    """Small foci overlooked: the ``share`` of the cohort's regions with the smallest area removed.

    Regions are ranked over the whole cohort, so a slide whose only focus is small loses it, as a
    focus missed at low magnification would be; ``round(share * n)`` regions go.

    Parameters
    ----------
    slides
        Each slide's annotations.
    class_name
        The class whose regions are missed (``Tumor``).
    share
        Share of the regions left out, 0-1.
    """
    if not 0 <= share <= 1:
        raise PathViewerError(f"missed share must be within 0-1 (got {share})")
    regions = sorted(
        _cohort_regions(slides, class_name), key=lambda r: slides[r[0]][r[1]].geometry.area
    )
    dropped = set(regions[: int(round(share * len(regions)))])
    return [
        [a for i, a in enumerate(annotations) if (s, i) not in dropped]
        for s, annotations in enumerate(slides)
    ]


def region_swap(
    slides: Sequence[Sequence[Annotation]],
    class_name: str,
    share: float,
    background_points: Sequence[np.ndarray],
    seed: int,
) -> Regions:
    """Whole regions called the wrong class, in both directions.

    A random ``share`` of the cohort's regions of the class is removed (its tissue becomes
    background), and for each removed region a disc of the same area is added as ``class_name``
    on a random slide, centred on one of that slide's background points that no region of the
    class covers.

    Parameters
    ----------
    slides
        Each slide's annotations.
    class_name
        The class whose regions are swapped (``Tumor``).
    share
        Share of the regions swapped, 0-1.
    background_points
        Per slide, ``(P, 2)`` candidate centres in level-0 px (e.g. its tissue patch centres).
    seed
        Random seed.
    """
    if not 0 <= share <= 1:
        raise PathViewerError(f"swap share must be within 0-1 (got {share})")
    if len(background_points) != len(slides):
        raise PathViewerError(f"{len(slides)} slides but {len(background_points)} point sets")
    rng = np.random.default_rng(seed)
    regions = _cohort_regions(slides, class_name)
    count = int(round(share * len(regions)))
    order = rng.permutation(len(regions))[:count]
    swapped = [regions[int(k)] for k in order]
    removed = set(swapped)
    out = [
        [a for i, a in enumerate(annotations) if (s, i) not in removed]
        for s, annotations in enumerate(slides)
    ]
    free: list[np.ndarray] = []
    for s, points in enumerate(background_points):
        covered = [slides[s][i].geometry for i in _regions(slides[s], class_name)]
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        free.append(
            np.array([p for p in pts if not any(g.covers(Point(p)) for g in covered)]).reshape(
                -1, 2
            )
        )
    candidates = [s for s in range(len(slides)) if len(free[s])]
    for s, i in swapped:
        if not candidates:
            break
        target = candidates[int(rng.integers(len(candidates)))]
        centre = free[target][int(rng.integers(len(free[target])))]
        radius = math.sqrt(slides[s][i].geometry.area / math.pi)
        disc = Point(float(centre[0]), float(centre[1])).buffer(radius)
        out[target].append(_with_geometry(slides[s][i], disc, name="swapped region"))
    return out


def noisy_cohort_annotations(
    slides: Sequence[Sequence[Annotation]],
    model: str,
    strength: float,
    class_name: str = "Tumor",
    background_points: Sequence[np.ndarray] | None = None,
    seed: int = 0,
) -> Regions:
    """Apply one of :data:`REGION_MODELS` to a cohort's annotations (one list per slide)."""
    if model == "coarse_outlines":
        return [coarse_outlines(a, class_name, strength) for a in slides]
    if model == "missed_foci":
        return missed_foci(slides, class_name, strength)
    if model == "region_swap":
        points = background_points or [np.zeros((0, 2)) for _ in slides]
        return region_swap(slides, class_name, strength, points, seed)
    raise PathViewerError(f"unknown noise model {model!r} (known: {', '.join(REGION_MODELS)})")


def _with_geometry(
    annotation: Annotation, geometry: BaseGeometry, name: str | None = None
) -> Annotation:
    return Annotation(
        geometry,
        annotation.class_name,
        annotation.color,
        name if name is not None else annotation.name,
        annotation.object_type,
        dict(annotation.measurements),
    )
