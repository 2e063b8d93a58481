"""ASAP XML annotations (the format of ASAP and the CAMELYON challenges).

Layout::

    <ASAP_Annotations>
      <Annotations>
        <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="metastasis" Color="#F4FA58">
          <Coordinates>
            <Coordinate Order="0" X="28582.5" Y="33885.3" />
            ...
      <AnnotationGroups>
        <Group Name="metastasis" PartOfGroup="None" Color="#00aa00"><Attributes /></Group>

Coordinates are level-0 pixels.  Types: ``Polygon`` and ``Spline`` (read as a polygon through its
points), ``Rectangle`` (polygon), ``Dot`` (point), ``PointSet`` (multipoint) and ``Measurement``
(a two-point line).  An annotation's group becomes its class name, and the group's colour its
colour (the annotation's own ``Color`` when it has no group).

ASAP has no holes and no multi-part regions.  On export every ring becomes its own annotation
(ASAP draws outlines, so it looks right there) and the extra rings carry ``PathViewerObject``,
``PathViewerPart`` and ``PathViewerHole`` attributes, which PathViewer reads back into one
geometry; ASAP ignores them.  Shapes are written as drawn: a self-intersecting outline stays
one ring, and only areas and masks use a repaired copy.

Import is all-or-nothing: malformed XML, a non-numeric coordinate or a polygon with fewer than
three points raises :class:`~pathviewer.core.errors.AnnotationError` naming the annotation.
The XML is parsed with :mod:`defusedxml`, which refuses any ``DOCTYPE`` (so any ``ENTITY``) in
the parser itself, whatever the file's encoding: no entity expansion, no external access.

Export drops the characters that XML 1.0 cannot hold at all, not even as ``&#..;`` (NUL and the
other C0 controls but tab, newline and carriage return; lone surrogates; U+FFFE and U+FFFF), so
that every file written can be read back.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import shapely
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from defusedxml.ElementTree import iterparse as safe_iterparse
from shapely.geometry import LinearRing, LineString, MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import (
    DEFAULT_CLASSES,
    Annotation,
    check_coordinates,
    rgb_from_hex,
)
from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import AnnotationError, shown

_POLYGON_TYPES = {"polygon", "spline", "rectangle"}
#: What XML 1.0 cannot hold (its Char production, complemented).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NO_GROUP = ("", "None", "none")


def _rgb_to_hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(max(0, min(255, int(c))) for c in color))


def parse_xml_root(data: bytes, source: str, kind: str = "ASAP XML") -> ET.Element:
    """The root element of annotation XML read whole (Aperio, NDPA), parsed safely.

    Raises
    ------
    AnnotationError
        Not well-formed, or a DOCTYPE/ENTITY declaration (``kind`` names the format).
    """
    with _parsing(source, kind):
        # forbid_dtd: annotation files have no DTD, and refusing it also refuses every entity
        # declaration; done by expat's handlers, so after decoding, whatever the encoding.
        return safe_fromstring(data, forbid_dtd=True)


@contextlib.contextmanager
def _parsing(source: str, kind: str) -> Iterator[None]:
    """XML that is unsafe or not well-formed as an AnnotationError naming ``source``."""
    try:
        yield
    except DefusedXmlException:
        raise AnnotationError(
            f"{source}: DOCTYPE/ENTITY declarations are not allowed in {kind}"
        ) from None
    except ET.ParseError as error:
        raise AnnotationError(f"{source}: not well-formed XML ({error})") from None


def _coordinates(element: ET.Element, where: str) -> list[tuple[float, float]]:
    points: list[tuple[float, float, float]] = []  # (order, x, y)
    coordinates = element.find("Coordinates")
    children = [] if coordinates is None else coordinates.findall("Coordinate")
    for position, coordinate in enumerate(children):
        try:
            x = float(coordinate.attrib["X"])
            y = float(coordinate.attrib["Y"])
            order = float(coordinate.attrib.get("Order", position))
            if not math.isfinite(order):
                raise AnnotationError(
                    f"{where}: coordinate {position} has Order={shown(coordinate.attrib['Order'])},"
                    " not a finite number (the vertex order would be lost)"
                )
        except KeyError as error:
            raise AnnotationError(
                f"{where}: coordinate {position} has no {error.args[0]}"
            ) from None
        except ValueError:
            raise AnnotationError(
                f"{where}: coordinate {position} is not numeric "
                f"(X={shown(coordinate.attrib.get('X'))}, Y={shown(coordinate.attrib.get('Y'))})"
            ) from None
        points.append((order, x, y))
    points.sort(key=lambda p: p[0])  # stable: ties keep the file order
    return [(x, y) for _, x, y in points]


def _geometry(kind: str, points: list[tuple[float, float]], where: str) -> BaseGeometry:
    kind_l = kind.lower()
    if kind_l in _POLYGON_TYPES:
        if kind_l == "rectangle" and len(points) == 2:  # two opposite corners
            (x0, y0), (x1, y1) = points
            points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        distinct = list(dict.fromkeys(points))
        if len(distinct) < 3:
            raise AnnotationError(f"{where}: a {kind} needs at least 3 points, has {len(distinct)}")
        if points[0] == points[-1]:
            points = points[:-1]
        return Polygon(points)
    if kind_l == "dot":
        if len(points) != 1:
            raise AnnotationError(f"{where}: a Dot needs exactly 1 point, has {len(points)}")
        return Point(points[0])
    if kind_l == "pointset":
        if not points:
            raise AnnotationError(f"{where}: a PointSet has no points")
        return MultiPoint(points)
    if kind_l == "measurement":
        if len(points) < 2:
            raise AnnotationError(f"{where}: a Measurement needs 2 points, has {len(points)}")
        return LineString(points)
    raise AnnotationError(f"{where}: unknown annotation Type {shown(kind)}")


def parse_asap(data: bytes | str, source: str = "<string>") -> list[Annotation]:
    """Parse ASAP XML text; ``source`` names it in errors.  See :func:`read_asap`."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return _parse_stream(io.BytesIO(data), source)


