"""Annotation files read and written as streams (issue 15 item 10).

The streamed readers and writers must give exactly what the whole-document ones gave (the same
annotations, the same bytes), keep every error one line, and leave no file when a write fails
part-way.  Their memory is measured by ``benchmarks/annotations_memory.py``, not here.
"""

from __future__ import annotations

import errno
import gzip
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, Point, box

import pathviewer.core.annotations as annotations_module
from pathviewer.cli import main
from pathviewer.core.annotations import (
    Annotation,
    feature_from_annotation,
    read_annotations,
    read_geojson,
    write_annotations,
    write_geojson,
)
from pathviewer.core.asap import read_asap, write_asap
from pathviewer.core.errors import AnnotationError
from tests.conftest import shared_file


def _camelyon() -> Path:
    return shared_file("fixtures", "camelyon16", "tumor_085.xml")


def _vertices_by_tree(path: Path) -> list[np.ndarray]:
    """Each annotation's vertices in Order order, from the whole tree (the reference)."""
    out = []
    for element in ET.parse(path).getroot().findall("./Annotations/Annotation"):
        coords = sorted(element.iter("Coordinate"), key=lambda c: float(c.attrib["Order"]))
        out.append(np.array([[float(c.attrib["X"]), float(c.attrib["Y"])] for c in coords]))
    return out


def _exterior(annotation: Annotation) -> np.ndarray:
    return np.asarray(annotation.geometry.exterior.coords)[:-1]


def _tree_xml(annotations: list[Annotation]) -> bytes:
    """ASAP XML as one ElementTree, indented and serialized whole (the former writer's way)."""
    root = ET.Element("ASAP_Annotations")
    container = ET.SubElement(root, "Annotations")
    groups: dict[str, str] = {}
    for index, annotation in enumerate(annotations):
        color = "#{:02x}{:02x}{:02x}".format(*annotation.color)  # type: ignore[str-format]
        group = annotation.class_name or "None"
        if annotation.class_name:
            groups.setdefault(group, color)
        element = ET.SubElement(
            container,
            "Annotation",
            Name=annotation.name or f"Annotation {index}",
            Type="Polygon",
            PartOfGroup=group,
            Color=color,
        )
        coordinates = ET.SubElement(element, "Coordinates")
        for order, (x, y) in enumerate(_exterior(annotation).tolist()):
            ET.SubElement(coordinates, "Coordinate", Order=str(order), X=repr(x), Y=repr(y))
    container_groups = ET.SubElement(root, "AnnotationGroups")
    for name, color in groups.items():
        group_element = ET.SubElement(
            container_groups, "Group", Name=name, PartOfGroup="None", Color=color
        )
        ET.SubElement(group_element, "Attributes")
    ET.indent(root, space="\t")
    return b'<?xml version="1.0"?>\n' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


# --------------------------------------------------------------------------- same results


def test_streamed_asap_read_matches_the_whole_tree_on_camelyon16() -> None:
    path = _camelyon()
    found = read_asap(path)
    expected = _vertices_by_tree(path)
    assert len(found) == len(expected) == 50
    for annotation, vertices in zip(found, expected, strict=True):
        np.testing.assert_array_equal(_exterior(annotation), vertices)
        assert annotation.color == (0x00, 0xAA, 0x00)  # the group's colour, read after the shapes


def test_streamed_writers_give_the_bytes_of_whole_document_writers(tmp_path: Path) -> None:
    original = read_asap(_camelyon())
    write_asap(tmp_path / "t.xml", original)
    assert (tmp_path / "t.xml").read_bytes() == _tree_xml(original)
    write_geojson(tmp_path / "t.geojson", original)
    whole = {
        "type": "FeatureCollection",
        "features": [feature_from_annotation(a) for a in original],
    }
    assert (tmp_path / "t.geojson").read_text(encoding="utf-8") == json.dumps(whole)
    write_geojson(tmp_path / "t.geojson.gz", original)
    assert gzip.decompress((tmp_path / "t.geojson.gz").read_bytes()) == json.dumps(whole).encode()
    # The gzip header names no temporary file (GzipFile would take the handle's name).
    assert b".tmp" not in (tmp_path / "t.geojson.gz").read_bytes()[:64]
    for empty in ("e.xml", "e.geojson"):
        write_annotations(tmp_path / empty, [])
        assert read_annotations(tmp_path / empty) == []


