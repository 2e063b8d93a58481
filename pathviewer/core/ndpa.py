"""Hamamatsu NDP.view annotations (``.ndpa``, beside an ``.ndpi``), read only.

Layout::

    <annotations>
      <ndpviewstate id="1">
        <title>Tumor</title>
        <coordformat>nanometers</coordformat>
        <annotation type="freehand" displayname="AnnotateFreehand" color="#ff0000">
          <closed>1</closed>
          <pointlist><point><x>-1250000</x><y>830000</y></point>...</pointlist>
          <specialtype>rectangle</specialtype>   (rectangles are freehand with this)
        </annotation>

Coordinates are nanometres on the glass, from the centre of the slide, not pixels: a point is
at level-0 pixel ``((x - XOffsetFromSlideCentre) / (1000 * mpp-x) + width / 2, ...)``, where the
offsets (nm, where the scanned image's centre lies from the slide's) are OpenSlide's
``hamamatsu.XOffsetFromSlideCentre`` / ``YOffsetFromSlideCentre`` and ``width`` the level-0
width.  So reading needs the slide's properties.

Types: ``freehand`` (a polygon, or a line when ``<closed>0</closed>``), ``circle`` (``x``, ``y``,
``radius``: a 64-point polygon), ``pin`` (``x``, ``y``: a point), ``linearmeasure`` (a ruler) and
``pointer`` (an arrow), both ``x1``, ``y1``, ``x2``, ``y2`` (or a point list): lines.  The view's
``title`` is the class and the name.  All or nothing: a non-numeric coordinate, a missing point
or an unknown type raises :class:`~pathviewer.core.errors.AnnotationError` naming the view.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass

from shapely import affinity
from shapely.geometry import LineString, Point, Polygon
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import Annotation, check_coordinates, rgb_from_hex
from pathviewer.core.asap import parse_xml_root, read_file_bytes
from pathviewer.core.errors import AnnotationError, shown

#: The slide properties (OpenSlide's names) that place NDPA coordinates on the slide.
MPP_X, MPP_Y = "openslide.mpp-x", "openslide.mpp-y"
OFFSET_X, OFFSET_Y = "hamamatsu.XOffsetFromSlideCentre", "hamamatsu.YOffsetFromSlideCentre"
WIDTH, HEIGHT = "openslide.level[0].width", "openslide.level[0].height"
NDPA_PROPERTIES = (MPP_X, MPP_Y, OFFSET_X, OFFSET_Y, WIDTH, HEIGHT)
#: Points on the outline of an imported circle.
CIRCLE_POINTS = 64
_NM_PER_UNIT = {"nanometers": 1.0, "micrometers": 1e3, "millimeters": 1e6}


@dataclass(frozen=True)
class SlideFrame:
    """Where NDPA's nanometres from the slide centre fall in level-0 pixels."""

    mpp_x: float
    mpp_y: float
    offset_x_nm: float
    offset_y_nm: float
    width: int
    height: int

    @classmethod
    def from_properties(cls, properties: Mapping[str, str] | None, source: str) -> SlideFrame:
        """Read the frame from OpenSlide properties of the ``.ndpi``.

        Raises
        ------
        AnnotationError
            Properties missing or not numbers (the message names them).
        """
        properties = properties or {}
        missing = [key for key in NDPA_PROPERTIES if key not in properties]
        if missing:
            raise AnnotationError(
                f"{source}: NDPA coordinates are nanometres from the slide centre; placing them"
                f" needs the slide (.ndpi) and its {', '.join(missing)}"
            )
        try:
            values = [float(properties[key]) for key in NDPA_PROPERTIES]
        except ValueError:
            raise AnnotationError(
                f"{source}: the slide's {', '.join(NDPA_PROPERTIES)} are not all numbers"
            ) from None
        mpp_x, mpp_y, off_x, off_y, width, height = values
        if not all(math.isfinite(v) for v in values) or min(mpp_x, mpp_y, width, height) <= 0:
            raise AnnotationError(f"{source}: the slide's resolution or size is not positive")
        return cls(mpp_x, mpp_y, off_x, off_y, int(width), int(height))

    def pixel(self, x_nm: float, y_nm: float) -> tuple[float, float]:
        """Level-0 pixel of a point given in nanometres from the slide centre."""
        return (
            (x_nm - self.offset_x_nm) / (self.mpp_x * 1000.0) + self.width / 2,
            (y_nm - self.offset_y_nm) / (self.mpp_y * 1000.0) + self.height / 2,
        )


def _number(parent: ET.Element, tag: str, where: str) -> float:
    element = parent.find(tag)
    if element is None or element.text is None or not element.text.strip():
        raise AnnotationError(f"{where}: has no <{tag}>")
    try:
        value = float(element.text)
    except ValueError:
        raise AnnotationError(
            f"{where}: <{tag}> {shown(element.text.strip())} is not a number"
        ) from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: <{tag}> is not finite")
    return value