class _Colors:
    """Group colours, known only at the end of a file (``AnnotationGroups`` follows the shapes)."""

    def __init__(self) -> None:
        self.groups: dict[str, tuple[int, int, int] | None] = {}
        #: Per annotation: its group, or None, and its own ``Color``.
        self.pending: list[tuple[Annotation, str | None, tuple[int, int, int] | None]] = []

    def resolve(self) -> None:
        """The group's colour where it has one, else the annotation's own."""
        for annotation, group, own in self.pending:
            color = self.groups.get(group) if group else None
            annotation.color = own if color is None else color
        self.pending.clear()


def _parse_stream(handle: IO[bytes], source: str) -> list[Annotation]:
    """Annotations of an ASAP XML stream, parsed incrementally.

    Each ``<Annotation>`` becomes an :class:`Annotation` as soon as its end tag is read and its
    elements are dropped, so memory follows the annotations made, not the size of the XML tree.
    """
    # forbid_dtd: ASAP files have no DTD, and refusing it also refuses every entity
    # declaration; done by expat's handlers, so after decoding, whatever the encoding.
    events = safe_iterparse(handle, events=("start", "end"), forbid_dtd=True)
    path: list[ET.Element] = []  # the open elements, root first
    container: ET.Element | None = None  # the root's first <Annotations>: the one read
    colors = _Colors()
    # Rings written by PathViewer for holes and extra parts: object -> part -> [shell, holes...]
    compound: dict[str, dict[int, dict[int, tuple[LinearRing, str]]]] = {}
    annotations: list[Annotation] = []
    slots: dict[str, int] = {}  # object id -> position of its annotation in `annotations`
    index = 0
    with _parsing(source, "ASAP XML"):
        for event, element in events:
            if event == "start":
                if not path and element.tag != "ASAP_Annotations":
                    raise AnnotationError(
                        f"{source}: root element is <{element.tag}>, not <ASAP_Annotations>"
                    )
                if len(path) == 1 and container is None and element.tag == "Annotations":
                    container = element
                if element.tag == "Group":  # at the start: in document order, like iter()
                    group_name = element.attrib.get("Name")
                    if group_name:
                        colors.groups[group_name] = rgb_from_hex(element.attrib.get("Color"))
                path.append(element)
                continue
            path.pop()
            if len(path) != 2:
                continue
            if path[1] is container and element.tag == "Annotation":
                _add_element(element, index, source, annotations, colors, compound, slots)
                index += 1
            del path[1][:]  # a finished grandchild of the root: nothing refers to it any more
    colors.resolve()
    for object_id, parts in compound.items():
        polygons = []
        for part in sorted(parts):
            rings = parts[part]
            if -1 not in rings:
                where = next(iter(rings.values()))[1]
                raise AnnotationError(f"{where}: hole of part {part} without its outer ring")
            holes = [rings[h][0] for h in sorted(rings) if h >= 0]
            polygons.append(Polygon(rings[-1][0], holes))
        slot = annotations[slots[object_id]]
        slot.geometry = polygons[0] if len(polygons) == 1 else shapely.MultiPolygon(polygons)
    return annotations


