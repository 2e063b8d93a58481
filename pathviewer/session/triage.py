"""The triage queue: a cohort's slides in the order a pathologist should look at them.

A model has scored every slide; the pathologist wants the slides that matter first: those it
calls most strongly positive, those where it disagrees with the slide's label, or those it is
least sure of (scores nearest the threshold that calls a slide positive).  Each ordering is a
rule here, used by the Triage dock and testable without Qt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Orders of the queue: name -> (short label, what it does).
TRIAGE_ORDERS: dict[str, tuple[str, str]] = {
    "score": ("Score", "Highest model score first"),
    "disagreement": (
        "Disagreement",
        "Model call and slide label disagree first (most confident first), then by score",
    ),
    "uncertainty": ("Uncertainty", "Closest to the threshold that calls a slide first"),
}

#: The threshold that calls a slide positive when the run has none of its own.
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class TriageItem:
    """One slide of the queue.

    Attributes
    ----------
    key
        The slide as the cohort names it.
    path
        The slide file.
    label
        The slide label of the cohort (1 tumour, 0 not, None unknown).
    score
        The model's slide score (None: not scored).
    status
        The pathologist's decision (``reviewed``, ``agree``, ``disagree``) or "".
    note
        The note given with it.
    """

    key: str
    path: str
    label: int | None
    score: float | None
    status: str = ""
    note: str = ""

    def call(self, threshold: float = DEFAULT_THRESHOLD) -> int | None:
        """The model's call at ``threshold`` (None when not scored)."""
        return None if self.score is None else int(self.score >= threshold)

    def disagrees(self, threshold: float = DEFAULT_THRESHOLD) -> bool:
        """Whether the model's call differs from the slide label (both known)."""
        call = self.call(threshold)
        return call is not None and self.label is not None and call != self.label

    def margin(self, threshold: float = DEFAULT_THRESHOLD) -> float:
        """How far the score is from the threshold (infinite when not scored)."""
        return float("inf") if self.score is None else abs(self.score - threshold)


def triage_order(
    items: Iterable[TriageItem], order: str, threshold: float = DEFAULT_THRESHOLD
) -> list[TriageItem]:
    """``items`` in triage ``order`` (a key of :data:`TRIAGE_ORDERS`).

    Unscored slides come last in every order; ties keep the cohort's order.

    Raises
    ------
    ValueError
        An unknown order.
    """
    if order not in TRIAGE_ORDERS:
        raise ValueError(f"unknown triage order {order!r} (one of {', '.join(TRIAGE_ORDERS)})")
    listed = list(items)
    scored = [item for item in listed if item.score is not None]
    unscored = [item for item in listed if item.score is None]
    if order == "score":
        scored.sort(key=lambda item: -float(item.score))  # type: ignore[arg-type]
    elif order == "disagreement":
        # A confident disagreement is the likeliest error of either the model or the label;
        # the slides that agree follow by score.
        scored.sort(
            key=lambda item: (
                (0, -item.margin(threshold))
                if item.disagrees(threshold)
                else (1, -float(item.score))  # type: ignore[arg-type]
            )
        )
    else:
        scored.sort(key=lambda item: item.margin(threshold))
    return scored + unscored


def next_item(
    ordered: Sequence[TriageItem], current: str | None, step: int = 1, unreviewed: bool = True
) -> TriageItem | None:
    """The slide after (``step`` 1) or before (-1) ``current`` in ``ordered``.

    With ``unreviewed``, slides that already have a decision are skipped.  From no current
    slide (or one not in the queue) the first (or last) is taken.  None at the end.
    """
    keys = [item.key for item in ordered]
    if current in keys:
        index = keys.index(current) + step
    else:
        index = 0 if step > 0 else len(ordered) - 1
    while 0 <= index < len(ordered):
        item = ordered[index]
        if not (unreviewed and item.status):
            return item
        index += step
    return None


def summary(items: Sequence[TriageItem], threshold: float = DEFAULT_THRESHOLD) -> str:
    """One line: how many slides are scored, called positive, in disagreement and decided."""
    scored = [item for item in items if item.score is not None]
    positive = sum(item.call(threshold) == 1 for item in scored)
    disagree = sum(item.disagrees(threshold) for item in scored)
    decided = sum(bool(item.status) for item in items)
    return (
        f"{len(items)} slides · {len(scored)} scored · {positive} called positive at "
        f"{threshold:.2f} · {disagree} disagree with their label · {decided} decided"
    )
