"""Detect a self-distillation run that has degenerated, while it trains.

NGSD can fail without a loud symptom: its loss goes to ~0 while the student learns "every patch
is negative" (the pseudo-labels lost their positives), or it learns which *slide* a patch comes
from instead of what is in it.  A saved model then paints nonsense with full confidence.  The
guard watches three signals the trainer already has and calls a run degenerate when, past a
warm-up, one of them stays bad:

* **bank collapse**: the pseudo-labels no longer single anything out.  The Sinkhorn-Knopp
  marginal always sums to K, so the guard measures how much of that mass the top K share of
  scored patches carries (K when it is spread evenly over every patch, 1 when it sits on them
  alone) and calls less than a tenth of the way from even to sharp a collapse.  (The share of
  pseudo-labels above 0.5 would misfire: soft pseudo-labels, a small SK lambda, can be healthy
  with none above 0.5.)
* **no contrast**: the teacher scores every patch alike (tiny spread of its probabilities);
* **no separation**: the most positive patches of positive slides score no higher than the most
  positive patches of negative slides (top-K means of the teacher's recent batches), so the
  model has not found anything that only positive slides contain.

A validation instance AUC (slides with annotations in the ``val`` split), when present, is
checked too: a best-so-far below 0.55 at the end is degenerate; a fall from the best by more
than 0.15 is reported as a warning (the trainer keeps the best model).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

#: Steps of teacher probabilities the contrast and separation checks look back over.
WINDOW = 30
#: Fraction of the run after which the checks apply (the bank needs time to fill).
WARMUP = 0.3
#: Fewest steps before any judgement: a few steps say nothing about where a run is going
#: (smoke tests and plumbing runs are never called degenerate).
MIN_STEPS = 40


@dataclass
class GuardReport:
    """What the guard concluded at one point of a run."""

    degenerate: bool
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for logs and exit messages."""
        return "; ".join(self.reasons or self.warnings) or "no problem found"


class DegenerationGuard:
    """Collects the training signals of one NGSD run and judges them.

    Parameters
    ----------
    k
        The run's K (expected positive share of positive-slide patches).
    total_steps
        Length of the run (the checks start after :data:`WARMUP` of it).
    """

    def __init__(self, k: float, total_steps: int) -> None:
        self.k = float(k)
        self.warmup = max(MIN_STEPS, int(WARMUP * total_steps))
        self._pos: deque[np.ndarray] = deque(maxlen=WINDOW)
        self._neg: deque[np.ndarray] = deque(maxlen=WINDOW)
        self.bank_concentration: float | None = None
        self.val_aucs: list[float] = []
        self.step = 0
        self._bad_checks = 0

    def observe_batch(
        self, step: int, positive_slide: np.ndarray, negative_slide: np.ndarray
    ) -> None:
        """Teacher probabilities of one batch's positive- and negative-slide patches."""
        self.step = step
        if positive_slide.size:
            self._pos.append(np.asarray(positive_slide, np.float32))
        if negative_slide.size:
            self._neg.append(np.asarray(negative_slide, np.float32))

    def observe_bank(self, pseudo_labels: np.ndarray) -> None:
        """The pseudo-labels of the bank's scored patches (O(n): a partition, no sort)."""
        q = np.asarray(pseudo_labels, np.float64)
        if q.size == 0 or q.sum() <= 0:
            self.bank_concentration = None
            return
        top = max(1, int(round(self.k * q.size)))
        self.bank_concentration = float(np.partition(q, q.size - top)[-top:].sum() / q.sum())

    def observe_validation(self, auc: float | None) -> None:
        """A validation instance AUC."""
        if auc is not None:
            self.val_aucs.append(float(auc))

    def _top_mean(self, probs: np.ndarray) -> float:
        count = max(1, int(round(self.k * probs.size)))
        return float(np.sort(probs)[-count:].mean())

    def signals(self) -> dict[str, float]:
        """The current values of the watched signals (for metrics.jsonl)."""
        out: dict[str, float] = {}
        if self.bank_concentration is not None:
            out["bank_concentration"] = self.bank_concentration
        if self._pos and self._neg:
            pos = np.concatenate(self._pos)
            neg = np.concatenate(self._neg)
            spread = float(np.concatenate([pos, neg]).std())
            out["teacher_spread"] = spread
            out["slide_separation"] = self._top_mean(pos) - self._top_mean(neg)
            # What two top-K means of the same distribution differ by, from sampling alone.
            top = max(1, int(round(self.k * min(pos.size, neg.size))))
            out["separation_noise"] = spread * float(np.sqrt(2.0 / top))
        return out

    def check(self) -> GuardReport:
        """Judge the run as it stands (nothing is degenerate during the warm-up)."""
        reasons: list[str] = []
        warnings: list[str] = []
        if self.step >= self.warmup:
            conc = self.bank_concentration
            if conc is not None and conc < self.k + 0.1 * (1.0 - self.k):
                reasons.append(
                    f"the bank's pseudo-labels collapsed: its top {self.k:g} share of patches "
                    f"carries {conc:.2f} of the positive mass ({self.k:g} = evenly spread), so "
                    "they no longer single out any patch"
                )
            signals = self.signals()
            if signals.get("teacher_spread", 1.0) < 0.02:
                reasons.append(
                    f"the teacher scores every patch alike (spread {signals['teacher_spread']:.4f})"
                )
            elif signals.get("slide_separation", 1.0) < max(
                0.05, 3.0 * signals.get("separation_noise", 0.0)
            ):
                reasons.append(
                    "positive and negative slides score alike (top-K separation "
                    f"{signals['slide_separation']:.3f})"
                )
        if self.val_aucs:
            best, last = max(self.val_aucs), self.val_aucs[-1]
            if last < best - 0.15:
                warnings.append(f"validation instance AUC fell from {best:.3f} to {last:.3f}")
        return GuardReport(bool(reasons), reasons, warnings)

    def final(self) -> GuardReport:
        """The verdict at the end of the run (adds the validation-AUC rule)."""
        report = self.check()
        if self.step >= self.warmup and self.val_aucs and max(self.val_aucs) < 0.55:
            report.reasons.append(
                f"validation instance AUC never rose above {max(self.val_aucs):.3f}"
            )
            report.degenerate = True
        return report
