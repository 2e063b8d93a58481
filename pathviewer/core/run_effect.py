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

from pathviewer.core.cohort import read_table
from pathviewer.core.errors import PathViewerError

Box = tuple[str, int, int, int, int]

_BOX = ("slide", "x", "y", "width", "height")


def _boxes(path: Path, label_column: str) -> dict[Box, str]:
    rows, _fields = read_table(path, [*_BOX, label_column])
    out: dict[Box, str] = {}
    for number, row in enumerate(rows, start=2):
        try:
            box = (
                str(Path(row["slide"])),
                int(row["x"]),
                int(row["y"]),
                int(row["width"]),
                int(row["height"]),
            )
        except ValueError:
            raise PathViewerError(
                f"{path} row {number}: x, y, width, height must be whole numbers"
            ) from None
        out[box] = row[label_column]
    return out


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
    PathViewerError
        A run lacks flags.csv or refined_labels.csv, or a row is malformed (named).
    """
    runs = {"before": Path(before), "after": Path(after)}
    flags = {k: _boxes(p / "flags.csv", "suggested") for k, p in runs.items()}
    refined = {k: _boxes(p / "refined_labels.csv", "label") for k, p in runs.items()}
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
