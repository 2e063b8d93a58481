"""How a review queue is ordered: the rankings a label-refinement run can use, in words.

Kept free of torch and Qt so the review panel can say how its queue is ordered without loading
the training engine; :func:`pathviewer.ml.refine.suspicion` computes the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Review-queue orders (``rank_by`` of a run) -> a short line the app shows the annotator.
RANKINGS: dict[str, str] = {
    "g": "most likely wrong first: lowest predicted probability of the given label",
    "class_normalised": "most likely wrong first: lowest predicted probability of the given "
    "label, relative to its class",
    "tempered": "most likely wrong first: lowest predicted probability of the given label, "
    "with the classes' shares counted half",
}

#: The same, in full (tooltips, help).
RANKING_DETAILS: dict[str, str] = {
    "g": "Labels are ordered by g = 1 - p, p being the model's probability of the given class: "
    "the labels the model believes least come first.",
    "class_normalised": "Labels are ordered by their probability divided by the mean "
    "probability of the labels of the same class (confident learning's per-class threshold), "
    "lowest first, so that a rare class's correct labels, which the model is less sure of, are "
    "not pushed to the top.",
    "tempered": "Labels are ordered by 1 - p, p being the model's probability of the given class "
    "with each class's share among the labels counted half (the probabilities divided by the "
    "square root of the class shares): a rare class missed by the annotator (tumour labelled "
    "normal) can reach the top, and a rare class's correct labels do not crowd it.",
}

#: The order of runs written before ``rank_by`` existed (they sorted by ``g``).
LEGACY_RANKING = "g"


def run_ranking(run_dir: str | Path) -> str | None:
    """The ``rank_by`` recorded in a run folder's ``config.json`` (None: no readable config)."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    rank_by = config.get("rank_by", LEGACY_RANKING)
    return rank_by if rank_by in RANKINGS else None
