"""Aperio ImageScope XML and Hamamatsu NDPA annotations in, next to ASAP XML and GeoJSON."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from shapely.geometry import LineString, Point, Polygon

from pathviewer.cli import main
from pathviewer.core.annotations import annotation_format, read_annotations, write_annotations
from pathviewer.core.aperio import colorref_rgb
from pathviewer.core.errors import AnnotationError
from pathviewer.core.ndpa import parse_ndpa

DATA = Path(__file__).parent / "data"
APERIO = DATA / "imagescope_sample.xml"
NDPA = DATA / "ndpview_sample.ndpa"
#: An .ndpi's OpenSlide properties: 0.25 um/px, the image centre 1 mm right of and 0.5 mm above
#: the slide centre, 40000 x 30000 px.
NDPI_PROPERTIES = {
    "openslide.mpp-x": "0.25",
    "openslide.mpp-y": "0.25",
    "hamamatsu.XOffsetFromSlideCentre": "1000000",
    "hamamatsu.YOffsetFromSlideCentre": "-500000",
    "openslide.level[0].width": "40000",
    "openslide.level[0].height": "30000",
}


# -- Aperio ImageScope ----------------------------------------------------------------------


def test_aperio_regions_classes_colours_and_holes() -> None:
    annotations = read_annotations(APERIO)
    assert [a.class_name for a in annotations] == ["Tumor", "Tumor", "Stroma", "Stroma", None]
    assert [a.color for a in annotations] == [
        (255, 0, 0),  # LineColor 255: COLORREF, red in the low byte
        (255, 0, 0),
        (0, 255, 0),  # 65280
        (0, 255, 0),
        (0, 0, 255),  # 16711680
    ]
    nest, rectangle, ellipse, ruler, arrow = annotations
    # The NegativeROA region is a hole of the region around it, not an annotation of its own.
    assert isinstance(nest.geometry, Polygon) and nest.name == "Nest A"
    assert nest.geometry.exterior.bounds == (1000, 1000, 3000, 3000)
    assert len(nest.geometry.interiors) == 1
    assert nest.geometry.interiors[0].bounds == (1500, 1500, 2000, 2000)
    assert nest.geometry.area == pytest.approx(2000 * 2000 - 500 * 500)
    assert rectangle.geometry.bounds == (5000.5, 5000, 6000.5, 5500)
    assert rectangle.geometry.area == pytest.approx(1000 * 500)
    # Ellipse: two corners of its bounding box -> centre (300, 300), semi-axes 200 and 100.
    assert isinstance(ellipse.geometry, Polygon)
    assert ellipse.geometry.bounds == pytest.approx((100, 200, 500, 400))
    assert ellipse.geometry.area == pytest.approx(math.pi * 200 * 100, rel=0.01)
    assert isinstance(ruler.geometry, LineString) and ruler.name == "ruler"
    assert list(ruler.geometry.coords) == [(10, 10), (110, 10)]
    assert list(arrow.geometry.coords) == [(700, 700), (730, 740)]


def test_xml_is_told_apart_by_its_root(tmp_path: Path) -> None:
    asap = tmp_path / "asap.xml"
    write_annotations(asap, read_annotations(APERIO))  # written as ASAP, read back as ASAP
    assert asap.read_text().count("<ASAP_Annotations") == 1
    assert [a.class_name for a in read_annotations(asap)][:2] == ["Tumor", "Tumor"]
    other = tmp_path / "other.xml"
    other.write_text("<Slides><Slide/></Slides>")
    with pytest.raises(AnnotationError, match=r"other\.xml: root element is <Slides>, neither"):
        read_annotations(other)


def _aperio(regions: str, tmp_path: Path) -> Path:
    path = tmp_path / "bad.xml"
    path.write_text(
        '<Annotations><Annotation Id="4" Name="Tumor" LineColor="255"><Regions>'
        f"{regions}</Regions></Annotation></Annotations>"
    )
    return path


GOOD = (
    '<Region Id="1" Type="0"><Vertices><Vertex X="0" Y="0"/><Vertex X="10" Y="0"/>'
    '<Vertex X="10" Y="10"/></Vertices></Region>'
)


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ('<Region Id="2" Type="0"><Vertices/></Region>', "region 2: has no vertices"),
        ('<Region Id="2" Type="0"></Region>', "region 2: has no vertices"),
        (
            '<Region Id="2" Type="0"><Vertices><Vertex X="1" Y="1"/><Vertex X="abc" Y="2"/>'
            '<Vertex X="3" Y="4"/></Vertices></Region>',
            r"region 2: vertex 1 is not numeric \(X='abc', Y='2'\)",
        ),
        (
            '<Region Id="2" Type="0"><Vertices><Vertex X="1"/></Vertices></Region>',
            "region 2: vertex 0 has no Y",
        ),
        (
            '<Region Id="2" Type="7"><Vertices><Vertex X="1" Y="1"/></Vertices></Region>',
            r"region 2: unknown region Type '7' \(known: 0 polygon",
        ),
        (
            '<Region Id="2" Type="0"><Vertices><Vertex X="1" Y="1"/><Vertex X="2" Y="2"/>'
            "</Vertices></Region>",
            "region 2: a polygon needs at least 3 points, has 2",
        ),
        (
            '<Region Id="2" Type="0" NegativeROA="1"><Vertices><Vertex X="50" Y="50"/>'
            '<Vertex X="60" Y="50"/><Vertex X="60" Y="60"/></Vertices></Region>',
            "region 2: an exclusion .* cuts no region",
        ),
    ],
)
def test_aperio_bad_regions_get_one_line_naming_them(
    tmp_path: Path, region: str, message: str
) -> None:
    path = _aperio(GOOD + region, tmp_path)
    with pytest.raises(AnnotationError, match=rf"bad\.xml annotation 4 \('Tumor'\) {message}"):
        read_annotations(path)


def _square(region_id: int, x0: int, y0: int, x1: int, y1: int, negative: bool = False) -> str:
    flag = ' NegativeROA="1"' if negative else ""
    corners = "".join(
        f'<Vertex X="{x}" Y="{y}"/>' for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    )
    return f'<Region Id="{region_id}" Type="1"{flag}><Vertices>{corners}</Vertices></Region>'


def test_aperio_exclusions_cut_a_region_an_earlier_one_split(tmp_path: Path) -> None:
    # A strip across the square splits it in two; a second exclusion bites the left half.
    regions = (
        _square(1, 0, 0, 100, 100)
        + _square(2, 40, -10, 60, 110, negative=True)
        + _square(3, 0, 0, 20, 20, negative=True)
    )
    (region,) = read_annotations(_aperio(regions, tmp_path))
    assert region.geometry.area == pytest.approx(100 * 100 - 20 * 100 - 20 * 20)
    assert not region.geometry.contains(Point(10, 10))


def test_aperio_exclusion_covering_a_whole_region_is_refused_naming_it(tmp_path: Path) -> None:
    regions = _square(1, 10, 10, 20, 20) + _square(2, 0, 0, 100, 100, negative=True)
    with pytest.raises(
        AnnotationError, match=r"bad\.xml annotation 4 \('Tumor'\) region 2: an exclusion .* covers"
    ):
        read_annotations(_aperio(regions, tmp_path))


def test_colorref_is_red_in_the_low_byte() -> None:
    assert colorref_rgb("65535") == (255, 255, 0)  # ImageScope's yellow
    assert colorref_rgb("1193046") == (0x56, 0x34, 0x12)
    assert colorref_rgb("-1") is None and colorref_rgb("green") is None


# -- NDPA -----------------------------------------------------------------------------------


def test_ndpa_nanometres_from_the_slide_centre_become_level0_pixels() -> None:
    # x_px = (x_nm - 1e6) / 250 + 20000; y_px = (y_nm + 5e5) / 250 + 15000.
    annotations = read_annotations(NDPA, NDPI_PROPERTIES)
    assert [a.class_name for a in annotations] == ["Tumor", "Stroma", "centre", "1 mm", None]
    rectangle, circle, pin, ruler, line = (a.geometry for a in annotations)
    assert isinstance(rectangle, Polygon)
    assert list(rectangle.exterior.coords)[:4] == [
        (21000, 16000),
        (23000, 16000),
        (23000, 18000),
        (21000, 18000),
    ]
    assert annotations[0].color == (255, 0, 0)
    # circle at the slide centre (16000, 17000), radius 0.5 mm = 2000 px
    assert isinstance(circle, Polygon)
    assert circle.bounds == pytest.approx((14000, 15000, 18000, 19000))
    assert circle.area == pytest.approx(math.pi * 2000**2, rel=0.01)
    assert isinstance(pin, Point) and (pin.x, pin.y) == (20000, 15000)  # the image centre
    assert isinstance(ruler, LineString)
    assert list(ruler.coords) == [(12000, 17000), (16000, 17000)]
    assert isinstance(line, LineString)  # <closed>0</closed>
    assert list(line.coords) == [(16000, 17000), (17000, 17000), (17000, 18000)]


def test_ndpa_without_the_slide_says_what_it_needs() -> None:
    with pytest.raises(AnnotationError) as caught:
        read_annotations(NDPA)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(NDPA))
    assert "hamamatsu.XOffsetFromSlideCentre" in message and "openslide.mpp-x" in message
    partial = {k: v for k, v in NDPI_PROPERTIES.items() if not k.startswith("hamamatsu")}
    with pytest.raises(AnnotationError, match=r"needs the slide .*YOffsetFromSlideCentre$"):
        read_annotations(NDPA, partial)


def _view(annotation: str, coordformat: str = "nanometers") -> str:
    return (
        '<annotations><ndpviewstate id="7"><title>Tumor</title>'
        f"<coordformat>{coordformat}</coordformat>{annotation}</ndpviewstate></annotations>"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            _view(
                '<annotation type="freehand"><closed>1</closed><pointlist>'
                "<point><x>1</x><y>2</y></point><point><x>abc</x><y>2</y></point>"
                "<point><x>5</x><y>6</y></point></pointlist></annotation>"
            ),
            r"point 1: <x> 'abc' is not a number",
        ),
        (
            _view(
                '<annotation type="freehand"><pointlist><point><x>1</x></point>'
                "</pointlist></annotation>"
            ),
            "point 0: has no <y>",
        ),
        (
            _view('<annotation type="freehand"><pointlist/></annotation>'),
            "a freehand region needs at least 3 points, has 0",
        ),
        (_view('<annotation type="text"><x>0</x></annotation>'), "unknown annotation type 'text'"),
        (_view('<annotation type="circle"><x>0</x><y>0</y></annotation>'), "has no <radius>"),
        (_view('<annotation type="pin"><x>0</x><y>0</y></annotation>', "inches"), "coordformat"),
        (_view(""), "has no <annotation>"),
    ],
)
def test_ndpa_bad_views_get_one_line_naming_them(text: str, message: str) -> None:
    with pytest.raises(AnnotationError, match=rf"^b\.ndpa ndpviewstate 7 \('Tumor'\).*{message}"):
        parse_ndpa(text, NDPI_PROPERTIES, "b.ndpa")


def test_ndpa_is_read_only() -> None:
    assert annotation_format("x.ndpa") == "ndpa"
    with pytest.raises(AnnotationError, match="NDPA is read only"):
        write_annotations("x.ndpa", [])


# -- CLI ------------------------------------------------------------------------------------


def test_convert_reads_aperio_and_asks_ndpa_for_its_slide(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "aperio.geojson"
    assert main(["annotations", "convert", str(APERIO), str(out)]) == 0
    features = json.loads(out.read_text())["features"]
    assert len(features) == 5
    assert features[0]["properties"]["classification"]["name"] == "Tumor"
    capsys.readouterr()
    assert main(["annotations", "convert", str(NDPA), str(tmp_path / "n.geojson")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the slide" in err
    assert not (tmp_path / "n.geojson").exists()
    assert main(["annotations", "convert", str(APERIO), str(tmp_path / "o.ndpa")]) == 2
    assert re.search(r"NDPA is read only", capsys.readouterr().err)


# -- coordinates far beyond any slide --------------------------------------------------------


def _square_with(value: str) -> list[tuple[str, str]]:
    return [("0", "0"), (value, "0"), (value, "10"), ("0", "10")]


def _geojson_doc(value: str) -> str:
    ring = ", ".join(f"[{x}, {y}]" for x, y in [*_square_with(value), ("0", "0")])
    return (
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "id": "a1",'
        ' "geometry": {"type": "Polygon", "coordinates": [[' + ring + "]]},"
        ' "properties": {"name": "huge"}}]}'
    )


def _asap_doc(value: str) -> str:
    points = "".join(
        f'<Coordinate Order="{i}" X="{x}" Y="{y}"/>' for i, (x, y) in enumerate(_square_with(value))
    )
    return (
        '<ASAP_Annotations><Annotations><Annotation Name="huge" Type="Polygon"'
        f' PartOfGroup="Tumor"><Coordinates>{points}</Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>"
    )


def _aperio_doc(value: str) -> str:
    vertices = "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in _square_with(value))
    return (
        '<Annotations><Annotation Id="4" Name="huge" LineColor="255"><Regions>'
        f'<Region Id="1" Type="0"><Vertices>{vertices}</Vertices></Region>'
        "</Regions></Annotation></Annotations>"
    )


def _ndpa_doc(value: str) -> str:
    # NDPA counts nanometres from the slide centre: 250 nm per pixel at 0.25 um/px.
    scaled = float(value) * 250
    nm = str(scaled) if math.isfinite(scaled) else value  # 1e308 nm: still 4e305 px
    points = "".join(
        f"<point><x>{1000000 if x == '0' else nm}</x><y>{-500000 + 250 * int(y)}</y></point>"
        for x, y in _square_with(value)
    )
    return (
        '<annotations><ndpviewstate id="7"><title>huge</title><coordformat>nanometers'
        f'</coordformat><annotation type="freehand"><closed>1</closed><pointlist>{points}'
        "</pointlist></annotation></ndpviewstate></annotations>"
    )


_FORMATS = {
    "a.geojson": (_geojson_doc, r"a\.geojson feature 0"),
    "a.xml": (_asap_doc, r"a\.xml annotation 0 \('huge'\)"),
    "b.xml": (_aperio_doc, r"b\.xml annotation 4 \('huge'\) region 1"),
    "a.ndpa": (_ndpa_doc, r"a\.ndpa ndpviewstate 7 \('huge'\)"),
}


@pytest.mark.parametrize("name", sorted(_FORMATS))
@pytest.mark.parametrize("value", ["1e308", "2e9", "-1.5e9"])
def test_coordinates_beyond_any_slide_are_refused_by_every_reader(
    tmp_path: Path, name: str, value: str
) -> None:
    make, where = _FORMATS[name]
    path = tmp_path / name
    path.write_text(make(value))
    with pytest.raises(AnnotationError) as caught:
        read_annotations(path, NDPI_PROPERTIES if name.endswith(".ndpa") else None)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(tmp_path))
    assert re.search(where, message), message
    assert re.search(r"coordinate \(-?[0-9.e+]+, [0-9.e+-]+\) lies beyond ±1e\+09 px", message)


@pytest.mark.parametrize("name", sorted(_FORMATS))
def test_coordinates_beyond_the_edge_within_the_bound_are_kept(tmp_path: Path, name: str) -> None:
    make, _ = _FORMATS[name]
    path = tmp_path / name
    path.write_text(make("-5e8"))  # far outside the slide, but a number a drawing can hold
    (annotation,) = read_annotations(path, NDPI_PROPERTIES if name.endswith(".ndpa") else None)
    assert annotation.geometry.bounds[0] == pytest.approx(-5e8, rel=1e-3)
    assert math.isfinite(annotation.geometry.area)


def test_converting_1e308_gives_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "a.xml"
    source.write_text(_asap_doc("1e308"))
    target = tmp_path / "out.geojson"
    assert main(["annotations", "convert", str(source), str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a.xml annotation 0 ('huge')" in err
    assert list(tmp_path.iterdir()) == [source]