def test_camelyon16_round_trips_through_both_streams(tmp_path: Path) -> None:
    original = read_asap(_camelyon())
    assert main(["annotations", "convert", str(_camelyon()), str(tmp_path / "a.geojson")]) == 0
    assert (
        main(["annotations", "convert", str(tmp_path / "a.geojson"), str(tmp_path / "b.xml")]) == 0
    )
    for again in (read_geojson(tmp_path / "a.geojson"), read_asap(tmp_path / "b.xml")):
        assert len(again) == len(original) == 50
        for a, b in zip(original, again, strict=True):
            assert (a.name, a.class_name, a.color) == (b.name, b.class_name, b.color)
            np.testing.assert_array_equal(_exterior(a), _exterior(b))


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_geojson_read_in_small_pieces_matches_one_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    sample = [
        # NaN measurements: QuPath writes them, json reads them, so must the stream.
        Annotation(box(0.5, 1.25, 9e5, 7), "Tumor", (200, 0, 0), measurements={"m": float("nan")}),
        Annotation(Point(3, 4), None, name="é \u2603 \U0001f600", uid="abc"),
        Annotation(LineString([(0, 0), (123456789.123, 2)]), "Other", metadata={"k": "v"}),
    ]
    path = tmp_path / "s.geojson"
    write_geojson(path, sample)
    pretty = tmp_path / "pretty.geojson"  # line breaks and indents between the values
    pretty.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(json.loads(path.read_text()), indent=3).encode()
    )
    whole = read_geojson(path)
    monkeypatch.setattr(annotations_module, "_CHUNK_CHARS", chunk)
    for source in (path, pretty):
        pieces = read_geojson(source)
        assert len(pieces) == len(whole) == 3
        for a, b in zip(whole, pieces, strict=True):
            assert a.geometry.equals_exact(b.geometry, tolerance=0)
            assert (a.name, a.uid, a.class_name, a.color, a.metadata) == (
                b.name,
                b.uid,
                b.class_name,
                b.color,
                b.metadata,
            )
            assert a.measurements.keys() == b.measurements.keys()
    assert np.isnan(whole[0].measurements["m"])


_FEATURE = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}'


@pytest.mark.parametrize(
    "text",
    [
        "",
        "  \n",
        '{"type": "FeatureCollection", "features": [' + _FEATURE + ", " + _FEATURE,
        '{"type": "FeatureCollection", "features": [' + _FEATURE + " " + _FEATURE + "]}",
        '{"type": "FeatureCollection",\n "features": [' + _FEATURE + ",\n ]}",
        '{"type": "FeatureCollection", "features": [' + _FEATURE + ']}\n  {"more": 1}',
        '{"type" "FeatureCollection"}',
        '{"type": "FeatureCollection",}',
        '{"type": "FeatureCollection" "features": []}',
        '[\n\n  {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2,]}}]',
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "name": "unterminated',
    ],
)
@pytest.mark.parametrize("chunk", [1, 7, 1 << 22])
def test_json_errors_name_the_place_json_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, chunk: int
) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    path = tmp_path / "bad.geojson"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(annotations_module, "_CHUNK_CHARS", chunk)
    with pytest.raises(AnnotationError) as caught:
        read_geojson(path)
    assert str(caught.value) == f"{path}: not a JSON file ({str(expected.value)!r})"


