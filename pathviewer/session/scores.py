"""Slide scores of the open cohort: one store that every writer goes through.

A predictions folder loaded into the heatmap view and an "Analyse this slide" run both score
slides; the cohort list shows the scores.  Keeping them here, outside any widget, means a
score survives the cohort table being rebuilt (opening the cohort again) and the newest
score of a slide wins whoever wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

#: Called with the slide keys whose scores changed.
Listener = Callable[[frozenset[str]], None]


@dataclass(frozen=True)
class SlideScore:
    """A slide's model score, its predicted label and where the score came from."""

    score: float
    pred: int | None
    source: str = ""


class CohortScores:
    """Scores by slide key (the cohort CSV's ``slide`` column), with change listeners."""

    def __init__(self) -> None:
        self._scores: dict[str, SlideScore] = {}
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(changed_keys)`` after every change."""
        self._listeners.append(listener)

    def update(self, scores: Mapping[str, tuple[float, int | None]], source: str = "") -> None:
        """Set the scores of the slides in ``scores`` (others keep theirs).

        Parameters
        ----------
        scores
            ``{slide key: (score, predicted label or None)}``.
        source
            What scored them (a predictions folder, a run's analysis), shown in tooltips.
        """
        changed = set()
        for key, (score, pred) in scores.items():
            value = SlideScore(float(score), None if pred is None else int(pred), source)
            if self._scores.get(key) != value:
                self._scores[key] = value
                changed.add(key)
        if changed:
            self._notify(frozenset(changed))

    def clear(self) -> None:
        """Forget every score (a different cohort was opened)."""
        if self._scores:
            changed = frozenset(self._scores)
            self._scores.clear()
            self._notify(changed)

    def get(self, key: str) -> SlideScore | None:
        """The score of slide ``key``, or None."""
        return self._scores.get(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def _notify(self, changed: frozenset[str]) -> None:
        for listener in list(self._listeners):
            listener(changed)