def _point_list(annotation: ET.Element, where: str, scale: float) -> list[tuple[float, float]]:
    container = annotation.find("pointlist")
    points = []
    for position, point in enumerate([] if container is None else container.findall("point")):
        spot = f"{where} point {position}"
        points.append((_number(point, "x", spot) * scale, _number(point, "y", spot) * scale))
    return points


def _geometry(annotation: ET.Element, frame: SlideFrame, scale: float, where: str) -> BaseGeometry:
    kind = (annotation.attrib.get("type") or "").strip().lower()
    if kind in ("freehand", "rectangle"):
        nm = _point_list(annotation, where, scale)
        closed_text = (annotation.findtext("closed") or "").strip()
        line = closed_text == "0" or (
            not closed_text and annotation.attrib.get("displayname") == "AnnotateFreehandLine"
        )
        points = [frame.pixel(x, y) for x, y in nm]
        if line:
            if len(points) < 2:
                raise AnnotationError(f"{where}: a freehand line needs 2 points, has {len(points)}")
            return LineString(points)
        if len(points) > 1 and points[0] == points[-1]:
            points = points[:-1]
        distinct = len(dict.fromkeys(points))
        if distinct < 3:
            raise AnnotationError(
                f"{where}: a {kind} region needs at least 3 points, has {distinct}"
            )
        return Polygon(points)
    if kind == "circle":
        cx, cy = frame.pixel(
            _number(annotation, "x", where) * scale, _number(annotation, "y", where) * scale
        )
        radius_nm = _number(annotation, "radius", where) * scale
        if radius_nm <= 0:
            raise AnnotationError(f"{where}: a circle with radius {radius_nm:g} nm")
        unit = Point(cx, cy).buffer(1.0, quad_segs=CIRCLE_POINTS // 4)
        # A round circle on the glass: pixels may be not square.
        return affinity.scale(
            unit, radius_nm / (frame.mpp_x * 1000.0), radius_nm / (frame.mpp_y * 1000.0)
        )
    if kind == "pin":
        return Point(
            frame.pixel(
                _number(annotation, "x", where) * scale, _number(annotation, "y", where) * scale
            )
        )
    if kind in ("linearmeasure", "pointer"):
        if annotation.find("x1") is not None:
            ends = [
                (
                    _number(annotation, f"x{i}", where) * scale,
                    _number(annotation, f"y{i}", where) * scale,
                )
                for i in (1, 2)
            ]
        else:
            ends = _point_list(annotation, where, scale)
        if len(ends) < 2:
            raise AnnotationError(f"{where}: a {kind} needs 2 points, has {len(ends)}")
        return LineString([frame.pixel(x, y) for x, y in ends])
    raise AnnotationError(
        f"{where}: unknown annotation type {shown(kind)} (known: freehand, circle, pin,"
        " linearmeasure, pointer)"
    )


def parse_ndpa(
    data: bytes | str, properties: Mapping[str, str] | None, source: str = "<string>"
) -> list[Annotation]:
    """Parse NDPA text with the slide's ``properties``; ``source`` names it in errors."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    root = parse_xml_root(data, source, "NDPA")
    if root.tag != "annotations":
        raise AnnotationError(f"{source}: root element is <{root.tag}>, not NDPA's <annotations>")
    frame = SlideFrame.from_properties(properties, source)
    annotations = []
    for index, view in enumerate(root.findall("ndpviewstate")):
        title = (view.findtext("title") or "").strip()
        where = f"{source} ndpviewstate {view.attrib.get('id', index + 1)}" + (
            f" ({shown(title)})" if title else ""
        )
        unit = (view.findtext("coordformat") or "nanometers").strip().lower()
        if unit not in _NM_PER_UNIT:
            raise AnnotationError(f"{where}: unknown coordformat {shown(unit)}")
        annotation = view.find("annotation")
        if annotation is None:
            raise AnnotationError(f"{where}: has no <annotation>")
        geometry = _geometry(annotation, frame, _NM_PER_UNIT[unit], where)
        check_coordinates(geometry, where)  # in pixels, after the nm conversion
        annotations.append(
            Annotation(
                geometry=geometry,
                class_name=title or None,
                color=rgb_from_hex(annotation.attrib.get("color")),
                name=title or None,
            )
        )
    return annotations


def read_ndpa(
    path: str | os.PathLike[str], properties: Mapping[str, str] | None
) -> list[Annotation]:
    """Read an NDPA file onto the slide whose OpenSlide ``properties`` are given.

    Parameters
    ----------
    properties
        The ``.ndpi``'s properties: :data:`NDPA_PROPERTIES` are needed.

    Raises
    ------
    AnnotationError
        Missing properties (named), malformed XML or a malformed view; nothing is returned.
    """
    return parse_ndpa(read_file_bytes(path), properties, str(path))
