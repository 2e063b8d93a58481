"""ASAP XML import/export, format round trips and ``pathviewer annotations convert``."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, MultiPoint, MultiPolygon, Point, Polygon, box

from pathviewer.cli import main
from pathviewer.core.annotations import (
    Annotation,
    read_annotations,
    read_geojson,
    valid_geometry,
    write_annotations,
    write_geojson,
)
from pathviewer.core.asap import parse_asap, read_asap, write_asap
from pathviewer.core.errors import AnnotationError
from tests.conftest import shared_file

# --------------------------------------------------------------------------- the real file


def test_camelyon16_tumor_085_imports_every_polygon_at_its_coordinates() -> None:
    path = shared_file("fixtures", "camelyon16", "tumor_085.xml")
    raw = ET.parse(path).getroot()
    elements = raw.findall("./Annotations/Annotation")
    annotations = read_asap(path)
    assert len(annotations) == len(elements) == 50
    for element, annotation in zip(elements, annotations, strict=True):
        assert annotation.name == element.attrib["Name"]
        assert annotation.class_name == "metastasis"
        assert annotation.color == (0x00, 0xAA, 0x00)  # the group's colour
        assert annotation.geometry.geom_type == "Polygon"
        coords = sorted(
            element.iter("Coordinate"), key=lambda c: int(c.attrib["Order"])
        )  # file order is Order order here, but do not rely on it
        expected = np.array([[float(c.attrib["X"]), float(c.attrib["Y"])] for c in coords])
        exterior = np.asarray(annotation.geometry.exterior.coords)[:-1]
        np.testing.assert_array_equal(exterior, expected)
    bounds = shapely.total_bounds([a.geometry for a in annotations])
    xs = [float(c.attrib["X"]) for c in raw.iter("Coordinate")]
    ys = [float(c.attrib["Y"]) for c in raw.iter("Coordinate")]
    assert tuple(bounds) == (min(xs), min(ys), max(xs), max(ys))
    # Level-0 coordinates of a CAMELYON slide (README: around 30,000-80,000 px).
    assert 15_000 < bounds[0] < bounds[2] < 90_000
    assert 15_000 < bounds[1] < bounds[3] < 90_000
    assert bounds[2] - bounds[0] > 10_000  # really spread over the slide, not one blob


def test_camelyon16_converts_to_geojson_and_back(tmp_path: Path) -> None:
    path = shared_file("fixtures", "camelyon16", "tumor_085.xml")
    original = read_asap(path)
    assert main(["annotations", "convert", str(path), str(tmp_path / "t.geojson")]) == 0
    assert (
        main(["annotations", "convert", str(tmp_path / "t.geojson"), str(tmp_path / "t.xml")]) == 0
    )
    again = read_asap(tmp_path / "t.xml")
    assert len(again) == len(original) == 50
    # 50 annotations in, 50 <Annotation> elements out: none is split by a repair
    assert (tmp_path / "t.xml").read_bytes().count(b"<Annotation ") == 50
    crossing = 0
    for a, b in zip(original, again, strict=True):
        # Shapes as drawn, vertex for vertex, the self-intersecting ones too (2 in this file).
        assert a.class_name == b.class_name and a.name == b.name
        assert b.geometry.equals_exact(a.geometry, tolerance=0)
        crossing += not a.geometry.is_valid
    assert crossing == 2


# --------------------------------------------------------------------------- parsing details


_DOC = """<?xml version="1.0"?>
<ASAP_Annotations>
  <Annotations>
    <Annotation Name="poly" Type="Polygon" PartOfGroup="Tumor" Color="#ff0000">
      <Coordinates>
        <Coordinate Order="2" X="10" Y="10" />
        <Coordinate Order="0" X="0" Y="0" />
        <Coordinate Order="1" X="10" Y="0" />
        <Coordinate Order="3" X="0" Y="10" />
      </Coordinates>
    </Annotation>
    <Annotation Name="spl" Type="Spline" PartOfGroup="None" Color="#123456">
      <Coordinates>
        <Coordinate Order="0" X="0" Y="0" /><Coordinate Order="1" X="5" Y="0" />
        <Coordinate Order="2" X="5" Y="5" />
      </Coordinates>
    </Annotation>
    <Annotation Name="rect" Type="Rectangle" PartOfGroup="_2" Color="#000000">
      <Coordinates>
        <Coordinate Order="0" X="1.5" Y="2.5" /><Coordinate Order="1" X="3.5" Y="2.5" />
        <Coordinate Order="2" X="3.5" Y="4.5" /><Coordinate Order="3" X="1.5" Y="4.5" />
      </Coordinates>
    </Annotation>
    <Annotation Name="dot" Type="Dot" PartOfGroup="Tumor" Color="#ff0000">
      <Coordinates><Coordinate Order="0" X="7" Y="8" /></Coordinates>
    </Annotation>
    <Annotation Name="set" Type="PointSet" PartOfGroup="Tumor" Color="#ff0000">
      <Coordinates>
        <Coordinate Order="0" X="1" Y="1" /><Coordinate Order="1" X="2" Y="2" />
      </Coordinates>
    </Annotation>
  </Annotations>
  <AnnotationGroups>
    <Group Name="Tumor" PartOfGroup="None" Color="#c80000"><Attributes /></Group>
  </AnnotationGroups>