def test_json_is_checked_to_the_end_before_a_bad_feature_is_named(tmp_path: Path) -> None:
    # A whole-document parse reports "not JSON" before any feature: so does the stream.
    path = tmp_path / "a.geojson"
    bad = '{"type": "Feature", "geometry": {"type": "Point", "coordinates": ["x", 2]}}'
    path.write_text('{"type": "FeatureCollection", "features": [' + bad + ", " + _FEATURE + ", ")
    with pytest.raises(AnnotationError, match="not a JSON file"):
        read_geojson(path)
    path.write_text('{"features": [' + bad + '], "type": "Other"}')  # the type comes last
    with pytest.raises(AnnotationError, match="not a GeoJSON FeatureCollection"):
        read_geojson(path)
    path.write_text('{"features": [' + _FEATURE + ", " + bad + '], "type": "FeatureCollection"}')
    with pytest.raises(AnnotationError, match=r"feature 1: invalid Point"):
        read_geojson(path)


def test_old_style_measurement_that_is_not_a_number_names_the_feature(tmp_path: Path) -> None:
    path = tmp_path / "m.geojson"
    feature = json.loads(_FEATURE)
    feature["properties"] = {"measurements": [{"name": "area", "value": "big"}]}
    path.write_text(json.dumps([feature, feature]))
    with pytest.raises(AnnotationError, match=r"feature 0: measurement 'area' .*'big', not a"):
        read_geojson(path)


# --------------------------------------------------------------------------- nothing half-done


def _many(count: int) -> list[Annotation]:
    return [
        Annotation(
            shapely.box(10 * i, 10 * i, 10 * i + 5, 10 * i + 7), "Tumor", (200, 0, 0), name=f"r{i}"
        )
        for i in range(count)
    ]


def test_truncated_asap_xml_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    whole = tmp_path / "whole.xml"
    write_asap(whole, _many(200))
    data = whole.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 10):  # after many complete annotations, too
        path = tmp_path / "cut.xml"
        path.write_bytes(data[:cut])
        with pytest.raises(AnnotationError) as caught:
            read_asap(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: not well-formed XML (") and "\n" not in message
        out = tmp_path / "out" / "cut.geojson"
        assert main(["annotations", "convert", str(path), str(out)]) == 2
        assert not out.parent.exists() or list(out.parent.iterdir()) == []
    # A bad coordinate deep in the file: the annotation is named, nothing is returned.
    path.write_bytes(data.replace(b'X="1500.0"', b'X="x"', 1))
    with pytest.raises(AnnotationError, match=r"annotation 150 \('r150'\).*not numeric"):
        read_asap(path)


def _failing_after(count: int, error: BaseException) -> Iterator[Annotation]:
    yield from _many(count)
    raise error


@pytest.mark.parametrize("name", ["out.xml", "out.geojson", "out.geojson.gz"])
@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "interrupted"],
)
def test_a_failure_part_way_leaves_no_output(
    tmp_path: Path, name: str, error: BaseException
) -> None:
    target = tmp_path / name
    with pytest.raises(type(error)):
        write_annotations(target, _failing_after(500, error))
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary one
    write_annotations(target, _many(3))  # an existing file is kept whole
    before = target.read_bytes()
    with pytest.raises(type(error)):
        write_annotations(target, _failing_after(500, error))
    assert target.read_bytes() == before and list(tmp_path.iterdir()) == [target]


def test_a_failing_write_call_leaves_no_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real_tostring = ET.tostring

    def tostring(*args: object, **kwargs: object) -> bytes:
        calls["n"] += 1
        if calls["n"] == 100:  # the 100th annotation cannot be serialized
            raise MemoryError
        return real_tostring(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ET, "tostring", tostring)
    with pytest.raises(MemoryError):
        write_asap(tmp_path / "out.xml", _many(300))
    assert calls["n"] == 100  # it was writing one annotation at a time
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    # An annotation ASAP cannot hold, late in the list: refused by name, nothing written.
    late = [*_many(300), Annotation(LineString([(0, 0), (1, 1), (2, 0)]), name="path")]
    with pytest.raises(AnnotationError, match=r"annotation 300 \('path'\).*LineString"):
        write_asap(tmp_path / "out.xml", late)
    assert list(tmp_path.iterdir()) == []
