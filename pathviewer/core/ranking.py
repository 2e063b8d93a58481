"""How a review queue is ordered: the rankings a label-refinement run can use, in words.

Kept free of torch and Qt so the review panel can say how its queue is ordered without loading
the training engine; :func:`pathviewer.ml.refine.suspicion` computes the scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Review-queue orders (``rank_by`` of a run) -> a short line the app shows the annotator.
RANKINGS: dict[str, str] = {
    "g": "most likely wrong first: lowest predicted probability of the given label",
    "class_normalised": "most likely wrong first: lowest predicted probability of the given "
    "label, relative to its class",
    "tempered": "most likely wrong first: lowest predicted probability of the given label, "
    "with the classes' shares counted half",
    "regional": "most likely wrong first: lowest probability of the given label, judged "
    "with the neighbouring patches and the classes counted equally",
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
    "regional": "Labels are ordered by 1 - p, p being the model's probability of the given "
    "class with the classes counted equally (divided by their shares among the labels) and "
    "averaged over the patch and the 8 patches around it on the slide, the patch itself "
    "counting as much as 4 of them. Annotation errors and tumour cover regions (a loose "
    "outline, a missed focus, a region called the wrong class), while the model's own "
    "mistakes are mostly single patches, so a label whose neighbourhood also looks like "
    "another class comes first.",
}

#: The ranking that reads each patch's neighbours (:func:`patch_neighbours`).
REGIONAL = "regional"

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


@dataclass(frozen=True)
class Neighbours:
    """Each patch's neighbouring patches on its slide, in compressed sparse rows.

    The neighbours of patch ``i`` are ``indices[indptr[i]:indptr[i + 1]]``.
    """

    indptr: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def of(self, i: int) -> np.ndarray:
        """The neighbours of patch ``i``."""
        return self.indices[self.indptr[i] : self.indptr[i + 1]]


def patch_neighbours(
    slides: Sequence[Any], boxes: np.ndarray | Sequence[Sequence[int]]
) -> Neighbours:
    """The 8-neighbourhood of each patch on a tiling grid: same slide, adjacent grid cells.

    Parameters
    ----------
    slides
        ``(N,)`` slide of each patch (any hashable: a path, a number).
    boxes
        ``(N, 4)`` level-0 ``x, y, width, height`` of each patch.  A patch's cell is its
        position in units of its own size, so patches tiled on one grid find each other;
        a patch on another grid (another patch size) is nobody's neighbour.

    Returns
    -------
    Neighbours
    """
    box = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if len(box) != len(slides):
        raise ValueError(f"{len(slides)} slides but {len(box)} boxes")
    width = np.maximum(box[:, 2], 1)
    height = np.maximum(box[:, 3], 1)
    cells: dict[tuple[Any, int, int, int, int], int] = {}
    keys = []
    for i, slide in enumerate(slides):
        key = (
            slide,
            int(width[i]),
            int(height[i]),
            int(round(box[i, 0] / width[i])),
            int(round(box[i, 1] / height[i])),
        )
        keys.append(key)
        cells.setdefault(key, i)
    indptr = [0]
    indices: list[int] = []
    for i, (slide, w, h, cx, cy) in enumerate(keys):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dx == 0 and dy == 0:
                    continue
                j = cells.get((slide, w, h, cx + dx, cy + dy))
                if j is not None and j != i:
                    indices.append(j)
        indptr.append(len(indices))
    return Neighbours(np.asarray(indptr, np.int64), np.asarray(indices, np.int64))
