"""The open slide's annotations, their spatial index and the selection, as a Qt-free model.

The drawing layer renders an :class:`AnnotationDocument`; the annotation controller edits it
(through the undo stack, which writes to the project store first) and asks it what lies under
the cursor.  Brush and eraser strokes are planned here as pure geometry (:func:`plan_brush`), so
what a stroke does to which region can be tested without a window.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from pathviewer.core.annotations import Annotation, valid_geometry
from pathviewer.core.geometry import AnnotationIndex

#: Above this many vertices an annotation shows no vertex handles (they would hide it).
MAX_HANDLES = 2000

#: Geometry types a brush paints into and an eraser cuts.
REGION_TYPES = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class DocumentChange:
    """What changed in an :class:`AnnotationDocument`.

    ``kind`` is ``"reset"`` (everything, e.g. another slide), ``"annotation"`` (one added,
    replaced or removed: ``old`` / ``new`` are None for an addition / removal) or
    ``"selection"``.
    """

    kind: Literal["reset", "annotation", "selection"]
    annotation_id: int | None = None
    old: Annotation | None = None
    new: Annotation | None = None


Listener = Callable[[DocumentChange], None]


class AnnotationDocument:
    """The annotations of one slide keyed by store id, with a spatial index and a selection.

    Listeners (:meth:`subscribe`) hear every change after it is made; the selection is dropped
    when its annotation goes.
    """

    def __init__(self) -> None:
        self._annotations: dict[int, Annotation] = {}
        self.index = AnnotationIndex()
        self._selected: int | None = None
        self._listeners: list[Listener] = []

    # -- observing ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(change)`` after each change; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, change: DocumentChange) -> None:
        for listener in list(self._listeners):
            listener(change)

    # -- reading -----------------------------------------------------------------------------

    @property
    def annotations(self) -> Mapping[int, Annotation]:
        """Store id -> annotation (read-only; edit with :meth:`reset` and :meth:`set`)."""
        return self._annotations

    def __contains__(self, annotation_id: object) -> bool:
        return annotation_id in self._annotations

    def __len__(self) -> int:
        return len(self._annotations)

    def __iter__(self) -> Iterator[int]:
        return iter(self._annotations)

    def get(self, annotation_id: int | None) -> Annotation | None:
        """The annotation of a store id, or None."""
        return None if annotation_id is None else self._annotations.get(annotation_id)

    @property
    def selected(self) -> int | None:
        """The selected annotation's store id (None: nothing selected)."""
        return self._selected

    @property
    def selected_annotation(self) -> Annotation | None:
        """The selected annotation, or None."""
        return self.get(self._selected)

    # -- editing -----------------------------------------------------------------------------

    def reset(self, annotations: Mapping[int, Annotation]) -> None:
        """Replace everything (another slide or project); the selection is cleared."""
        self._annotations = dict(annotations)
        self.index = AnnotationIndex(
            [a.geometry for a in self._annotations.values()], list(self._annotations)
        )
        self._selected = None
        self._emit(DocumentChange("reset"))

    def set(self, annotation_id: int, annotation: Annotation | None) -> None:
        """Add or replace one annotation, or remove it (``annotation`` None)."""
        old = self._annotations.get(annotation_id)
        if annotation is None:
            if old is None:
                return
            del self._annotations[annotation_id]
            self.index.remove(annotation_id)
        else:
            self._annotations[annotation_id] = annotation
            self.index.set(annotation_id, annotation.geometry)
        self._emit(DocumentChange("annotation", annotation_id, old, annotation))
        if annotation is None and self._selected == annotation_id:
            self._selected = None
            self._emit(DocumentChange("selection"))

    def select(self, annotation_id: int | None) -> None:
        """Select an annotation (an id not in the document selects nothing)."""
        if annotation_id is not None and annotation_id not in self._annotations:
            annotation_id = None
        if annotation_id != self._selected:
            self._selected = annotation_id
        # Announced even when unchanged: a drag preview of the selection ends here too.
        self._emit(DocumentChange("selection", annotation_id))

    # -- hit testing -------------------------------------------------------------------------

    def annotation_at(
        self,
        x: float,
        y: float,
        tolerance: float,
        shown: Callable[[Annotation], bool] = lambda _a: True,
    ) -> int | None:
        """The shown annotation under ``(x, y)``: the selected one when it is hit (so a press on
        it starts a move), else the smallest region containing the point or a point or line
        within ``tolerance`` level-0 px."""
        hits = [k for k in _ids(self.index.at(x, y, tolerance)) if shown(self._annotations[k])]
        if not hits:
            return None
        return self._selected if self._selected in hits else hits[0]

    def vertex_at(self, x: float, y: float, tolerance: float) -> tuple[float, float] | None:
        """The selected annotation's vertex within ``tolerance`` level-0 px of ``(x, y)``."""
        annotation = self.selected_annotation
        if annotation is None:
            return None
        coords = handle_coordinates(annotation.geometry)
        if len(coords) == 0 or len(coords) > MAX_HANDLES:
            return None
        distances = np.hypot(coords[:, 0] - x, coords[:, 1] - y)
        nearest = int(np.argmin(distances))
        if distances[nearest] > tolerance:
            return None
        return float(coords[nearest, 0]), float(coords[nearest, 1])

    def regions_touching(
        self, geometry: BaseGeometry, shown: Callable[[Annotation], bool] = lambda _a: True
    ) -> list[int]:
        """Shown regions (polygons) that intersect ``geometry``, in index order."""
        found = []
        for key in _ids(self.index.query(geometry.bounds)):
            annotation = self._annotations[key]
            if (
                shown(annotation)
                and annotation.geometry.geom_type in REGION_TYPES
                and annotation.geometry.intersects(geometry)
            ):
                found.append(key)
        return found


