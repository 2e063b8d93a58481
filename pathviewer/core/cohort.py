"""Cohort CSV: ``slide,label,split,annotations`` with paths relative to the CSV.

``label`` is 0 (negative) or 1 (positive); ``split`` is ``train`` or ``test`` (``val`` is accepted
too); ``annotations`` is an optional GeoJSON file of ground-truth regions (empty for none); tumour is the
``Tumor`` class of that file, other classes (``Stroma``...) may be present too.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pathviewer.core.errors import CohortError, shown
from pathviewer.core.identity import slide_path_key
from pathviewer.core.patch_tables import check_file_name

COHORT_COLUMNS = ("slide", "label", "split", "annotations")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CohortEntry:
    """One row of a cohort CSV.

    Attributes
    ----------
    slide
        The slide as written in the CSV (used as the key in every output table).
    path
        Absolute path of the slide file.
    label
        0 (negative) or 1 (positive), or None when unknown.
    split
        ``train``, ``val`` or ``test``.
    annotations
        Absolute path of the slide's ground-truth GeoJSON (``Tumor`` regions and others), or None.
    row
        1-based line number in the CSV (header is line 1), for messages.
    """

    slide: str
    path: Path
    label: int | None
    split: str
    annotations: Path | None
    row: int


def read_cohort(csv_path: str | os.PathLike[str], check_files: bool = True) -> list[CohortEntry]:
    """Read and validate a cohort CSV.

    Parameters
    ----------
    csv_path
        The CSV file.
    check_files
        Fail when a slide or annotation file does not exist.

    Raises
    ------
    CohortError
        Missing file or columns, unknown label or split, duplicate or missing slide; the message
        names the CSV and the row.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CohortError(f"{csv_path}: cohort file not found")
    base = csv_path.parent
    entries: list[CohortEntry] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            missing = [c for c in ("slide", "label") if c not in fields]
            if missing:
                raise CohortError(
                    f"{csv_path}: missing column(s) {', '.join(missing)} (need {','.join(COHORT_COLUMNS)})"
                )
            seen: set[str] = set()
            rows_of_path: dict[Path, int] = {}
            for line_no, raw in enumerate(reader, start=2):
                if None in raw:  # csv puts values beyond the header under the key None
                    raise CohortError(
                        f"{csv_path} row {line_no}: more values than the header's"
                        f" {len(fields)} columns"
                    )
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                slide = check_file_name(row.get("slide", ""), f"{csv_path} row {line_no}")
                if slide in seen:
                    raise CohortError(
                        f"{csv_path} row {line_no}: slide {shown(slide)} listed twice"
                    )
                seen.add(slide)
                label_text = row.get("label", "")
                label: int | None
                if label_text == "":
                    label = None
                elif label_text in ("0", "1", "0.0", "1.0"):
                    label = int(float(label_text))
                else:
                    raise CohortError(
                        f"{csv_path} row {line_no}: unknown label {shown(label_text)} for {shown(slide)} (use 0 or 1)"
                    )
                split = row.get("split", "") or "train"
                if split not in SPLITS:
                    raise CohortError(
                        f"{csv_path} row {line_no}: unknown split {shown(split)} (use {', '.join(SPLITS)})"
                    )
                path = Path(slide_path_key(slide, base))
                if check_files and not path.is_file():
                    raise CohortError(f"{csv_path} row {line_no}: slide file not found: {path}")
                if path in rows_of_path:
                    # ``slide_01.tif`` and ``./slide_01.tif`` are one slide: two labels for it
                    # would train on a contradiction.
                    raise CohortError(
                        f"{csv_path} row {line_no}: slide {shown(slide)} is the file of row "
                        f"{rows_of_path[path]} again ({path})"
                    )
                rows_of_path[path] = line_no
                annotations_text = row.get("annotations", "")
                annotations = None
                if annotations_text:
                    where = f"{csv_path} row {line_no}"
                    check_file_name(annotations_text, where, "annotations")
                    annotations = (base / annotations_text).resolve()
                if check_files and annotations is not None and not annotations.is_file():
                    raise CohortError(
                        f"{csv_path} row {line_no}: annotation file not found: {annotations}"
                    )
                entries.append(CohortEntry(slide, path, label, split, annotations, line_no))
    except UnicodeDecodeError:
        raise CohortError(f"{csv_path}: not a text CSV file") from None
    except csv.Error as error:
        raise CohortError(f"{csv_path}: malformed CSV ({error})") from None
    if not entries:
        raise CohortError(f"{csv_path}: no slides listed")
    return entries


def select(entries: Iterable[CohortEntry], split: str | None) -> list[CohortEntry]:
    """Entries of one split (all when ``split`` is None or ``all``)."""
    if split in (None, "all"):
        return list(entries)
    return [e for e in entries if e.split == split]


def require_both_classes(entries: Sequence[CohortEntry], what: str) -> None:
    """Raise when ``entries`` lack a positive or a negative slide (weak supervision needs both)."""
    labels = {e.label for e in entries}
    if not {0, 1} <= labels:
        raise CohortError(
            f"{what}: needs at least one positive (1) and one negative (0) slide, found labels {sorted(x for x in labels if x is not None)}"
        )


def write_cohort(csv_path: str | os.PathLike[str], rows: Iterable[dict[str, str]]) -> None:
    """Write a cohort CSV atomically (temporary file, then rename)."""
    csv_path = Path(csv_path)
    tmp = csv_path.with_suffix(csv_path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COHORT_COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COHORT_COLUMNS})
    os.replace(tmp, csv_path)
