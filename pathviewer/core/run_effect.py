"""What the reviewed labels changed between two label-refinement runs.

After an annotator's decisions, the next ``train noisy --project`` run trains on them as
trusted labels.  Comparing its ``flags.csv`` and ``refined_labels.csv`` with the previous run's
says what the corrections did: which flags disappeared, which are new, and how well each run's
refined labels agree with the labels the annotators now trust.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pathviewer.core.patch_tables import FLAGS_CSV, REFINED_LABELS_CSV, read_flags, read_labels

Box = tuple[str, int, int, int, int]


def _flag_boxes(path: Path) -> dict[Box, str]:
    return {(str(Path(r.slide)), *r.box): r.suggested for r in read_flags(path)}


def _label_boxes(path: Path) -> dict[Box, str]:
    return {(str(Path(r.slide)), *r.box): r.label for r in read_labels(path)}


def compare_refinement_runs(
    before: str | os.PathLike[str],
    after: str | os.PathLike[str],
    trusted: Mapping[Box, str] | None = None,
) -> dict[str, Any]:
    """Flags and refined labels of run ``after`` against run ``before`` (run folders).

    Parameters
    ----------
    trusted
        The trusted labels (by box) to score both runs' refined labels on, e.g. the
        project's reviewed patches.

    Returns
    -------
    dict
        ``flags``: counts in each run, ``disappeared`` (flagged before, not after), ``new``
        and ``kept``; ``refined_changed``: boxes whose refined label differs; with ``trusted``,
        ``trusted_accuracy`` of each run's refined labels on the trusted boxes both runs have.

    Raises
    ------
    CohortError
        A run lacks flags.csv or refined_labels.csv, or a row is malformed (named).
    """
    runs = {"before": Path(before), "after": Path(after)}
    flags = {k: _flag_boxes(p / FLAGS_CSV) for k, p in runs.items()}
    refined = {k: _label_boxes(p / REFINED_LABELS_CSV) for k, p in runs.items()}
    a, b = set(flags["before"]), set(flags["after"])
    common = set(refined["before"]) & set(refined["after"])
    report: dict[str, Any] = {
        "before": str(runs["before"]),
        "after": str(runs["after"]),
        "flags": {
            "before": len(a),
            "after": len(b),
            "disappeared": len(a - b),
            "new": len(b - a),
            "kept": len(a & b),
        },
        "refined_changed": sum(refined["before"][k] != refined["after"][k] for k in common),
    }
    if trusted is not None:
        scored = [box for box in trusted if box in common]
        report["trusted_patches"] = len(scored)
        report["trusted_accuracy"] = {
            name: (
                sum(refined[name][box] == trusted[box] for box in scored) / len(scored)
                if scored
                else None
            )
            for name in ("before", "after")
        }
    return report
