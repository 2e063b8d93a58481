"""One reader for labels and flags tables: the same box rule and one-line errors everywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathviewer.cli import main as cli
from pathviewer.core.errors import CohortError
from pathviewer.core.patch_tables import read_flags, read_labels
from pathviewer.core.store import Project

FLAGS = "slide,x,y,width,height,given,suggested,confidence,g\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_boxes_are_whole_numbers_and_the_rank_is_the_file_order(tmp_path: Path) -> None:
    labels = _write(
        tmp_path / "l.csv",
        "slide,x,y,width,height,label,trusted\na.svs,0,256.0,256,256,Tumor,yes\n",
    )
    (row,) = read_labels(labels)
    assert (row.box, row.trusted, row.line) == ((0, 256, 256, 256), True, 2)
    flags = _write(tmp_path / "f.csv", FLAGS + "a.svs,0,0,8,8,A,B,0.9,\nb.svs,8,0,8,8,A,B,,0.5\n")
    first, second = read_flags(flags)
    assert (first.rank, first.confidence, first.g) == (0, 0.9, None)
    assert (second.rank, second.g, second.slide) == (1, 0.5, "b.svs")


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ("a.svs,inf,0,8,8,A,B,0.9,0.5", "row 2: x, y, width and height must be whole numbers"),
        ("a.svs,1e400,0,8,8,A,B,0.9,0.5", "row 2: x, y, width and height must be whole numbers"),
        ("a.svs,0.5,0,8,8,A,B,0.9,0.5", "row 2: x, y, width and height must be whole numbers"),
        ("a.svs,0,0,0,8,A,B,0.9,0.5", "row 2: empty patch box 0x8"),
        ("a.svs,0,0,8,8,A,B,nan,0.5", "row 2: confidence must be a finite number"),
        ("a.svs,0,0,8,8,A,B,high,0.5", "row 2: confidence must be a number"),
        (",0,0,8,8,A,B,0.9,0.5", "row 2: empty slide, given or suggested"),
    ],
)
def test_a_bad_flag_is_one_line_naming_the_row_and_nothing_is_imported(
    tmp_path: Path, row: str, match: str
) -> None:
    flags = _write(
        tmp_path / "flags.csv",
        FLAGS + "a.svs,0,0,8,8,A,B,0.9,0.5\n" + row + "\n",
    )
    match = match.replace("row 2", "row 3")
    with pytest.raises(CohortError, match=match):
        read_flags(flags)
    with Project.create(tmp_path / "p") as project:
        with pytest.raises(CohortError, match=match):
            project.import_flags(flags)
        assert project.review_queue() == [] and project.slides() == []


def test_an_infinite_box_in_flags_is_exit_code_2_not_a_traceback(tmp_path: Path, capsys) -> None:
    flags = _write(tmp_path / "flags.csv", FLAGS + "a.svs,inf,0,8,8,A,B,0.9,0.5\n")
    Project.create(tmp_path / "p").close()
    assert cli(["labels", "import-flags", str(flags), "--project", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "row 2" in err and "Traceback" not in err


def test_a_labels_table_without_rows_or_with_a_bad_trusted_cell(tmp_path: Path) -> None:
    assert read_labels(_write(tmp_path / "l.csv", "slide,x,y,width,height,label\n")) == []
    bad = _write(tmp_path / "b.csv", "slide,x,y,width,height,label,trusted\na,0,0,1,1,T,maybe\n")
    with pytest.raises(CohortError, match="row 2: trusted must be 1 or 0"):
        read_labels(bad)
    with pytest.raises(CohortError, match="missing column"):
        read_labels(_write(tmp_path / "c.csv", "slide,x,y\n"))
    with pytest.raises(CohortError, match="not found"):
        read_labels(tmp_path / "none.csv")
