"""Geometry helpers for annotations: measurements, display simplification, spatial index,
and patch labelling from region annotations.

Everything works in level-0 pixel coordinates; physical units come from the slide's microns per
pixel (``mpp``).  Vectorised with shapely 2 array functions so that thousands of patch boxes or
polygons are handled in one call.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import numpy as np
import shapely
from shapely import affinity
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import Annotation, union_of_class, valid_geometry

Box = tuple[float, float, float, float]  #: (x, y, width, height) in level-0 px

_REGION_TYPES = ("Polygon", "MultiPolygon")
_LINE_TYPES = ("LineString", "MultiLineString", "LinearRing")


# --------------------------------------------------------------------------- measurements


def _mpp_xy(mpp: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(mpp, tuple):
        mpp_x, mpp_y = float(mpp[0]), float(mpp[1])
    else:
        mpp_x = mpp_y = float(mpp)
    if not (mpp_x > 0 and mpp_y > 0):
        raise ValueError(f"microns per pixel must be positive, got {mpp!r}")
    return mpp_x, mpp_y


def _length_um(geometry: BaseGeometry, mpp: float | tuple[float, float]) -> float:
    mpp_x, mpp_y = _mpp_xy(mpp)
    if mpp_x == mpp_y:
        return float(geometry.length) * mpp_x
    # Non-square pixels: scale the geometry itself, since a length does not scale by one factor.
    return float(affinity.scale(geometry, xfact=mpp_x, yfact=mpp_y, origin=(0, 0)).length)


def area_um2(geometry: BaseGeometry, mpp: float | tuple[float, float]) -> float:
    """Area of a region in square microns (holes excluded); 0 for points and lines.

    Parameters
    ----------
    geometry
        Polygon or MultiPolygon in level-0 pixels.
    mpp
        Microns per level-0 pixel, one number or ``(mpp_x, mpp_y)``.
    """
    mpp_x, mpp_y = _mpp_xy(mpp)
    return float(valid_geometry(geometry).area) * mpp_x * mpp_y


def perimeter_um(geometry: BaseGeometry, mpp: float | tuple[float, float]) -> float:
    """Perimeter of a region in microns (outer boundary plus hole boundaries)."""
    if geometry.geom_type not in _REGION_TYPES:
        return 0.0
    return _length_um(geometry, mpp)


def length_um(geometry: BaseGeometry, mpp: float | tuple[float, float]) -> float:
    """Length of a line (or the boundary length of anything else) in microns."""
    return _length_um(geometry, mpp)


def measure(geometry: BaseGeometry, mpp: float | tuple[float, float] | None) -> dict[str, float]:
    """The measurements shown for an annotation, keyed like QuPath's measurement names.

    Regions get ``Area µm^2`` and ``Perimeter µm``; lines get ``Length µm``; points get nothing.
    Without ``mpp`` (unknown resolution) the values are in pixels (``Area px^2``...).
    """
    gtype = geometry.geom_type
    if gtype in _REGION_TYPES:
        # A self-intersecting outline is kept as drawn; its area is the repaired copy's (a bow
        # tie's signed halves would otherwise cancel to 0).
        geometry = valid_geometry(geometry)
    if mpp is None:
        if gtype in _REGION_TYPES:
            return {"Area px^2": float(geometry.area), "Perimeter px": float(geometry.length)}
        if gtype in _LINE_TYPES:
            return {"Length px": float(geometry.length)}
        return {}
    if gtype in _REGION_TYPES:
        return {"Area µm^2": area_um2(geometry, mpp), "Perimeter µm": perimeter_um(geometry, mpp)}
    if gtype in _LINE_TYPES:
        return {"Length µm": length_um(geometry, mpp)}
    return {}


#: Units a user can have measurements shown in (Edit > Preferences); µm is QuPath's and the
#: exports' unit whatever is shown.
DISPLAY_UNITS = ("µm", "mm")


def in_display_unit(values: dict[str, float], unit: str) -> dict[str, float]:
    """Measurements of :func:`measure` (µm) shown in ``unit`` (one of :data:`DISPLAY_UNITS`).

    Names keep their form (``Area mm^2``, ``Perimeter mm``); pixel measurements are unchanged.
    """
    if unit not in DISPLAY_UNITS:
        raise ValueError(f"unknown unit {unit!r} (known: {', '.join(DISPLAY_UNITS)})")
    if unit == "µm":
        return dict(values)
    out: dict[str, float] = {}
    for name, value in values.items():
        if name.endswith(" µm^2"):
            out[name.replace(" µm^2", " mm^2")] = value / 1e6
        elif name.endswith(" µm"):
            out[name.replace(" µm", " mm")] = value / 1e3
        else:
            out[name] = value
    return out


def shape_name(geometry: BaseGeometry) -> str:
    """What a user calls the shape: Rectangle, Ellipse, Polygon, Region (n parts), Line, Point(s).

    An axis-aligned four-cornered polygon is a rectangle (what the Rectangle tool draws); a
    polygon of many vertices all on the axis-aligned ellipse inscribed in its bounds is an
    ellipse (the Ellipse tool's polygon, QuPath's and ASAP's too, which store ellipses that way);
    a region in several pieces (an eraser cut through it) says how many.
    """
    gtype = geometry.geom_type
    if gtype == "Polygon":
        coords = np.asarray(geometry.exterior.coords)
        if len(coords) == 5 and not len(geometry.interiors):
            xs, ys = np.unique(coords[:, 0]), np.unique(coords[:, 1])
            if len(xs) == 2 and len(ys) == 2:
                return "Rectangle"
        if not len(geometry.interiors) and _on_inscribed_ellipse(coords):
            return "Ellipse"
        return "Polygon"
    if gtype == "MultiPolygon":
        return f"Region ({len(geometry.geoms)} parts)"
    if gtype in ("LineString", "LinearRing"):
        return "Line"
    if gtype == "MultiLineString":
        return f"Lines ({len(geometry.geoms)})"
    if gtype == "MultiPoint":
        return f"Points ({len(geometry.geoms)})"
    return "Point" if gtype == "Point" else gtype


#: Fewest distinct vertices of a polygon taken for an ellipse (an octagon is a polygon).
ELLIPSE_MIN_VERTICES = 16


def _on_inscribed_ellipse(coords: np.ndarray) -> bool:
    """Whether every vertex lies on the axis-aligned ellipse inscribed in the vertices' bounds.

    The tolerance (0.5 % of the radius) allows coordinates rounded to the pixel by another tool.
    """
    points = coords[:-1] if len(coords) > 1 and np.array_equal(coords[0], coords[-1]) else coords
    if len(points) < ELLIPSE_MIN_VERTICES:
        return False
    low, high = points.min(axis=0), points.max(axis=0)
    centre, radii = (low + high) / 2.0, (high - low) / 2.0
    if np.any(radii <= 0):
        return False
    radius = np.hypot(*((points - centre) / radii).T)
    return bool(np.all(np.abs(radius - 1.0) <= 0.005 + 0.5 / radii.min()))


def unit_text(measurement: str) -> str:
    """The unit of a measurement name as printed (``Area µm^2`` -> ``µm²``)."""
    return measurement.split()[-1].replace("^2", "²")


# --------------------------------------------------------------------------- display


def simplify_for_display(geometry: BaseGeometry, tolerance_px: float) -> BaseGeometry:
    """Fewer vertices for drawing at low zoom; never turns a visible region into nothing.

    Parameters
    ----------
    geometry
        Level-0 geometry.
    tolerance_px
        Maximum deviation in level-0 pixels; about half a screen pixel times the downsample
        looks identical on screen.
    """
    if tolerance_px <= 0 or geometry.geom_type == "Point":
        return geometry
    simplified = shapely.simplify(geometry, tolerance_px, preserve_topology=True)
    if simplified.is_empty:  # a sliver smaller than the tolerance: keep something clickable
        return geometry.envelope
    return simplified


def vertex_count(geometry: BaseGeometry) -> int:
    """Number of coordinates of a geometry (what the painter has to draw)."""
    return int(shapely.get_num_coordinates(geometry))


class AnnotationIndex:
    """Spatial index (shapely STRtree) over annotation geometries, for drawing only what is visible.

    The tree itself is immutable; :meth:`set` and :meth:`remove` mark it stale and the next query
    rebuilds it (about 10 ms for 10,000 polygons), so an editor can call them on every edit.
    Simplified geometries are cached per power-of-two tolerance, so panning at one zoom level
    reuses them.

    Parameters
    ----------
    geometries
        Geometries in level-0 pixels.
    keys
        One hashable key per geometry (e.g. store ids); default: positions 0..n-1.
    """

    def __init__(
        self, geometries: Iterable[BaseGeometry] = (), keys: Iterable[Hashable] | None = None
    ) -> None:
        geometries = list(geometries)
        key_list: list[Hashable] = list(range(len(geometries))) if keys is None else list(keys)
        if len(key_list) != len(geometries):
            raise ValueError("AnnotationIndex: keys and geometries differ in length")
        self._geoms: dict[Hashable, BaseGeometry] = dict(zip(key_list, geometries, strict=True))
        self._tree: shapely.STRtree | None = None
        self._tree_keys: list[Hashable] = []
        self._simplified: dict[tuple[Hashable, int], BaseGeometry] = {}

    @classmethod
    def from_annotations(
        cls, annotations: Sequence[Annotation], keys: Iterable[Hashable] | None = None
    ) -> AnnotationIndex:
        """Index the geometries of annotations (keys default to list positions)."""
        return cls((a.geometry for a in annotations), keys)

    def __len__(self) -> int:
        return len(self._geoms)

    def __contains__(self, key: object) -> bool:
        return key in self._geoms

    def geometry(self, key: Hashable) -> BaseGeometry:
        """The full-resolution geometry of ``key``."""
        return self._geoms[key]

    def set(self, key: Hashable, geometry: BaseGeometry) -> None:
        """Add or replace one geometry."""
        self._geoms[key] = geometry
        self._invalidate(key)

    def remove(self, key: Hashable) -> None:
        """Drop one geometry (no error if absent)."""
        if self._geoms.pop(key, None) is not None:
            self._invalidate(key)

    def _invalidate(self, key: Hashable) -> None:
        self._tree = None
        for cache_key in [k for k in self._simplified if k[0] == key]:
            del self._simplified[cache_key]

    def _ensure_tree(self) -> shapely.STRtree:
        if self._tree is None:
            self._tree_keys = list(self._geoms)
            self._tree = shapely.STRtree([self._geoms[k] for k in self._tree_keys])
        return self._tree

    def query(self, bbox: tuple[float, float, float, float]) -> list[Hashable]:
        """Keys of the geometries that intersect a box ``(x0, y0, x1, y1)`` (level-0 px)."""
        if not self._geoms:
            return []
        tree = self._ensure_tree()
        hits = tree.query(shapely.box(*bbox), predicate="intersects")
        return [self._tree_keys[i] for i in np.sort(hits)]

    def at(self, x: float, y: float, tolerance: float = 0.0) -> list[Hashable]:
        """Keys of the geometries within ``tolerance`` px of a point, smallest area first.

        Smallest first so that clicking inside a small region drawn on top of a large one selects
        the small one.
        """
        if not self._geoms:
            return []
        tree = self._ensure_tree()
        point = shapely.Point(x, y)
        if tolerance > 0:
            hits = tree.query(point, predicate="dwithin", distance=tolerance)
        else:
            hits = tree.query(point, predicate="intersects")
        keys = [self._tree_keys[i] for i in hits]
        return sorted(keys, key=lambda k: self._geoms[k].area)

    def visible(
        self, bbox: tuple[float, float, float, float], downsample: float = 1.0
    ) -> list[tuple[Hashable, BaseGeometry]]:
        """``(key, geometry)`` for what intersects ``bbox``, simplified for a view at ``downsample``.

        The tolerance is half a screen pixel (``downsample / 2`` level-0 px) rounded down to a
        power of two so that nearby zoom levels share the cache.
        """
        keys = self.query(bbox)
        tolerance = downsample / 2.0
        if tolerance < 1.0:
            return [(k, self._geoms[k]) for k in keys]
        level = int(np.floor(np.log2(tolerance)))
        missing = [k for k in keys if (k, level) not in self._simplified]
        if missing:
            # One vectorised GEOS call for everything not yet cached at this level.
            originals = np.array([self._geoms[k] for k in missing], dtype=object)
            simplified = shapely.simplify(originals, float(2**level), preserve_topology=True)
            for k, original, simple in zip(missing, originals, simplified, strict=True):
                if simple.is_empty or original.geom_type == "Point":
                    simple = original if original.geom_type == "Point" else original.envelope
                self._simplified[(k, level)] = simple
        return [(k, self._simplified[(k, level)]) for k in keys]


# --------------------------------------------------------------------------- patch labels


def _boxes_array(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (x, y, width, height) rows, got shape {array.shape}")
    return array


def tumour_overlap_fractions(
    geometry: BaseGeometry, boxes: Sequence[Box] | np.ndarray
) -> np.ndarray:
    """Fraction of each box's area that lies inside ``geometry``.

    Parameters
    ----------
    geometry
        A region (typically the union of the tumour annotations) in level-0 px.
    boxes
        ``(x, y, width, height)`` rows in level-0 px.

    Returns
    -------
    numpy.ndarray
        float64 fractions in [0, 1], one per box (0 for empty boxes or an empty geometry).
    """
    array = _boxes_array(boxes)
    fractions = np.zeros(len(array), dtype=np.float64)
    if len(array) == 0 or geometry is None or geometry.is_empty:
        return fractions
    geometry = valid_geometry(geometry)
    x, y, w, h = array.T
    polygons = shapely.box(x, y, x + w, y + h)
    box_area = w * h
    shapely.prepare(geometry)
    # Cheap predicates first: most boxes are either fully outside or fully inside a region, and
    # only the boundary boxes need an actual polygon intersection.
    touching = shapely.intersects(geometry, polygons) & (box_area > 0)
    inside = touching & shapely.contains(geometry, polygons)
    fractions[inside] = 1.0
    partial = touching & ~inside
    if partial.any():
        overlap = shapely.area(shapely.intersection(polygons[partial], geometry))
        fractions[partial] = np.clip(overlap / box_area[partial], 0.0, 1.0)
    return fractions


def patch_labels_from_regions(
    annotations: Sequence[Annotation],
    boxes: Sequence[tuple[int, int, int, int]],
    background_class: str = "Normal",
) -> list[str]:
    """Label patch boxes by area majority of region annotations.

    A box gets the class whose regions cover the largest part of it when that part exceeds half
    the box; otherwise it gets ``background_class``.  Unclassified annotations and non-region
    geometries (points, lines) are ignored.  Overlapping regions of one class count once.

    Parameters
    ----------
    annotations
        Region annotations in level-0 px.
    boxes
        ``(x, y, width, height)`` patch boxes in level-0 px.
    background_class
        Label for boxes with no majority class.

    Returns
    -------
    list of str
        One label per box.
    """
    array = _boxes_array(boxes)
    classes = sorted(
        {
            a.class_name
            for a in annotations
            if a.class_name and a.geometry.geom_type in _REGION_TYPES
        }
    )
    if not classes or len(array) == 0:
        return [background_class] * len(array)
    fractions = np.stack(
        [tumour_overlap_fractions(union_of_class(annotations, c), array) for c in classes], axis=1
    )
    best = fractions.argmax(axis=1)
    best_fraction = fractions[np.arange(len(array)), best]
    return [
        classes[b] if f > 0.5 else background_class
        for b, f in zip(best.tolist(), best_fraction.tolist(), strict=True)
    ]


def boxes_to_polygons(boxes: Sequence[Box] | np.ndarray) -> np.ndarray:
    """Shapely rectangles for ``(x, y, width, height)`` rows (array of Polygons)."""
    array = _boxes_array(boxes)
    x, y, w, h = array.T
    result: Any = shapely.box(x, y, x + w, y + h)
    return np.asarray(result)