</ASAP_Annotations>
"""


def test_types_groups_and_colours() -> None:
    poly, spline, rect, dot, pointset = parse_asap(_DOC)
    assert poly.geometry.equals(box(0, 0, 10, 10))
    assert list(poly.geometry.exterior.coords)[:4] == [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert (poly.class_name, poly.color) == ("Tumor", (200, 0, 0))  # group colour wins
    assert spline.geometry.geom_type == "Polygon" and spline.geometry.area == pytest.approx(12.5)
    assert (spline.class_name, spline.color) == (None, (0x12, 0x34, 0x56))
    assert rect.geometry.equals(box(1.5, 2.5, 3.5, 4.5)) and rect.class_name == "_2"
    assert rect.color == (0, 0, 0)  # group without a <Group> entry: annotation colour
    assert dot.geometry.equals(Point(7, 8))
    assert pointset.geometry.equals(MultiPoint([(1, 1), (2, 2)]))


def _break(doc: str, old: str, new: str) -> str:
    assert old in doc
    return doc.replace(old, new, 1)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_DOC[:300], "not well-formed XML"),
        (_break(_DOC, 'X="10" Y="0"', 'X="ten" Y="0"'), r"annotation 0 \('poly'\).*not numeric"),
        (_break(_DOC, 'X="5" Y="5" />', 'X="nan" Y="5" />'), r"annotation 1 \('spl'\).*not finite"),
        (
            _break(_DOC, '<Coordinate Order="2" X="5" Y="5" />', ""),
            r"annotation 1 \('spl'\): a Spline needs at least 3 points",
        ),
        (_break(_DOC, 'Type="Dot"', 'Type="Blob"'), r"annotation 3 \('dot'\).*unknown.*'Blob'"),
        (_break(_DOC, 'X="7" Y="8"', 'X="7"'), r"annotation 3 \('dot'\).*has no Y"),
        (
            _break(_DOC, "<ASAP_Annotations>", "<Other>").replace(
                "</ASAP_Annotations>", "</Other>"
            ),
            "root element",
        ),
        (
            _break(
                _DOC,
                '<?xml version="1.0"?>',
                '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>',
            ),
            "DOCTYPE/ENTITY",
        ),
    ],
)
def test_malformed_files_raise_naming_the_annotation(
    tmp_path: Path, doc: str, message: str
) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(doc)
    with pytest.raises(AnnotationError, match=message):
        read_asap(path)
    # The converter refuses it too and writes nothing.
    assert main(["annotations", "convert", str(path), str(tmp_path / "out.geojson")]) == 2
    assert not (tmp_path / "out.geojson").exists()


_ENTITY_DOC = _break(
    _break(_DOC, '<?xml version="1.0"?>', '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'),
    'Name="poly"',
    'Name="&a;"',
)


def _encode(doc: str, encoding: str) -> bytes:
    """``doc`` in ``encoding`` with a matching declaration (and the BOM expat wants for UTF-16)."""
    doc = doc.replace('<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding}"?>')
    bom = {"UTF-16LE": b"\xff\xfe", "UTF-16BE": b"\xfe\xff"}.get(encoding, b"")
    return bom + doc.encode(encoding)


@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16LE", "UTF-16BE", "ISO-8859-1"])
def test_dtd_and_entities_are_refused_whatever_the_encoding(tmp_path: Path, encoding: str) -> None:
    # Issue 15 item 5: a byte regex guarded against DTDs, so in UTF-16 the entity was expanded.
    path = tmp_path / "entity.xml"
    path.write_bytes(_encode(_ENTITY_DOC, encoding))
    with pytest.raises(AnnotationError, match=f"^{re.escape(str(path))}: DOCTYPE/ENTITY"):
        read_asap(path)
    # An external DTD is refused too (reading it would be a file or network access).
    external = _DOC.replace("<ASAP_Annotations>", '<!DOCTYPE x SYSTEM "x.dtd"><ASAP_Annotations>')
    path.write_bytes(_encode(external, encoding))
    with pytest.raises(AnnotationError, match="DOCTYPE/ENTITY"):
        read_asap(path)


@pytest.mark.parametrize("encoding", ["UTF-16LE", "UTF-16BE", "ISO-8859-1"])
def test_other_encodings_without_dtd_are_read(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "encoded.xml"
    path.write_bytes(_encode(_DOC, encoding))
    assert [a.name for a in read_asap(path)] == [a.name for a in parse_asap(_DOC)]


def test_missing_file() -> None:
    with pytest.raises(AnnotationError, match="file not found"):
        read_asap("/nonexistent/a.xml")


# --------------------------------------------------------------------------- round trips


def _sample() -> list[Annotation]:
    donut = Polygon(
        [(0.125, 0.5), (1000.25, 0.5), (1000.25, 900.75), (0.125, 900.75)],
        [[(100.1, 100.2), (200.3, 100.4), (200.5, 300.6)], [(500, 500), (600, 500), (600, 600)]],
    )
    multi = MultiPolygon(
        [
            Polygon([(2000, 2000), (2100, 2000), (2100, 2100)]),
            Polygon(
                [(3000, 3000), (3300, 3000), (3300, 3300), (3000, 3300)],
                [[(3100, 3100), (3200, 3100), (3200, 3200), (3100, 3200)]],
            ),
        ]
    )
    return [
        Annotation(donut, "Tumor", (200, 0, 0), name="donut"),
        Annotation(multi, "Stroma", (150, 200, 150), name="two parts"),
        Annotation(box(5000.333333333, 5000.1, 5123.987654321, 5200.000001), "Normal", (0, 150, 0)),
        Annotation(Point(12.5, 13.25), "Other", (90, 90, 200), name="dot"),
        Annotation(LineString([(0, 0), (30.5, 40.25)]), "Other", (90, 90, 200), name="ruler"),
        Annotation(box(0, 0, 5, 5), None, None, name="unclassified"),
    ]


def _assert_same(a: list[Annotation], b: list[Annotation]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.class_name == y.class_name
        assert x.geometry.geom_type == y.geometry.geom_type
        assert shapely.equals_exact(
            shapely.normalize(x.geometry), shapely.normalize(y.geometry), 1e-6
        )
        if x.class_name:
            assert x.color == y.color


def test_geojson_asap_geojson_round_trip(tmp_path: Path) -> None:
    sample = _sample()
    write_geojson(tmp_path / "a.geojson", sample)
    from_geojson = read_geojson(tmp_path / "a.geojson")
    _assert_same(sample, from_geojson)
    write_asap(tmp_path / "b.xml", from_geojson)
    from_asap = read_asap(tmp_path / "b.xml")
    _assert_same(sample, from_asap)
    write_geojson(tmp_path / "c.geojson", from_asap)
    _assert_same(sample, read_geojson(tmp_path / "c.geojson"))
    # Holes and parts are separate outlines for ASAP itself (it has no holes): 3 + 3 + 1 + 1 + 1 + 1.
    root = ET.parse(tmp_path / "b.xml").getroot()
    assert len(root.findall("./Annotations/Annotation")) == 10
    groups = {g.attrib["Name"]: g.attrib["Color"] for g in root.iter("Group")}
    assert groups == {
        "Tumor": "#c80000",
        "Stroma": "#96c896",
        "Normal": "#009600",
        "Other": "#5a5ac8",
    }


def test_asap_asap_round_trip_and_dispatch(tmp_path: Path) -> None:
    sample = _sample()
    write_annotations(tmp_path / "x.xml", sample)
    write_annotations(tmp_path / "x.json", read_annotations(tmp_path / "x.xml"))
    _assert_same(sample, read_annotations(tmp_path / "x.json"))
    with pytest.raises(AnnotationError, match="unknown annotation format '.txt'"):
        read_annotations(tmp_path / "x.txt")


def test_asap_writer_never_writes_xml_its_reader_rejects(tmp_path: Path) -> None:
    # Issue 15 item 6: a NUL in a name used to be written as is; the file was then unreadable.
    # Characters XML 1.0 cannot hold at all (not even as &#..;) are dropped; the others survive.
    odd = "a\x00b\x1fc\ud800d\ufffee\x0bf"
    kept = 'tab\tnew\nline\r & <x> "q" \u00e9\U0001f600'
    annotations = [
        Annotation(box(0, 0, 5, 5), "Tu\x01mor", (200, 0, 0), name=odd),
        Annotation(Point(1, 2), "Other", name=kept),
    ]
    write_asap(tmp_path / "odd.xml", annotations)
    first, second = read_asap(tmp_path / "odd.xml")
    assert (first.name, first.class_name) == ("abcdef", "Tumor")
    assert second.name == kept
    groups = [g.attrib["Name"] for g in ET.parse(tmp_path / "odd.xml").getroot().iter("Group")]
    assert groups == ["Tumor", "Other"]


def test_asap_export_refuses_polylines_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.xml"
    with pytest.raises(AnnotationError, match=r"annotation 1 \('path'\).*LineString"):
        write_asap(
            target,
            [
                Annotation(box(0, 0, 1, 1)),
                Annotation(LineString([(0, 0), (1, 1), (2, 0)]), name="path"),
            ],
        )
    assert not target.exists() and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- GeoJSON polish


def test_bow_tie_is_kept_as_drawn_and_repaired_only_for_areas(tmp_path: Path) -> None:
    bow_tie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert not bow_tie.is_valid
    write_geojson(tmp_path / "b.geojson", [Annotation(bow_tie, "Tumor")])
    (back,) = read_geojson(tmp_path / "b.geojson")
    assert back.geometry.equals_exact(bow_tie, tolerance=0)
    write_asap(tmp_path / "b.xml", [Annotation(bow_tie, "Tumor")])
    (asap,) = read_asap(tmp_path / "b.xml")
    assert asap.geometry.equals_exact(bow_tie, tolerance=0)
    # where an area is needed, a repaired copy: two triangles of 25
    repaired = valid_geometry(asap.geometry)
    assert repaired.is_valid and repaired.area == pytest.approx(50.0)


def test_geojson_malformed_feature_named_and_nothing_imported(tmp_path: Path) -> None:
    good = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [1, 2]},
        "properties": {},
    }
    bad = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}}
    nan = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float("nan"), 2]}}
    for i, feature in enumerate((bad, nan)):
        path = tmp_path / f"f{i}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "features": [good, feature]}))
        with pytest.raises(AnnotationError, match="feature 1"):
            read_geojson(path)


@pytest.mark.parametrize(
    "color",
    [[300, -5, 1000], [float("inf"), 0, 0], [float("nan"), 0, 0], [1, 2], ["red", 0, 0], True],
)
def test_geojson_bad_colour_is_refused_naming_file_and_feature(
    tmp_path: Path, color: object
) -> None:
    # Issue 15 item 1: such a colour used to import and then break every read of the slide.
    good = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}
    bad = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [3, 4]},
        "properties": {"classification": {"name": "Tumor", "color": color}},
    }
    path = tmp_path / "colours.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [good, bad]}))
    with pytest.raises(AnnotationError) as caught:
        read_geojson(path)
    message = str(caught.value)
    assert message.startswith(f"{path} feature 1: colour ") and "\n" not in message


def test_geojson_colour_limits_and_packed_integers_are_accepted(tmp_path: Path) -> None:
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [i, i]},
            "properties": {"classification": {"name": "Tumor", "color": color}},
        }
        for i, color in enumerate([[0, 255, 128], [0.0, 254.6, 3], -65536])
    ]
    path = tmp_path / "ok.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    assert [a.color for a in read_geojson(path)] == [(0, 255, 128), (0, 254, 3), (255, 0, 0)]


def test_tiles_to_geojson(tmp_path: Path) -> None:
    from pathviewer.core.annotations import tiles_to_geojson

    rows = [(0, 0, 224, 224, 0.9), (224, 0, 224, 224, 0.1)]
    path = tmp_path / "tiles.geojson"
    assert tiles_to_geojson(rows, path, positive_class="Tumor", negative_class="Normal") == 2
    data = json.loads(path.read_text())
    props = [f["properties"] for f in data["features"]]
    assert [p["objectType"] for p in props] == ["tile", "tile"]
    assert [p["measurements"]["probability"] for p in props] == [0.9, 0.1]
    assert [p["classification"]["name"] for p in props] == ["Tumor", "Normal"]
    tiles = read_geojson(path)
    assert tiles[1].geometry.equals(box(224, 0, 448, 224)) and tiles[1].object_type == "tile"
    with pytest.raises(AnnotationError, match="tile row 0"):
        tiles_to_geojson([(0, 0, -1, 5, 0.5)], tmp_path / "bad.geojson")
    assert not (tmp_path / "bad.geojson").exists()


# --------------------------------------------------------------------------- CLI


def test_convert_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_geojson(tmp_path / "in.geojson", _sample()[:1])
    assert (
        main(["annotations", "convert", str(tmp_path / "in.geojson"), str(tmp_path / "o.svg")]) == 2
    )
    err = capsys.readouterr().err
    assert re.search(r"unknown annotation format '\.svg'", err) and err.count("\n") == 1
    assert not (tmp_path / "o.svg").exists()
    assert (
        main(["annotations", "convert", str(tmp_path / "in.geojson"), str(tmp_path / "o.xml")]) == 0
    )
    assert "1 annotations" in capsys.readouterr().out
    assert len(read_asap(tmp_path / "o.xml")) == 1


def test_a_crossing_outline_measures_the_area_it_encloses() -> None:
    from pathviewer.core.geometry import measure

    bow_tie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    assert bow_tie.area == 0.0  # shapely's signed halves cancel
    assert measure(bow_tie, None)["Area px^2"] == pytest.approx(50.0)
    assert measure(bow_tie, 0.5)["Area µm^2"] == pytest.approx(12.5)


def test_convert_with_a_slide_that_has_bounds_uses_qupath_coordinates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASAP XML (full coordinates) -> GeoJSON for QuPath, which crops the slide to its bounds."""
    import numpy as np

    from pathviewer.core import slide as slide_module
    from pathviewer.core.slide import ArraySlide

    bounds = {"openslide.bounds-x": "1000", "openslide.bounds-y": "500"}
    fake = ArraySlide(np.zeros((64, 64, 3), np.uint8), properties=bounds, name="b.mrxs")
    monkeypatch.setattr(slide_module, "open_slide", lambda path: fake)
    xml = tmp_path / "a.xml"
    write_asap(xml, [Annotation(box(1000, 500, 1100, 600), "Tumor")])
    out = tmp_path / "a.geojson"
    assert main(["annotations", "convert", str(xml), str(out), "--slide", "b.mrxs"]) == 0
    (qupath,) = read_geojson(out)
    assert qupath.geometry.bounds == (0.0, 0.0, 100.0, 100.0)
    back = tmp_path / "back.xml"
    assert main(["annotations", "convert", str(out), str(back), "--slide", "b.mrxs"]) == 0
    assert read_asap(back)[0].geometry.bounds == (1000.0, 500.0, 1100.0, 600.0)
