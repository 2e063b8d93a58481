"""Patch label and flag tables (``labels.csv``, ``refined_labels.csv``, ``flags.csv``): one reader.

Every table names a patch by its slide and level-0 box (``slide,x,y,width,height``).  A labels
table adds ``label`` (and optionally ``trusted``: ``1``/``0``, ``true``/``false``, ``yes``/``no``);
a flags table, the review list of a label-refinement run, adds ``given``, ``suggested`` and
optionally ``confidence``, ``g`` and ``rank`` (else the file order is the rank, most suspect
first).  Training, the project store, flag import and the run comparison all read them here, so
a box or a trusted flag means the same everywhere and a bad row is one line naming file and row.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pathviewer.core.errors import CohortError, shown

BOX_COLUMNS = ("slide", "x", "y", "width", "height")
LABEL_COLUMNS = (*BOX_COLUMNS, "label")
FLAG_COLUMNS = (*BOX_COLUMNS, "given", "suggested", "confidence", "g")

#: File names in a label-refinement run folder.
FLAGS_CSV = "flags.csv"
REFINED_LABELS_CSV = "refined_labels.csv"

TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "n", "f"})

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels table: the slide as written, its box, the label, whether trusted."""

    slide: str
    x: int
    y: int
    width: int
    height: int
    label: str
    trusted: bool
    line: int

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.width, self.height)


@dataclass(frozen=True)
class FlagRow:
    """One row of a flags table (``confidence`` and ``g`` may be absent)."""

    slide: str
    x: int
    y: int
    width: int
    height: int
    given: str
    suggested: str
    confidence: float | None
    g: float | None
    rank: int
    line: int

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.width, self.height)


def read_rows(
    path: str | os.PathLike[str], required: Sequence[str], what: str = "table"
) -> list[tuple[int, dict[str, str]]]:
    """``(line number, row)`` pairs of a CSV with the ``required`` columns, values stripped.

    Raises
    ------
    CohortError
        Missing or empty file, not a text CSV, or missing columns (named).
    """
    path = Path(path)
    if not path.is_file():
        raise CohortError(f"{path}: {what} not found")
    need = ",".join(required)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fields = [(f or "").strip() for f in (reader.fieldnames or [])]
            if not fields:
                raise CohortError(f"{path}: empty {what} (need {need})")
            missing = [c for c in required if c not in fields]
            if missing:
                raise CohortError(f"{path}: missing column(s) {', '.join(missing)} (need {need})")
            rows = []
            for line, raw in enumerate(reader, start=2):
                if None in raw:  # csv puts values beyond the header under the key None
                    raise CohortError(
                        f"{path} row {line}: more values than the header's {len(fields)} columns"
                    )
                rows.append((line, {(k or "").strip(): (v or "").strip() for k, v in raw.items()}))
            return rows
    except UnicodeDecodeError:
        raise CohortError(f"{path}: not a text CSV file") from None
    except csv.Error as error:
        raise CohortError(f"{path}: malformed CSV ({error})") from None
    except OSError as error:
        raise CohortError(f"{path}: cannot read ({error.strerror or error})") from None


def check_file_name(name: str, where: str, column: str = "slide") -> str:
    """A file named in a table row: not empty, and no NUL (no file system takes one).

    Raises
    ------
    CohortError
        Names ``where`` and the column.
    """
    if not name:
        raise CohortError(f"{where}: empty {column}")
    if "\x00" in name:
        raise CohortError(f"{where}: the {column} name holds a NUL character")
    return name


def parse_box(row: dict[str, str], where: str) -> Box:
    """The ``x, y, width, height`` of a row: whole numbers (``256`` or ``256.0``), a non-empty box.

    Raises
    ------
    CohortError
        Not a whole, finite number, or a box of no area; names ``where``.
    """
    values = []
    for column in ("x", "y", "width", "height"):
        try:
            number = float(row.get(column) or "")
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number != int(number) or abs(number) > 2**53:
            raise CohortError(f"{where}: x, y, width and height must be whole numbers")
        values.append(int(number))
    x, y, width, height = values
    if width <= 0 or height <= 0:
        raise CohortError(f"{where}: empty patch box {width}x{height}")
    return x, y, width, height


def parse_trusted(text: str, where: str) -> bool:
    """A ``trusted`` cell: ``1``/``true``/``yes`` or ``0``/``false``/``no``/empty."""
    word = text.lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise CohortError(f"{where}: trusted must be 1 or 0, got {shown(text)}")
    return word in TRUE_WORDS


def _optional_number(text: str | None, column: str, where: str) -> float | None:
    if text in (None, ""):
        return None
    try:
        number = float(text)
    except ValueError:
        raise CohortError(f"{where}: {column} must be a number, got {shown(text)}") from None
    if not math.isfinite(number):
        raise CohortError(f"{where}: {column} must be a finite number, got {shown(text)}")
    return number


def read_labels(path: str | os.PathLike[str], label_column: str = "label") -> list[LabelRow]:
    """The rows of a labels table (``label_column`` holds the class; may be empty of rows).

    Raises
    ------
    CohortError
        A malformed file or row: empty slide or label, bad box, bad ``trusted`` (names the row).
    """
    path = Path(path)
    out = []
    for line, row in read_rows(path, (*BOX_COLUMNS, label_column), "label file"):
        where = f"{path} row {line}"
        check_file_name(row["slide"], where)
        box = parse_box(row, where)
        label = row[label_column]
        if not label:
            raise CohortError(f"{where}: empty {label_column}")
        trusted = parse_trusted(row.get("trusted", ""), where)
        out.append(LabelRow(row["slide"], *box, label, trusted, line))
    return out


def read_flags(path: str | os.PathLike[str]) -> list[FlagRow]:
    """The rows of a flags table in rank order.

    Raises
    ------
    CohortError
        A malformed file or row: empty slide, given or suggested, bad box or number.
    """
    path = Path(path)
    out = []
    rows = read_rows(path, (*BOX_COLUMNS, "given", "suggested"), "flags file")
    for line, row in rows:
        where = f"{path} row {line}"
        if not row["slide"] or not row["given"] or not row["suggested"]:
            raise CohortError(f"{where}: empty slide, given or suggested")
        check_file_name(row["slide"], where)
        box = parse_box(row, where)
        rank = _optional_number(row.get("rank"), "rank", where)
        out.append(
            FlagRow(
                row["slide"],
                *box,
                row["given"],
                row["suggested"],
                _optional_number(row.get("confidence"), "confidence", where),
                _optional_number(row.get("g"), "g", where),
                line - 2 if rank is None else int(rank),
                line,
            )
        )
    return out
