"""A run's operating point: the slide-score threshold that calls a slide positive.

A weakly supervised model's slide scores are not calibrated probabilities: one run may score
every slide between 0.45 and 0.55.  Calling slides at a fixed 0.5 then says nothing.  The
operating point is chosen on labelled slides the model was not tested on (the cohort's val
split, or its train split when there is none) as the threshold of the largest Youden index
(sensitivity + specificity - 1) on their ROC, and it is written next to ``model.pt``; inference
calls slides at it and records it in ``prediction.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import PathViewerError

#: The operating point's file in a run folder (next to model.pt).
OPERATING_POINT_JSON = "operating_point.json"


class OperatingPointError(PathViewerError):
    """An operating point cannot be chosen or read."""


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold that calls a slide positive, and how it did where it was chosen.

    Attributes
    ----------
    threshold
        Slides scoring at or above it are called positive.
    sensitivity, specificity
        On the slides it was chosen on.
    split
        The cohort split of those slides ("val", or "train" when the cohort had none).
    positives, negatives
        How many slides of each label it was chosen on.
    """

    threshold: float
    sensitivity: float
    specificity: float
    split: str
    positives: int
    negatives: int

    def describe(self) -> str:
        """One line for a tooltip or a legend."""
        return (
            f"slides called positive from {self.threshold:.3f}: sensitivity "
            f"{self.sensitivity:.2f}, specificity {self.specificity:.2f} on the {self.split} "
            f"split ({self.positives} positive, {self.negatives} negative slides)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "operating point") -> OperatingPoint:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        OperatingPointError
            A field missing or of the wrong type, or a threshold outside [0, 1].
        """
        try:
            point = cls(
                threshold=float(data["threshold"]),
                sensitivity=float(data["sensitivity"]),
                specificity=float(data["specificity"]),
                split=str(data["split"]),
                positives=int(data["positives"]),
                negatives=int(data["negatives"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise OperatingPointError(f"{where}: not an operating point ({error})") from None
        if not 0.0 <= point.threshold <= 1.0:
            raise OperatingPointError(f"{where}: threshold {point.threshold} is outside [0, 1]")
        return point


def choose_operating_point(
    labels: Sequence[int], scores: Sequence[float], split: str
) -> OperatingPoint:
    """The threshold of the largest Youden index on these slides.

    Candidate thresholds lie halfway between consecutive distinct scores (and just outside
    the range), so the choice does not sit on one slide's score.  Of equally good thresholds
    the lowest is taken: missing a tumour costs more than a second look at a benign slide.

    Raises
    ------
    OperatingPointError
        Not both labels among the slides, or lengths that differ.
    """
    y = np.asarray(labels, int)
    s = np.asarray(scores, float)
    if y.shape != s.shape:
        raise OperatingPointError(f"{len(y)} labels but {len(s)} scores")
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        raise OperatingPointError(
            f"an operating point needs positive and negative slides; the {split} split has "
            f"{positives} positive and {negatives} negative"
        )
    distinct = np.unique(s)
    candidates = np.concatenate(
        [[max(0.0, distinct[0] - 1e-6)], (distinct[:-1] + distinct[1:]) / 2, [distinct[-1] + 1e-6]]
    )
    best: tuple[float, float, float, float] | None = None
    for threshold in candidates:
        called = s >= threshold
        sensitivity = float(called[y == 1].mean())
        specificity = float((~called[y == 0]).mean())
        youden = sensitivity + specificity - 1
        if best is None or youden > best[0] + 1e-12:
            best = (youden, float(min(threshold, 1.0)), sensitivity, specificity)
    assert best is not None
    return OperatingPoint(best[1], best[2], best[3], split, positives, negatives)


def write_operating_point(point: OperatingPoint, run_dir: str | os.PathLike[str]) -> Path:
    """Write ``operating_point.json`` into a run folder (atomically)."""
    path = Path(run_dir) / OPERATING_POINT_JSON
    with atomic_write(path, "w") as handle:
        json.dump(point.to_dict(), handle, indent=2)
    return path


def read_operating_point(model_path: str | os.PathLike[str]) -> OperatingPoint | None:
    """The operating point of the run of ``model_path`` (None when it has none).

    Raises
    ------
    OperatingPointError
        The file exists but cannot be read.
    """
    path = Path(model_path).parent / OPERATING_POINT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise OperatingPointError(f"{path}: unreadable ({error})") from None
    if not isinstance(data, dict):
        raise OperatingPointError(f"{path}: not a JSON object")
    return OperatingPoint.from_dict(data, str(path))
