"""Cohort CSV validation: every bad row is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathviewer.core.cohort import read_cohort, require_both_classes, select, write_cohort
from pathviewer.core.errors import CohortError


def _make(tmp_path: Path, text: str, files: tuple[str, ...] = ("a.tif", "b.tif")) -> Path:
    for name in files:
        (tmp_path / name).write_bytes(b"x")
    csv_path = tmp_path / "cohort.csv"
    csv_path.write_text(text)
    return csv_path


def test_reads_rows_with_relative_paths(tmp_path: Path) -> None:
    path = _make(tmp_path, "slide,label,split,annotations\na.tif,1,train,\nb.tif,0,test,\n")
    entries = read_cohort(path)
    assert [e.slide for e in entries] == ["a.tif", "b.tif"]
    assert entries[0].path == (tmp_path / "a.tif").resolve()
    assert [e.label for e in entries] == [1, 0]
    assert [e.split for e in select(entries, "test")] == ["test"]
    require_both_classes(entries, "cohort")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("slide,split\na.tif,train\n", "missing column.*label"),
        ("slide,label,split\na.tif,2,train\n", "row 2: unknown label '2'"),
        ("slide,label,split\na.tif,1,train\nmissing.tif,0,test\n", "row 3: slide file not found"),
        ("slide,label,split\na.tif,1,holdout\n", "row 2: unknown split"),
        ("slide,label,split\na.tif,1,train\na.tif,0,train\n", "row 3: slide 'a.tif' listed twice"),
        (
            "slide,label,split,annotations\na.tif,1,train,nope.geojson\n",
            "row 2: annotation file not found",
        ),
        ("slide,label,split\n", "no slides"),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(CohortError, match=pattern):
        read_cohort(_make(tmp_path, text))


def test_one_class_is_refused(tmp_path: Path) -> None:
    entries = read_cohort(_make(tmp_path, "slide,label\na.tif,1\nb.tif,1\n"))
    with pytest.raises(CohortError, match="at least one positive"):
        require_both_classes(entries, "train split")


def test_write_cohort_round_trip(tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(b"x")
    write_cohort(tmp_path / "c.csv", [{"slide": "a.tif", "label": "1", "split": "test"}])
    assert read_cohort(tmp_path / "c.csv")[0].split == "test"
    assert not list(tmp_path.glob("*.tmp"))