def _add_element(
    element: ET.Element,
    index: int,
    source: str,
    annotations: list[Annotation],
    colors: _Colors,
    compound: dict[str, dict[int, dict[int, tuple[LinearRing, str]]]],
    slots: dict[str, int],
) -> None:
    """Read one complete ``<Annotation>`` (the ``index``-th) into ``annotations``."""
    name = element.attrib.get("Name")
    where = f"{source} annotation {index}" + (f" ({shown(name)})" if name else "")
    kind = element.attrib.get("Type", "")
    if not kind:
        raise AnnotationError(f"{where}: has no Type")
    points = _coordinates(element, where)
    check_coordinates(points, where)
    geometry = _geometry(kind, points, where)
    group = element.attrib.get("PartOfGroup", "None")
    class_name = None if group in _NO_GROUP else group
    object_id = element.attrib.get("PathViewerObject")
    if object_id is not None and isinstance(geometry, Polygon):
        try:
            part = int(element.attrib.get("PathViewerPart", "0"))
            hole = int(element.attrib.get("PathViewerHole", "-1"))
        except ValueError:
            raise AnnotationError(f"{where}: PathViewerPart/Hole is not an integer") from None
        compound.setdefault(object_id, {}).setdefault(part, {})[hole] = (geometry.exterior, where)
        if object_id in slots:
            return  # a hole or extra part of an annotation already listed
        slots[object_id] = len(annotations)
    annotation = Annotation(geometry=geometry, class_name=class_name, name=name)
    colors.pending.append((annotation, class_name, rgb_from_hex(element.attrib.get("Color"))))
    annotations.append(annotation)


def read_asap(path: str | os.PathLike[str]) -> list[Annotation]:
    """Read an ASAP XML annotation file, incrementally (see :func:`_parse_stream`).

    Returns
    -------
    list of Annotation
        One per annotation object, in file order, in level-0 pixels.

    Raises
    ------
    AnnotationError
        File missing, not XML, unsafe (DOCTYPE/ENTITY), or a malformed annotation (named by index
        and Name).  Nothing is returned in that case.
    """
    path = Path(path)
    with _reading(path), path.open("rb") as handle:
        return _parse_stream(handle, str(path))


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A missing or unreadable annotation file as an AnnotationError naming it."""
    try:
        yield
    except FileNotFoundError:
        raise AnnotationError(f"{path}: file not found") from None
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read ({error})") from None


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an annotation file; a missing or unreadable one is an AnnotationError."""
    path = Path(path)
    with _reading(path):
        return path.read_bytes()


def xml_root_tag(path: str | os.PathLike[str]) -> str:
    """The root element's tag of an XML file, read from its first element only."""
    path = Path(path)
    with _parsing(str(path), "annotation XML"), _reading(path), path.open("rb") as handle:
        for _event, element in safe_iterparse(handle, events=("start",), forbid_dtd=True):
            return str(element.tag)
    raise AnnotationError(f"{path}: not well-formed XML (no element found)")


def read_xml_annotations(path: str | os.PathLike[str]) -> list[Annotation]:
    """Read an ``.xml`` of ASAP (root ``<ASAP_Annotations>``, streamed) or Aperio ImageScope
    (root ``<Annotations>``), told apart by the root element; all or nothing."""
    source = str(path)
    tag = xml_root_tag(path)
    if tag == "ASAP_Annotations":
        return read_asap(path)
    if tag == "Annotations":
        from pathviewer.core.aperio import aperio_annotations

        root = parse_xml_root(read_file_bytes(path), source, "Aperio ImageScope XML")
        return aperio_annotations(root, source)
    raise AnnotationError(
        f"{source}: root element is <{tag}>, neither ASAP's <ASAP_Annotations> nor "
        "Aperio ImageScope's <Annotations>"
    )


def _xml_text(text: str) -> str:
    """``text`` without the characters XML cannot hold (the rest is escaped by ElementTree)."""
    return _NOT_XML.sub("", text)


def _ring_points(ring: Iterable[tuple[float, ...]]) -> list[tuple[float, float]]:
    points = [(float(c[0]), float(c[1])) for c in ring]
    if len(points) > 1 and points[0] == points[-1]:
        points = points[:-1]  # ASAP rings are implicitly closed
    return points


def _annotation_element(
    name: str,
    kind: str,
    group: str,
    color: str,
    points: list[tuple[float, float]],
    extra: dict[str, str] | None = None,
) -> ET.Element:
    element = ET.Element("Annotation", Name=name, Type=kind, PartOfGroup=group, Color=color)
    element.attrib.update(extra or {})
    coordinates = ET.SubElement(element, "Coordinates")
    for order, (x, y) in enumerate(points):
        # repr() is the shortest text that reads back as the same float: lossless round trips.
        ET.SubElement(coordinates, "Coordinate", Order=str(order), X=repr(x), Y=repr(y))
    return element