def _ids(keys: Iterable[Hashable]) -> list[int]:
    """The index's keys as store ids (the document only ever indexes ints)."""
    return [k for k in keys if isinstance(k, int)]


def handle_coordinates(geometry: BaseGeometry) -> np.ndarray:
    """Distinct editable vertices of a geometry (a ring's closing point once; none for a point)."""
    if geometry.geom_type == "Point":
        return np.empty((0, 2))
    coords = shapely.get_coordinates(geometry)
    return np.unique(coords, axis=0) if len(coords) > MAX_HANDLES else coords


# --------------------------------------------------------------------------- brush geometry


def polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The polygonal part of a (repaired) geometry; an empty polygon when none is left."""
    geometry = valid_geometry(geometry)
    if geometry.geom_type in REGION_TYPES:
        return geometry
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in REGION_TYPES]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def brush_stroke(points: Sequence[tuple[float, float]], radius: float) -> BaseGeometry:
    """The area swept by a disk of ``radius`` level-0 px along ``points``.

    Simplified by a twentieth of the radius: a stroke has thousands of redundant vertices and a
    quarter of a screen pixel is invisible.
    """
    if not points:
        return shapely.Polygon()
    line = shapely.LineString(points) if len(points) > 1 else shapely.Point(points[0])
    return line.buffer(radius, quad_segs=8).simplify(radius * 0.05)


def paint_region(region: BaseGeometry, stroke: BaseGeometry) -> BaseGeometry:
    """``region`` with a brush stroke added (a valid polygon or multipolygon)."""
    return polygonal(region.union(stroke))


def erase_region(region: BaseGeometry, stroke: BaseGeometry) -> BaseGeometry:
    """``region`` with a stroke cut out; empty when nothing is left."""
    return polygonal(region.difference(stroke))


@dataclass
class BrushEdits:
    """What a brush or eraser stroke does: a new region, changed regions, deleted regions."""

    add: BaseGeometry | None = None
    modify: list[tuple[int, BaseGeometry]] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.add is not None or bool(self.modify) or bool(self.delete)


def plan_brush(
    document: AnnotationDocument,
    points: Sequence[tuple[float, float]],
    radius: float,
    erase: bool,
    shown: Callable[[Annotation], bool] = lambda _a: True,
) -> BrushEdits:
    """The edits of one stroke (``points`` swept by a disk of ``radius`` level-0 px).

    The brush adds to the selected region when the stroke touches it, and otherwise makes a new
    region (a stroke beside the selection must not grow it across the gap).
    The eraser cuts the selected region, or, with none selected, every shown region it touches
    (never a hidden one: the user cannot see what would be cut); a region cut away entirely is
    deleted.  Locked annotations are left as they are.
    """
    stroke = brush_stroke(points, radius)
    edits = BrushEdits()
    if stroke.is_empty:
        return edits
    selected = document.selected_annotation
    target = document.selected if selected and selected.geometry.geom_type in REGION_TYPES else None
    if not erase:
        if target is None or not document.annotations[target].geometry.intersects(stroke):
            edits.add = stroke
        elif not document.annotations[target].locked:
            edits.modify.append(
                (target, paint_region(document.annotations[target].geometry, stroke))
            )
        return edits
    targets = [target] if target is not None else document.regions_touching(stroke, shown)
    for annotation_id in targets:
        annotation = document.annotations[annotation_id]
        if annotation.locked:
            continue
        rest = erase_region(annotation.geometry, stroke)
        if rest.is_empty:
            edits.delete.append(annotation_id)
        else:
            edits.modify.append((annotation_id, rest))
    return edits
