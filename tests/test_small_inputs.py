"""Small bad inputs of issue 15 item 11: each is refused in one line or read as meant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.annotations import AnnotationError, read_annotations
from pathviewer.core.cohort import read_cohort
from pathviewer.core.errors import CohortError
from pathviewer.core.store import DB_NAME, Project, ProjectError


def test_one_slide_twice_under_two_names_is_refused(tmp_path: Path) -> None:
    import tifffile

    tifffile.imwrite(tmp_path / "slide_01.tif", np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    csv = tmp_path / "c.csv"
    csv.write_text("slide,label,split\nslide_01.tif,1,train\n./slide_01.tif,0,train\n")
    with pytest.raises(CohortError, match="row 3: slide './slide_01.tif' is the file of row 2"):
        read_cohort(csv)


def test_an_empty_project_database_is_not_opened_as_a_new_project(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"")
    with pytest.raises(ProjectError, match="empty \\(0 bytes\\)"):
        Project.open(folder)


def test_byte_order_marks_are_read_in_geojson_and_tables(tmp_path: Path) -> None:
    geojson = tmp_path / "b.geojson"
    geojson.write_bytes(
        b'\xef\xbb\xbf{"type":"FeatureCollection","features":[{"type":"Feature",'
        b'"geometry":{"type":"Point","coordinates":[1,2]},"properties":{}}]}'
    )
    assert len(read_annotations(geojson)) == 1
    table = tmp_path / "flags.csv"
    table.write_bytes(b"\xef\xbb\xbfslide,x\na.svs,1\n")
    from pathviewer.core.patch_tables import read_rows

    assert read_rows(table, ["slide", "x"]) == [(2, {"slide": "a.svs", "x": "1"})]


def test_a_non_finite_vertex_order_is_refused(tmp_path: Path) -> None:
    xml = tmp_path / "a.xml"
    xml.write_text(
        '<ASAP_Annotations><Annotations><Annotation Name="a" Type="Polygon" PartOfGroup="Tumor">'
        '<Coordinates><Coordinate Order="0" X="0" Y="0"/><Coordinate Order="nan" X="10" Y="0"/>'
        '<Coordinate Order="2" X="10" Y="10"/></Coordinates></Annotation></Annotations>'
        "</ASAP_Annotations>"
    )
    with pytest.raises(AnnotationError, match="Order='nan'"):
        read_annotations(xml)


def test_bad_patch_label_boxes_are_a_project_error(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    with pytest.raises(ProjectError, match="patch label 0: .*whole numbers"):
        project.add_patch_labels([("/x.svs", "a", 0, 10, 10, "Tumor")], source="annotator")
    assert project.patch_labels() == []
    project.close()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("slide,label\na.png,1,extra\n", r"row 2: more values than the header's 2 columns"),
        ("slide,label\na\x00.png,1\n", r"row 2: the slide name holds a NUL character"),
        ("slide,label,annotations\na.png,1,a\x00.geojson\n", r"row 2: the annotations name"),
    ],
)
def test_cohort_rows_that_crashed_the_reader(tmp_path: Path, text: str, match: str) -> None:
    from pathviewer.core.errors import CohortError

    path = tmp_path / "cohort.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CohortError, match=match):
        read_cohort(path, check_files=False)


def test_a_huge_cell_is_quoted_short(tmp_path: Path) -> None:
    from pathviewer.core.errors import CohortError

    path = tmp_path / "cohort.csv"
    path.write_text("slide,label\na.png," + "9" * 5000 + "\n", encoding="utf-8")
    with pytest.raises(CohortError) as caught:
        read_cohort(path, check_files=False)
    assert "unknown label '999" in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b'{"type": "FeatureCollection", "features": [' + b"9" * 5000 + b"]}", "not a JSON file"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|not a JSON file"),
    ],
)
def test_geojson_that_crashed_the_reader(tmp_path: Path, data: bytes, match: str) -> None:
    path = tmp_path / "a.geojson"
    path.write_bytes(data)
    with pytest.raises(AnnotationError, match=match):
        read_annotations(path)
    folder = tmp_path / "folder.geojson"
    folder.mkdir()
    with pytest.raises(AnnotationError, match="is a folder"):
        read_annotations(folder)