def _elements(
    index: int, annotation: Annotation, group_colors: dict[str, tuple[int, int, int]]
) -> list[ET.Element]:
    """The ``<Annotation>`` elements of one annotation (one per ring); notes its group colour."""
    name = _xml_text(annotation.name or "") or f"Annotation {index}"
    where = f"annotation {index} ({shown(name)})"
    class_name = _xml_text(annotation.class_name or "")
    group = class_name or "None"
    color = annotation.color or DEFAULT_CLASSES.get(group, (244, 250, 88))
    hex_color = _rgb_to_hex(color)
    geometry = annotation.geometry
    gtype = geometry.geom_type
    elements = []
    if gtype in ("Polygon", "MultiPolygon"):
        # Rings as drawn (a self-intersecting outline stays one ring): see write_geojson.
        polygons = list(getattr(geometry, "geoms", [geometry]))
        polygons = [p for p in polygons if isinstance(p, Polygon) and not p.is_empty]
        if not polygons:
            raise AnnotationError(f"{where}: polygon is empty")
        compound = len(polygons) > 1 or bool(polygons[0].interiors)
        for part, polygon in enumerate(polygons):
            rings = [polygon.exterior, *polygon.interiors]
            for hole, ring in enumerate(rings, start=-1):
                extra = (
                    {
                        "PathViewerObject": str(index),
                        "PathViewerPart": str(part),
                        "PathViewerHole": str(hole),
                    }
                    if compound
                    else None
                )
                ring_name = name if (part, hole) == (0, -1) else f"{name} ring {part}.{hole}"
                elements.append(
                    _annotation_element(
                        ring_name, "Polygon", group, hex_color, _ring_points(ring.coords), extra
                    )
                )
    elif gtype == "Point":
        points = _ring_points(geometry.coords)
        elements.append(_annotation_element(name, "Dot", group, hex_color, points))
    elif gtype == "MultiPoint":
        points = [(float(p.x), float(p.y)) for p in geometry.geoms]
        elements.append(_annotation_element(name, "PointSet", group, hex_color, points))
    elif gtype == "LineString" and len(geometry.coords) == 2:
        points = [(float(c[0]), float(c[1])) for c in geometry.coords]
        elements.append(_annotation_element(name, "Measurement", group, hex_color, points))
    else:
        raise AnnotationError(
            f"{where}: ASAP XML cannot hold a {gtype}"
            + (" with more than 2 points" if gtype == "LineString" else "")
        )
    if class_name:
        group_colors.setdefault(class_name, color)
    return elements


def _write_children(handle: IO[bytes], tag: str, children: Iterable[ET.Element]) -> None:
    """``<tag>`` and its children, at the indentation :func:`xml.etree.ElementTree.indent` gives.

    One child at a time is serialized, so the whole file is never one tree.
    """
    empty = True
    for child in children:
        if empty:
            handle.write(f"<{tag}>".encode())
            empty = False
        ET.indent(child, space="\t", level=2)
        handle.write(b"\n\t\t" + ET.tostring(child, encoding="utf-8", xml_declaration=False))
    handle.write(f"<{tag} />".encode() if empty else f"\n\t</{tag}>".encode())


def _write_xml(handle: IO[bytes], annotations: Iterable[Annotation]) -> None:
    """Write the ASAP XML of ``annotations`` to ``handle``, one annotation at a time."""
    group_colors: dict[str, tuple[int, int, int]] = {}
    handle.write(b'<?xml version="1.0"?>\n<ASAP_Annotations>\n\t')
    _write_children(
        handle,
        "Annotations",
        (
            element
            for index, annotation in enumerate(annotations)
            for element in _elements(index, annotation, group_colors)
        ),
    )
    handle.write(b"\n\t")
    groups = []
    for group_name, rgb in group_colors.items():
        element = ET.Element("Group", Name=group_name, PartOfGroup="None", Color=_rgb_to_hex(rgb))
        ET.SubElement(element, "Attributes")
        groups.append(element)
    _write_children(handle, "AnnotationGroups", groups)
    handle.write(b"\n</ASAP_Annotations>")


def asap_xml(annotations: Iterable[Annotation]) -> bytes:
    """ASAP XML for annotations (see the module notes on holes and multi-part regions)."""
    buffer = io.BytesIO()
    _write_xml(buffer, annotations)
    return buffer.getvalue()


def write_asap(path: str | os.PathLike[str], annotations: Iterable[Annotation]) -> None:
    """Write annotations as ASAP XML, atomically (nothing is written if one cannot be).

    Written one annotation at a time into the temporary file of
    :func:`~pathviewer.core.atomic.atomic_write`: an annotation that cannot be written (or any
    other failure) removes it and leaves ``path`` as it was.
    """
    with atomic_write(path, "wb") as handle:
        _write_xml(handle, annotations)
