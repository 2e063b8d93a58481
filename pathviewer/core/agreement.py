"""Agreement between reviewers of the same patches: Cohen's kappa per pair, Fleiss' for more.

The input is what :meth:`pathviewer.core.store.Project.reviewer_labels` returns: for each
reviewed patch, each reviewer's latest label.  Kappa corrects the share of agreeing labels for
the agreement that chance alone would give, so "90 % agreement" on a cohort that is 90 %
Normal shows as what it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np
from sklearn.metrics import cohen_kappa_score


def _kappa(a: list[str], b: list[str]) -> float | None:
    """Cohen's kappa of two label lists; None when undefined (one label only, or < 2 items)."""
    if len(a) < 2 or len(set(a) | set(b)) < 2:
        return None
    value = float(cohen_kappa_score(a, b))
    return None if not np.isfinite(value) else value


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an ``(items, categories)`` table of how many raters chose each.

    Every item must have the same number of raters (at least 2).  None when undefined (all
    raters always chose one category).
    """
    table = np.asarray(counts, float)
    if table.ndim != 2 or table.shape[0] == 0:
        return None
    raters = table.sum(axis=1)
    if raters.min() != raters.max() or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters for every item")
    n = raters[0]
    per_item = ((table**2).sum(axis=1) - n) / (n * (n - 1))
    observed = per_item.mean()
    shares = table.sum(axis=0) / table.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return None
    return float((observed - expected) / (1.0 - expected))


def reviewer_agreement(labels: Mapping[int, Mapping[str, str]]) -> dict[str, Any]:
    """Agreement between the reviewers of ``labels`` (``{patch: {reviewer: label}}``).

    Returns
    -------
    dict
        ``reviewers``; ``pairs``: for each pair the patches both reviewed, the share of equal
        labels and Cohen's kappa; ``per_class``: for each class the mean over pairs of the
        one-against-the-rest kappa; ``fleiss``: Fleiss' kappa over the patches every reviewer
        labelled (None with fewer than three reviewers); ``disputed``: patches whose
        reviewers disagree.
    """
    reviewers = sorted({who for patch in labels.values() for who in patch})
    classes = sorted({label for patch in labels.values() for label in patch.values()})
    pairs = []
    per_class: dict[str, list[float]] = {name: [] for name in classes}
    for first, second in combinations(reviewers, 2):
        both = [p for p in labels.values() if first in p and second in p]
        a = [p[first] for p in both]
        b = [p[second] for p in both]
        pairs.append(
            {
                "reviewers": [first, second],
                "patches": len(both),
                "agreement": (sum(x == y for x, y in zip(a, b, strict=True)) / len(both))
                if both
                else None,
                "kappa": _kappa(a, b),
            }
        )
        for name in classes:
            value = _kappa([str(x == name) for x in a], [str(y == name) for y in b])
            if value is not None:
                per_class[name].append(value)
    fleiss = None
    if len(reviewers) >= 3:
        full = [p for p in labels.values() if all(who in p for who in reviewers)]
        if full:
            table = np.array([[sum(v == c for v in p.values()) for c in classes] for p in full])
            fleiss = fleiss_kappa(table)
    disputed = sum(len(set(p.values())) > 1 for p in labels.values())
    return {
        "reviewers": reviewers,
        "pairs": pairs,
        "per_class": {
            name: (float(np.mean(values)) if values else None) for name, values in per_class.items()
        },
        "fleiss": fleiss,
        "disputed": disputed,
    }
