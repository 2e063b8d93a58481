"""How a review queue is ordered: the rankings a label-refinement run can use, in words.

Kept free of torch and Qt so the review panel can say how its queue is ordered without loading
the training engine; :func:`pathviewer.ml.refine.suspicion` computes the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Review-queue orders (``rank_by`` of a run) -> what the app tells the annotator.
RANKINGS: dict[str, str] = {
    "g": "most likely wrong first: the lowest predicted probability of the given class "
    "(g = 1 - p) comes first",
    "class_normalised": "most likely wrong first: the predicted probability of the given class, "
    "relative to the typical probability of labels of that class, lowest first (a rare class's "
    "correct labels are not pushed to the top)",
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
