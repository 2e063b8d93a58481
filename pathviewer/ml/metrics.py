"""Evaluation of predictions against the cohort: instance AUC, bag AUC, bag accuracy.

A patch is positive when at least :data:`INSTANCE_OVERLAP` (25 %) of its area lies inside its
slide's tumour annotations; patches of negative slides are negative (their annotations, if any,
are ignored); a positive slide without an annotation file contributes no instance labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pathviewer.core.atomic import atomic_write
from pathviewer.core.cohort import CohortEntry, read_cohort
from pathviewer.core.errors import CohortError
from pathviewer.core.predictions import SLIDES_CSV, read_predictions

#: Minimum tumour-covered share of a patch for it to count as positive.
INSTANCE_OVERLAP = 0.25


def tumour_geometry(entry: CohortEntry) -> Any:
    """Union of the tumour annotations of a slide (None when it has no annotation file)."""
    if entry.annotations is None:
        return None
    import shapely

    from pathviewer.core.annotations import is_tumour_class, read_geojson, valid_geometry

    regions = [
        valid_geometry(a.geometry)
        for a in read_geojson(entry.annotations)
        if is_tumour_class(a.class_name) and a.geometry.geom_type in ("Polygon", "MultiPolygon")
    ]
    return shapely.union_all(regions) if regions else shapely.Polygon()


def instance_labels(entry: CohortEntry, boxes: np.ndarray) -> np.ndarray:
    """0/1 label of each ``(x, y, w, h)`` box of a slide; all 0 for a negative slide.

    Raises
    ------
    ValueError
        A positive slide without annotations (no instance ground truth).
    """
    boxes = np.asarray(boxes, np.int64).reshape(-1, 4)
    if entry.label == 0:
        return np.zeros(len(boxes), np.int64)
    geometry = tumour_geometry(entry)
    if geometry is None:
        raise ValueError(f"{entry.slide}: positive slide without annotations")
    from pathviewer.core.geometry import tumour_overlap_fractions

    return (tumour_overlap_fractions(geometry, boxes) >= INSTANCE_OVERLAP).astype(np.int64)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (scikit-learn), or None when the labels are not of both classes."""
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def evaluate_predictions(
    cohort_csv: str | Path, pred_dir: str | Path, split: str | None = None
) -> dict[str, Any]:
    """Instance AUC, bag AUC and bag accuracy at 0.5 of one predictions folder.

    Parameters
    ----------
    cohort_csv
        The cohort (labels and annotations).
    pred_dir
        Folder with ``patches.csv`` and ``slides.csv`` (from ``pathviewer infer``).
    split
        Only slides of this split (None: every slide present in ``slides.csv``).

    Returns
    -------
    dict
        ``instance_auc`` (all patches pooled), ``within_slide_auc`` (mean over slides with both
        classes), ``bag_auc``, ``bag_accuracy`` (None when undefined), counts, ``method``.

    Raises
    ------
    CohortError
        Bad cohort; a predicted slide missing from the cohort (named).
    PredictionsError
        A missing or malformed predictions file (:func:`~pathviewer.core.predictions.read_predictions`).
    """
    pred_dir = Path(pred_dir)
    entries = {e.slide: e for e in read_cohort(cohort_csv, check_files=False)}
    predictions = read_predictions(pred_dir)
    bag_labels, bag_scores, bag_preds = [], [], []
    used: list[str] = []
    for row in predictions.slides:
        entry = entries.get(row.slide)
        if entry is None:
            raise CohortError(
                f"{pred_dir / SLIDES_CSV} row {row.line}: slide {row.slide!r} is not in {cohort_csv}"
            )
        if entry.label is None or (split and entry.split != split):
            continue
        used.append(entry.slide)
        bag_labels.append(entry.label)
        bag_scores.append(row.score)
        bag_preds.append(row.pred)
    inst_labels: list[np.ndarray] = []
    inst_scores: list[np.ndarray] = []
    skipped = []
    for name in used:
        patches = predictions.patches[name]
        if not len(patches.probs):
            continue
        try:
            labels = instance_labels(entries[name], patches.boxes)
        except ValueError:
            skipped.append(name)
            continue
        inst_labels.append(labels)
        inst_scores.append(patches.probs)
    per_slide = [a for a in map(roc_auc, inst_labels, inst_scores) if a is not None]
    all_labels = np.concatenate(inst_labels) if inst_labels else np.zeros(0, np.int64)
    all_scores = np.concatenate(inst_scores) if inst_scores else np.zeros(0)
    y = np.asarray(bag_labels)
    return {
        "method": predictions.info.method if predictions.info is not None else "",
        "pred_dir": str(pred_dir),
        "instance_auc": roc_auc(all_labels, all_scores),
        # Localisation within a slide, free of offsets between slides: the mean AUC over the
        # slides that have tumour and normal patches.
        "within_slide_auc": float(np.mean(per_slide)) if per_slide else None,
        "bag_auc": roc_auc(y, np.asarray(bag_scores)),
        "bag_accuracy": float((np.asarray(bag_preds) == y).mean()) if len(y) else None,
        "n_slides": len(y),
        "n_patches": int(len(all_labels)),
        "n_positive_patches": int(all_labels.sum()),
        "slides_without_annotations": skipped,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write an evaluation JSON atomically."""
    with atomic_write(path) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def format_table(results: list[dict[str, Any]]) -> str:
    """Side-by-side text table of several evaluations."""

    def fmt(value: Any) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{'method':<12} {'instance_auc':>12} {'bag_auc':>8} {'bag_acc':>8}  pred_dir"]
    for r in results:
        lines.append(
            f"{(r['method'] or '?'):<12} {fmt(r['instance_auc']):>12} {fmt(r['bag_auc']):>8} "
            f"{fmt(r['bag_accuracy']):>8}  {r['pred_dir']}"
        )
    return "\n".join(lines)
