"""The annotation document and the brush as pure geometry (no Qt)."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from pathviewer.core.annotation_document import (
    AnnotationDocument,
    DocumentChange,
    brush_stroke,
    erase_region,
    paint_region,
    plan_brush,
)
from pathviewer.core.annotations import Annotation


def _document() -> AnnotationDocument:
    document = AnnotationDocument()
    document.reset(
        {
            1: Annotation(shapely.box(0, 0, 100, 100), "Tumor"),
            2: Annotation(shapely.box(200, 0, 300, 100), "Stroma"),
            3: Annotation(shapely.box(40, 40, 60, 60), "Necrosis"),
            4: Annotation(shapely.Point(500, 500), "Tumor"),
        }
    )
    return document


def test_changes_are_heard_and_a_removed_selection_is_dropped() -> None:
    document = _document()
    heard: list[DocumentChange] = []
    unsubscribe = document.subscribe(heard.append)
    document.select(2)
    document.set(2, None)
    assert [c.kind for c in heard] == ["selection", "annotation", "selection"]
    assert heard[1].old is not None and heard[1].new is None
    assert document.selected is None and 2 not in document
    assert document.annotation_at(250, 50, 0) is None  # gone from the index too
    unsubscribe()
    document.set(5, Annotation(shapely.box(0, 0, 1, 1)))
    assert len(heard) == 3
    document.select(99)  # not in the document: selects nothing
    assert document.selected is None


def test_picking_prefers_the_selection_then_the_smallest_shown_region() -> None:
    document = _document()
    assert document.annotation_at(50, 50, 0) == 3  # the small region on top of the large one
    assert document.annotation_at(50, 50, 0, lambda a: a.class_name != "Necrosis") == 1
    document.select(1)
    assert document.annotation_at(50, 50, 0) == 1  # a press on the selection starts a move
    assert document.annotation_at(503, 500, 4) == 4  # a point within the tolerance
    assert document.vertex_at(99, 1, 2) == (100.0, 0.0)
    assert document.vertex_at(50, 50, 2) is None


def test_the_brush_adds_to_the_selected_region_or_makes_a_new_one() -> None:
    document = _document()
    edits = plan_brush(document, [(150, 50)], 10, erase=False)
    assert edits.add is not None and not edits.modify and not edits.delete
    document.select(1)
    edits = plan_brush(document, [(95, 50), (130, 50)], 10, erase=False)
    assert edits.add is None and [i for i, _g in edits.modify] == [1]
    grown = edits.modify[0][1]
    assert grown.geom_type == "Polygon" and grown.contains(shapely.Point(125, 50))
    document.set(1, Annotation(shapely.box(0, 0, 100, 100), "Tumor", locked=True))
    document.select(1)
    assert not plan_brush(document, [(95, 50), (130, 50)], 10, erase=False)


def test_the_eraser_cuts_shown_regions_it_touches_and_deletes_what_it_empties() -> None:
    document = _document()
    # A stroke across regions 1 and 2 that swallows 3 whole; Stroma is hidden.
    stroke = [(-20, 50), (320, 50)]
    edits = plan_brush(document, stroke, 30, erase=True, shown=lambda a: a.class_name != "Stroma")
    assert sorted(i for i, _g in edits.modify) == [1] and edits.delete == [3]
    cut = edits.modify[0][1]
    assert cut.geom_type == "MultiPolygon" and not cut.contains(shapely.Point(50, 50))
    document.set(1, Annotation(shapely.box(0, 0, 100, 100), "Tumor", locked=True))
    edits = plan_brush(document, stroke, 30, erase=True)
    assert [i for i, _g in edits.modify] == [2] and edits.delete == [3]  # locked 1 untouched
    document.select(2)
    edits = plan_brush(document, stroke, 30, erase=True)
    assert [i for i, _g in edits.modify] == [2] and not edits.delete  # only the selection


coordinate = st.floats(-500, 500, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(coordinate, coordinate), min_size=1, max_size=12),
    st.floats(1, 80),
    st.tuples(coordinate, coordinate, st.floats(5, 400), st.floats(5, 400)),
)
def test_painting_covers_the_stroke_and_erasing_leaves_none_of_it(points, radius, box) -> None:
    x, y, width, height = box
    region = shapely.box(x, y, x + width, y + height)
    stroke = brush_stroke(points, radius)
    painted = paint_region(region, stroke)
    assert painted.is_valid and painted.geom_type in ("Polygon", "MultiPolygon")
    assert painted.area >= max(region.area, stroke.area) - 1e-6 * region.area
    erased = erase_region(region, stroke)
    assert erased.is_valid
    assert erased.is_empty or erased.geom_type in ("Polygon", "MultiPolygon")
    assert erased.intersection(stroke).area <= 1e-6 * max(region.area, 1.0)
    assert erased.area <= region.area + 1e-6 * region.area


def test_a_stroke_beside_the_selection_starts_a_new_region() -> None:
    document = _document()
    document.select(1)  # the box 0..100
    edits = plan_brush(document, [(150, 150), (170, 170)], 10, erase=False)
    assert edits.add is not None and not edits.modify


def test_shapes_have_the_names_of_the_tools() -> None:
    from pathviewer.core.geometry import shape_name, unit_text

    assert shape_name(shapely.box(0, 0, 10, 5)) == "Rectangle"
    assert shape_name(shapely.Polygon([(0, 0), (10, 0), (5, 8)])) == "Polygon"
    from pathviewer.gui.annotations.controller import ellipse

    drawn = ellipse(500.0, 300.0, 120.0, 40.0)
    assert shape_name(drawn) == "Ellipse"  # what the Ellipse tool draws
    rounded = shapely.Polygon(np.rint(np.asarray(drawn.exterior.coords)))
    assert shape_name(rounded) == "Ellipse"  # as another tool's file rounds it
    octagon = shapely.Point(0, 0).buffer(10, quad_segs=2)  # 8 vertices: a polygon
    assert shape_name(octagon) == "Polygon"
    star = np.asarray(drawn.exterior.coords).copy()
    star[::2] = (star[::2] - (500.0, 300.0)) * 0.8 + (500.0, 300.0)
    assert shape_name(shapely.Polygon(star)) == "Polygon"
    assert shape_name(shapely.Point(0, 0).buffer(50)) == "Ellipse"  # a circle
    assert shape_name(shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(3, 3, 4, 4)])) == (
        "Region (2 parts)"
    )
    assert shape_name(shapely.LineString([(0, 0), (1, 1)])) == "Line"
    assert shape_name(shapely.Point(1, 1)) == "Point"
    assert unit_text("Area µm^2") == "µm²" and unit_text("Perimeter µm") == "µm"
