"""Aperio ImageScope XML annotations (``.xml`` with root ``<Annotations>``), read only.

Layout::

    <Annotations MicronsPerPixel="0.252">
      <Annotation Id="1" Name="Tumor" LineColor="255" ...>
        <Attributes><Attribute Name="Description" Id="0" Value=""/></Attributes>
        <Regions>
          <RegionAttributeHeaders>...</RegionAttributeHeaders>
          <Region Id="1" Type="0" NegativeROA="0" Text="" ...>
            <Vertices><Vertex X="1234" Y="5678" Z="0"/>...</Vertices>
          </Region>

An ``Annotation`` is a layer: its regions share its class and colour.  Coordinates are level-0
pixels.  Region types: 0 free-form polygon, 1 rectangle (four corners, or two opposite ones), 2
ellipse (two opposite corners of its bounding box; read as a 64-point polygon), 3 arrow (tail,
head) and 4 ruler (read as lines).  A region with ``NegativeROA="1"`` is an exclusion: it
becomes a hole of the layer's regions that contain it (cut out of those it overlaps).

The class is the layer's ``Name``; without one, its first attribute's value (or the attribute's
own name, unless it is ImageScope's empty ``Description`` template).  The region's ``Text`` is
the annotation's name.  ``LineColor`` is a Windows COLORREF, red in the low byte (255 is red,
65280 green, 16711680 blue).

Import is all or nothing: a region without vertices, a non-numeric vertex, an unknown region
type or an exclusion that cuts no region raises :class:`~pathviewer.core.errors.AnnotationError`
naming the layer and region.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import Annotation, check_coordinates
from pathviewer.core.errors import AnnotationError, shown

#: Region ``Type`` -> what PathViewer reads it as.
REGION_TYPES = {0: "polygon", 1: "rectangle", 2: "ellipse", 3: "arrow", 4: "ruler"}
#: Points on the outline of an imported ellipse.
ELLIPSE_POINTS = 64
#: ImageScope's default layer attribute, which names no class.
_TEMPLATE_ATTRIBUTE = "Description"


def colorref_rgb(text: str | None) -> tuple[int, int, int] | None:
    """RGB of a COLORREF in decimal (``0x00BBGGRR``), or None when it is not one."""
    try:
        value = int(str(text).strip())
    except ValueError:
        return None
    if not 0 <= value <= 0xFFFFFF:
        return None
    return value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF


def _layer_class(layer: ET.Element) -> str | None:
    name = (layer.attrib.get("Name") or "").strip()
    if name:
        return name
    attributes = layer.find("Attributes")
    first = None if attributes is None else attributes.find("Attribute")
    if first is None:
        return None
    value = (first.attrib.get("Value") or "").strip()
    if value:
        return value
    own = (first.attrib.get("Name") or "").strip()
    return own if own and own != _TEMPLATE_ATTRIBUTE else None


def _vertices(region: ET.Element, where: str) -> list[tuple[float, float]]:
    container = region.find("Vertices")
    vertices = [] if container is None else container.findall("Vertex")
    if not vertices:
        raise AnnotationError(f"{where}: has no vertices")
    points = []
    for position, vertex in enumerate(vertices):
        try:
            x = float(vertex.attrib["X"])
            y = float(vertex.attrib["Y"])
        except KeyError as error:
            raise AnnotationError(f"{where}: vertex {position} has no {error.args[0]}") from None
        except ValueError:
            raise AnnotationError(
                f"{where}: vertex {position} is not numeric "
                f"(X={shown(vertex.attrib.get('X'))}, Y={shown(vertex.attrib.get('Y'))})"
            ) from None
        points.append((x, y))
    return points


def _region_geometry(kind: str, points: list[tuple[float, float]], where: str) -> BaseGeometry:
    if kind in ("rectangle", "ellipse") and len(points) == 2:
        (x0, y0), (x1, y1) = points
        if kind == "ellipse":
            if x0 == x1 or y0 == y1:
                raise AnnotationError(f"{where}: an ellipse with zero width or height")
            circle = Point((x0 + x1) / 2, (y0 + y1) / 2).buffer(1.0, quad_segs=ELLIPSE_POINTS // 4)
            return affinity.scale(circle, abs(x1 - x0) / 2, abs(y1 - y0) / 2)
        points = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if kind in ("polygon", "rectangle", "ellipse"):
        if len(points) > 1 and points[0] == points[-1]:
            points = points[:-1]  # written closed
        distinct = len(dict.fromkeys(points))
        if distinct < 3:
            raise AnnotationError(f"{where}: a {kind} needs at least 3 points, has {distinct}")
        return Polygon(points)
    if len(points) < 2:
        raise AnnotationError(f"{where}: a {kind} needs 2 points, has {len(points)}")
    return LineString(points)


def aperio_annotations(root: ET.Element, source: str) -> list[Annotation]:
    """Annotations of a parsed ImageScope document (see the module notes)."""
    annotations: list[Annotation] = []
    for layer_index, layer in enumerate(root.findall("Annotation")):
        layer_name = layer.attrib.get("Name") or ""
        layer_where = f"{source} annotation {layer.attrib.get('Id', layer_index + 1)}" + (
            f" ({shown(layer_name)})" if layer_name.strip() else ""
        )
        class_name = _layer_class(layer)
        color = colorref_rgb(layer.attrib.get("LineColor"))
        regions = layer.find("Regions")
        layer_regions: list[Annotation] = []
        exclusions: list[tuple[BaseGeometry, str]] = []
        for region_index, region in enumerate([] if regions is None else regions.findall("Region")):
            where = f"{layer_where} region {region.attrib.get('Id', region_index + 1)}"
            code = region.attrib.get("Type", "0")
            try:
                kind = REGION_TYPES[int(code)]
            except (KeyError, ValueError):
                known = ", ".join(f"{k} {v}" for k, v in REGION_TYPES.items())
                raise AnnotationError(
                    f"{where}: unknown region Type {shown(code)} (known: {known})"
                ) from None
            vertices = _vertices(region, where)
            check_coordinates(vertices, where)
            geometry = _region_geometry(kind, vertices, where)
            if region.attrib.get("NegativeROA", "0").strip() == "1":
                if not isinstance(geometry, Polygon):
                    raise AnnotationError(f"{where}: an exclusion (NegativeROA) must be an area")
                exclusions.append((geometry, where))
                continue
            text = (region.attrib.get("Text") or "").strip()
            layer_regions.append(
                Annotation(geometry=geometry, class_name=class_name, color=color, name=text or None)
            )
        for hole, where in exclusions:
            _cut(layer_regions, hole, where)
        annotations.extend(layer_regions)
    return annotations


def _cut(regions: list[Annotation], hole: BaseGeometry, where: str) -> None:
    """Make ``hole`` a hole of the regions that contain it, and cut it out of those it overlaps.

    A region an earlier exclusion split in two (a MultiPolygon) is cut like any other; one the
    hole covers whole would be left with no area, so that is refused, naming both.
    """
    cut = False
    for region in regions:
        shape = region.geometry
        if not isinstance(shape, Polygon | MultiPolygon) or not shape.intersects(hole):
            continue
        cut = True
        if isinstance(shape, Polygon) and shape.contains(hole):  # a hole as drawn: outline kept
            interiors = [list(ring.coords) for ring in shape.interiors]
            region.geometry = Polygon(shape.exterior.coords, [*interiors, hole.exterior.coords])
            continue
        rest = shapely.difference(shape, hole)
        if rest.is_empty or rest.area == 0:
            named = f" ({region.name!r})" if region.name else ""
            raise AnnotationError(
                f"{where}: an exclusion (NegativeROA) that covers the whole of a region{named} "
                "of its layer"
            )
        region.geometry = rest
    if not cut:
        raise AnnotationError(
            f"{where}: an exclusion (NegativeROA) that cuts no region of its layer"
        )
