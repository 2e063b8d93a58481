"""The cohort's slide scores: one store, listeners told what changed."""

from __future__ import annotations

from pathviewer.session.scores import CohortScores, SlideScore


def test_update_merges_and_reports_only_changed_keys() -> None:
    scores = CohortScores()
    seen: list[frozenset[str]] = []
    scores.subscribe(seen.append)
    scores.update({"a.svs": (0.9, 1), "b.svs": (0.1, 0)}, source="run-1")
    scores.update({"a.svs": (0.9, 1), "b.svs": (0.7, 1)}, source="run-1")
    assert seen == [frozenset({"a.svs", "b.svs"}), frozenset({"b.svs"})]
    assert scores.get("b.svs") == SlideScore(0.7, 1, "run-1")
    scores.update({"c.svs": (0.5, None)}, source="analysis")  # others keep theirs
    assert len(scores) == 3 and scores.get("a.svs") == SlideScore(0.9, 1, "run-1")


def test_clear_forgets_everything_and_says_so() -> None:
    scores = CohortScores()
    scores.update({"a.svs": (0.2, 0)})
    seen: list[frozenset[str]] = []
    scores.subscribe(seen.append)
    scores.clear()
    scores.clear()  # nothing left: no second notification
    assert seen == [frozenset({"a.svs"})] and scores.get("a.svs") is None
