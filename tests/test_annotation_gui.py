"""Annotation drawing and editing in the main window: tools, selection, brush, classes,
undo/redo written through to the project store, import/export, the drawing layer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

import shapely  # noqa: E402
from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox  # noqa: E402

from pathviewer.core.errors import AnnotationError  # noqa: E402
from pathviewer.core.slide import ArraySlide  # noqa: E402
from pathviewer.core.store import Project  # noqa: E402
from pathviewer.gui.annotations import controller as annotation_tools  # noqa: E402
from pathviewer.gui.annotations import layer as annotation_layer  # noqa: E402
from pathviewer.gui.context import build_features  # noqa: E402
from pathviewer.gui.main_window import MainWindow  # noqa: E402

LEFT = Qt.MouseButton.LeftButton
NOMOD = Qt.KeyboardModifier.NoModifier


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The default project must land in this test's folder.
    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, threads=1)
    build_features(win)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    rgb = np.full((2048, 2048, 3), 230, np.uint8)
    rgb[::64] = 120
    win.slide_view.set_slide(ArraySlide(rgb, mpp=0.5, levels=3, name=str(tmp_path / "slide.png")))
    win.slide_view.set_scale(0.5)
    win.slide_view.center_on(1024, 1024)
    win.slide_view.setFocus()
    yield win
    win.close()


@pytest.fixture
def project(window, tmp_path: Path) -> Project:
    return window.context.project.open(tmp_path / "project", create=True)


def _pos(window, x: float, y: float) -> QPoint:
    return window.slide_view.mapFromScene(QPointF(x, y))


def _click(window, x: float, y: float) -> None:
    QTest.mouseClick(window.slide_view.viewport(), LEFT, NOMOD, _pos(window, x, y))


def _drag(window, points: list[tuple[float, float]]) -> None:
    viewport = window.slide_view.viewport()
    QTest.mousePress(viewport, LEFT, NOMOD, _pos(window, *points[0]))
    for p in points[1:]:
        QTest.mouseMove(viewport, _pos(window, *p))
    QTest.mouseRelease(viewport, LEFT, NOMOD, _pos(window, *points[-1]))


def _stored(window) -> list:
    controller = window.context.annotations
    session = controller.session
    assert session is not None
    return [r.annotation for r in session.project.annotations(session.slide_id)]


def _key(window, key: Qt.Key) -> None:
    QTest.keyClick(window.slide_view, key)


def test_each_tool_creates_its_geometry(window, project) -> None:
    controller = window.context.annotations
    _key(window, Qt.Key.Key_R)
    assert controller.tool == "rectangle"
    _drag(window, [(400, 400), (600, 500), (800, 600)])
    _key(window, Qt.Key.Key_P)
    for x, y in [(1000, 1000), (1400, 1000), (1200, 1300)]:
        _click(window, x, y)
    QTest.mouseDClick(window.slide_view.viewport(), LEFT, NOMOD, _pos(window, 1200, 1300))
    _key(window, Qt.Key.Key_L)
    _click(window, 300, 1500)
    _click(window, 700, 1500)
    _key(window, Qt.Key.Key_Return)
    _key(window, Qt.Key.Key_O)
    _click(window, 1500, 500)
    stored = _stored(window)
    assert [a.geometry.geom_type for a in stored] == ["Polygon", "Polygon", "LineString", "Point"]
    rect, triangle, line, point = (a.geometry for a in stored)
    # Positions go through integer viewport pixels at scale 0.5: 2 level-0 px per pixel.
    assert rect.area == pytest.approx(400 * 200, rel=0.03)
    assert (
        rect.equals_exact(shapely.box(*rect.bounds).normalize(), 0)
        or len(rect.exterior.coords) == 5
    )
    assert len(triangle.exterior.coords) == 4  # 3 vertices: the double-click did not add one
    assert triangle.area == pytest.approx(0.5 * 400 * 300, rel=0.03)
    assert line.length == pytest.approx(400, abs=4)
    assert point.distance(shapely.Point(1500, 500)) < 3
    assert {a.class_name for a in stored} == {"Tumor"}
    # The slide was added to the project on the first edit.
    assert [s.name for s in project.slides()] == ["slide"]
    # Esc cancels an unfinished polygon.
    _key(window, Qt.Key.Key_P)
    _click(window, 100, 100)
    _click(window, 300, 100)
    _key(window, Qt.Key.Key_Escape)
    _click(window, 300, 300)
    _key(window, Qt.Key.Key_Escape)
    assert len(_stored(window)) == 4


def test_select_move_vertex_delete_with_undo_redo(window, project) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])
    controller.set_tool("select")
    controller.select(None)
    states = [_stored(window)[0].geometry]
    _click(window, 600, 600)
    assert controller.selected is not None
    _drag(window, [(600, 600), (650, 620), (700, 700)])  # move by (100, 100)
    states.append(_stored(window)[0].geometry)
    assert states[1].bounds == pytest.approx(
        tuple(np.add(states[0].bounds, (100, 100, 100, 100))), abs=3
    )
    corner = (states[1].bounds[2], states[1].bounds[3])
    _drag(window, [corner, (1000, 1100)])  # drag the bottom-right vertex handle
    states.append(_stored(window)[0].geometry)
    assert shapely.get_num_coordinates(states[2]) == 5
    assert states[2].bounds[2:] == pytest.approx((1000, 1100), abs=3)
    assert states[2].area > states[1].area
    _key(window, Qt.Key.Key_Delete)
    assert _stored(window) == []
    assert controller.document.annotations == {}
    stack = controller.stack
    for expected in reversed(states):
        stack.undo()
        assert [a.geometry for a in _stored(window)] == [expected]
        assert list(controller.document.annotations.values())[0].geometry == expected
    stack.undo()
    assert _stored(window) == []
    for expected in states:
        stack.redo()
        assert [a.geometry for a in _stored(window)] == [expected]
    stack.redo()
    assert _stored(window) == []
    # Dragging empty space in select mode still pans the view.
    before = window.slide_view.visible_level0_rect().center()
    viewport = window.slide_view.viewport()
    start = _pos(window, 1500, 1500)  # viewport pixels, fixed while the view moves
    QTest.mousePress(viewport, LEFT, NOMOD, start)
    QTest.mouseMove(viewport, start - QPoint(50, 25))
    QTest.mouseMove(viewport, start - QPoint(100, 50))
    QTest.mouseRelease(viewport, LEFT, NOMOD, start - QPoint(100, 50))
    after = window.slide_view.visible_level0_rect().center()
    assert after.x() - before.x() == pytest.approx(200, abs=6)


def test_brush_adds_and_erases_area(window, project) -> None:
    controller = window.context.annotations
    controller.brush_px = 20  # screen px: 40 level-0 px at scale 0.5
    _key(window, Qt.Key.Key_B)
    _drag(window, [(400, 1000), (800, 1000)])
    regions = _stored(window)
    assert len(regions) == 1 and regions[0].geometry.geom_type == "Polygon"
    first = regions[0].geometry.area
    assert first == pytest.approx(400 * 80 + np.pi * 40**2, rel=0.05)
    # The new region is selected, so the next stroke grows it.
    _drag(window, [(800, 1000), (800, 1400)])
    grown = _stored(window)
    assert len(grown) == 1 and grown[0].geometry.area > first * 1.5
    _key(window, Qt.Key.Key_E)
    _drag(window, [(600, 900), (600, 1100)])
    erased = _stored(window)[0].geometry
    assert erased.area < grown[0].geometry.area - 70 * 80
    assert not erased.contains(shapely.Point(600, 1000))
    controller.stack.undo()
    assert _stored(window)[0].geometry.area == pytest.approx(grown[0].geometry.area)
    controller.stack.redo()
    # Erasing everything deletes the region (undoably).
    controller.select(None)
    controller.brush_px = 400
    _drag(window, [(600, 1200), (700, 1200)])
    assert _stored(window) == []
    controller.stack.undo()
    assert _stored(window)[0].geometry.area == pytest.approx(erased.area)


def test_class_shortcuts_only_with_view_focus(window, project) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])
    assert controller.selected is not None
    window.slide_view.setFocus()
    _key(window, Qt.Key.Key_2)
    assert controller.current_class == "Normal"
    assert _stored(window)[0].class_name == "Normal"
    assert _stored(window)[0].color == project.classes()["Normal"]
    # Number keys in another dock (the review queue uses them) leave the class alone.
    table = controller.panel.table
    table.setFocus()
    QTest.keyClick(table, Qt.Key.Key_3)
    assert _stored(window)[0].class_name == "Normal"
    controller.stack.undo()
    assert _stored(window)[0].class_name == "Tumor"
    controller.stack.redo()
    assert _stored(window)[0].class_name == "Normal"


def test_user_class_from_plus_button(window, project, monkeypatch) -> None:
    from PySide6.QtGui import QColor

    monkeypatch.setattr(
        annotation_tools.QInputDialog, "getText", lambda *a, **k: ("Necrosis", True)
    )
    monkeypatch.setattr(
        annotation_tools.QColorDialog, "getColor", lambda *a, **k: QColor(10, 20, 30)
    )
    controller = window.context.annotations
    controller.panel.add_class_button.click()
    assert project.classes()["Necrosis"] == (10, 20, 30)
    assert controller.current_class == "Necrosis"
    assert "Necrosis" in controller.panel.class_buttons
    controller.set_tool("point")
    _click(window, 500, 500)
    assert _stored(window)[0].class_name == "Necrosis"


def test_default_project_and_persistence(window, tmp_path) -> None:
    controller = window.context.annotations
    assert window.context.project.project is None
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])
    controller.set_tool("polygon")
    for x, y in [(1000, 1000), (1400, 1000), (1200, 1300)]:
        _click(window, x, y)
    _key(window, Qt.Key.Key_Enter)
    folder = tmp_path / "data" / "default-project"
    assert window.context.project.project.folder == folder
    assert "default project" in controller.panel.project_label.text()
    controller.stack.undo()
    controller.stack.redo()
    expected = sorted(a.geometry.wkt for a in _stored(window))
    # A second process opening the folder sees every edit (each was committed).
    other = Project.open(folder)
    try:
        (slide,) = other.slides()
        assert slide.path == str(tmp_path / "slide.png")
        assert sorted(r.annotation.geometry.wkt for r in other.annotations(slide.id)) == expected
    finally:
        other.close()
    # Re-opening the slide shows its stored annotations again.
    view = window.slide_view
    view.set_slide(
        ArraySlide(np.zeros((2048, 2048, 3), np.uint8), name=str(tmp_path / "slide.png"))
    )
    assert sorted(a.geometry.wkt for a in controller.document.annotations.values()) == expected


def test_import_export_round_trip_through_actions(window, project, tmp_path, monkeypatch) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])
    _key(window, Qt.Key.Key_Escape)  # deselect, so the class key only sets the next class
    _key(window, Qt.Key.Key_3)
    controller.set_tool("polygon")
    for x, y in [(1000, 1000), (1400, 1000), (1200, 1300)]:
        _click(window, x, y)
    _key(window, Qt.Key.Key_Return)
    before = sorted((a.class_name, a.geometry.wkt) for a in _stored(window))
    out = tmp_path / "exported.geojson"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    controller.export_action.trigger()
    features = json.loads(out.read_text())["features"]
    assert len(features) == 2
    assert {f["properties"]["classification"]["name"] for f in features} == {"Stroma", "Tumor"}
    # Remove everything, then import the file back.
    for annotation_id in list(controller.document.annotations):
        controller.select(annotation_id)
        controller.delete_selected()
    assert _stored(window) == []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(out), ""))
    controller.import_action.trigger()
    after = sorted((a.class_name, a.geometry.wkt) for a in _stored(window))
    assert after == before
    QApplication.processEvents()
    assert controller.panel.model.rowCount() == 2
    controller.stack.undo()  # the import is one undo step
    assert _stored(window) == []


def test_malformed_import_shows_dialog_and_imports_nothing(window, project, tmp_path, monkeypatch):
    bad = tmp_path / "bad.geojson"
    good = {
        "type": "Feature",
        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 0]]]},
        "properties": {},
    }
    broken = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": "oops"}}
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [good, broken]}))
    shown: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(bad), ""))
    monkeypatch.setattr(
        annotation_tools.QMessageBox,
        "critical",
        lambda parent, title, text, *a: shown.append(text) or QMessageBox.StandardButton.Ok,
    )
    controller = window.context.annotations
    controller.import_action.trigger()
    assert len(shown) == 1 and "feature 1" in shown[0] and "bad.geojson" in shown[0]
    assert controller.document.annotations == {}
    assert all(project.annotations(s.id) == [] for s in project.slides())


def test_list_shows_measurements_and_click_centres(window, project) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(200, 200), (400, 300)])
    controller.set_tool("line")
    _click(window, 1500, 1500)
    _click(window, 1900, 1500)
    _key(window, Qt.Key.Key_Return)
    QApplication.processEvents()  # the list refreshes once per event-loop pass
    model = controller.panel.model
    assert model.rowCount() == 2
    area = float(model.data(model.index(0, 3)).replace(",", ""))
    assert area == pytest.approx(200 * 100 * 0.25, rel=0.05)  # mpp 0.5
    perimeter = float(model.data(model.index(0, 4)).replace(",", ""))
    assert perimeter == pytest.approx(600 * 0.5, rel=0.05)
    length = float(model.data(model.index(1, 4)).replace(",", ""))
    assert length == pytest.approx(400 * 0.5, rel=0.05)
    table = controller.panel.table
    rect = table.visualRect(model.index(0, 1))
    QTest.mouseClick(table.viewport(), LEFT, NOMOD, rect.center())
    assert controller.selected == model.ids[0]
    centre = window.slide_view.visible_level0_rect().center()
    assert (centre.x(), centre.y()) == pytest.approx((300, 250), abs=4)
    assert "µm" in controller.panel.measurement_label.text()


def test_layer_switches_to_raster_overview(window, project, monkeypatch) -> None:
    controller = window.context.annotations
    rng = np.random.default_rng(0)
    boxes = [shapely.box(x, y, x + 20, y + 20) for x, y in rng.uniform(0, 2000, (400, 2))]
    controller.add(boxes, "many")
    layer = controller.layer
    monkeypatch.setattr(annotation_layer, "RASTER_MAX_VISIBLE", 100)
    layer.invalidate_paths()
    window.slide_view.fit_to_window()
    window.slide_view.viewport().repaint()
    assert layer.last_mode == "raster"
    window.slide_view.set_scale(2.0)
    window.slide_view.center_on(1000, 1000)
    window.slide_view.viewport().repaint()
    assert layer.last_mode == "vector"
    # What is drawn is visible: the view's pixels under a region are tinted by its class colour.
    target = boxes[0].centroid
    window.slide_view.center_on(target.x, target.y)
    window.slide_view.viewport().repaint()
    image = window.slide_view.viewport().grab().toImage()
    centre = window.slide_view.mapFromScene(QPointF(target.x, target.y))
    pixel = image.pixelColor(centre)
    assert pixel.red() > pixel.green() + 20  # Tumor is red over a grey slide


def test_geojson_uses_qupath_coordinates_on_a_slide_with_bounds(window, project, tmp_path) -> None:
    """QuPath crops a slide to openslide.bounds-x/y: its GeoJSON is shifted by them, ASAP's not."""
    import shapely

    from pathviewer.core.annotations import Annotation, read_annotations, write_annotations

    rgb = np.full((2048, 2048, 3), 230, np.uint8)
    bounds = {"openslide.bounds-x": "300", "openslide.bounds-y": "120"}
    slide = ArraySlide(rgb, mpp=0.5, levels=3, name=str(tmp_path / "b.mrxs"), properties=bounds)
    window.slide_view.set_slide(slide)
    controller = window.context.annotations
    qupath_file = tmp_path / "from-qupath.geojson"
    write_annotations(qupath_file, [Annotation(shapely.box(0, 0, 100, 50), "Tumor")])
    assert controller.import_file(str(qupath_file)) == 1
    (stored,) = _stored(window)
    assert stored.geometry.bounds == (300.0, 120.0, 400.0, 170.0)  # on the tissue QuPath showed
    controller.export_file(str(tmp_path / "back.geojson"))
    controller.export_file(str(tmp_path / "back.xml"))
    (qupath_back,) = read_annotations(tmp_path / "back.geojson")
    (asap_back,) = read_annotations(tmp_path / "back.xml")
    assert qupath_back.geometry.bounds == (0.0, 0.0, 100.0, 50.0)
    assert asap_back.geometry.bounds == (300.0, 120.0, 400.0, 170.0)  # ASAP: full coordinates
    controller.set_qupath_coordinates(False)
    controller.export_file(str(tmp_path / "raw.geojson"))
    (raw,) = read_annotations(tmp_path / "raw.geojson")
    assert raw.geometry.bounds == (300.0, 120.0, 400.0, 170.0)


def test_a_locked_annotation_cannot_be_moved_edited_or_deleted(window, project) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])
    controller.set_tool("select")
    _click(window, 600, 600)
    assert controller.selected is not None
    controller.lock_action.trigger()
    (locked,) = _stored(window)
    assert locked.locked  # saved in the project, so it is exported as isLocked
    _drag(window, [(600, 600), (650, 620), (700, 700)])  # a move, refused
    _key(window, Qt.Key.Key_Delete)  # a delete, refused
    (after,) = _stored(window)
    assert after.geometry.equals(locked.geometry)
    assert "locked" in window.statusBar().currentMessage()
    controller.lock_action.trigger()  # unlock: now it can go
    assert not _stored(window)[0].locked
    _key(window, Qt.Key.Key_Delete)
    assert _stored(window) == []
    controller.stack.undo()  # undo the delete, then the unlock: locked again
    controller.stack.undo()
    assert _stored(window)[0].locked


def _tint(window, x: float, y: float) -> tuple[int, int, int]:
    """The view's colour at level-0 ``(x, y)`` after a repaint."""
    window.slide_view.viewport().repaint()
    image = window.slide_view.viewport().grab().toImage()
    pixel = image.pixelColor(window.slide_view.mapFromScene(QPointF(x, y)))
    return pixel.red(), pixel.green(), pixel.blue()


def _is_grey(rgb: tuple[int, int, int]) -> bool:
    return max(rgb) - min(rgb) < 8


def test_annotation_visibility_all_per_class_and_fill(window, project, monkeypatch) -> None:
    controller = window.context.annotations
    controller.set_current_class("Tumor")
    controller.add([shapely.box(700, 700, 900, 900)], "tumour")
    controller.set_current_class("Normal")
    controller.add([shapely.box(1100, 1100, 1300, 1300)], "normal")
    controller.select(None)
    tumour, normal = (800, 805), (1200, 1205)
    assert not _is_grey(_tint(window, *tumour)) and not _is_grey(_tint(window, *normal))

    _key(window, Qt.Key.Key_A)  # all off
    assert _is_grey(_tint(window, *tumour)) and _is_grey(_tint(window, *normal))
    assert not controller.show_action.isChecked()
    _click(window, *tumour)
    assert controller.selected is None  # a hidden annotation cannot be picked
    _key(window, Qt.Key.Key_A)
    assert not _is_grey(_tint(window, *tumour))

    # One class off in the palette: its regions vanish, cannot be selected or erased.
    controller.panel.class_checks["Tumor"].setChecked(False)
    assert _is_grey(_tint(window, *tumour)) and not _is_grey(_tint(window, *normal))
    _click(window, *tumour)
    assert controller.selected is None
    controller.select(None)
    controller.set_tool("erase")
    _drag(window, [(750, 800), (850, 800)])
    controller.set_tool("select")
    assert sorted(a.geometry.area for a in _stored(window)) == [40000.0, 40000.0]
    # The raster overview (many annotations or far out) hides it too.
    monkeypatch.setattr(annotation_layer, "RASTER_MAX_VISIBLE", 0)
    controller.layer.invalidate_paths()
    assert _is_grey(_tint(window, *tumour)) and not _is_grey(_tint(window, *normal))
    assert controller.layer.last_mode == "raster"
    monkeypatch.setattr(annotation_layer, "RASTER_MAX_VISIBLE", 1500)
    controller.panel.class_checks["Tumor"].setChecked(True)
    assert not _is_grey(_tint(window, *tumour))

    # Outlines only (Shift+F): the inside is untinted, the border is still drawn.
    QTest.keyClick(window.slide_view, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    assert not controller.display.filled
    assert _is_grey(_tint(window, *tumour))
    assert not _is_grey(_tint(window, 700, 800))
    # The choice holds on the next slide too.
    rgb = np.full((1024, 1024, 3), 230, np.uint8)
    window.slide_view.set_slide(ArraySlide(rgb, mpp=0.5, levels=2, name="second.png"))
    assert controller.layer.display == controller.display
    assert not controller.layer.display.filled


def test_ellipse_tool_and_space_held_pan(window, project) -> None:
    controller = window.context.annotations
    _key(window, Qt.Key.Key_C)
    assert controller.tool == "ellipse"
    _drag(window, [(400, 400), (600, 500), (800, 600)])
    (shape,) = [a.geometry for a in _stored(window)]
    assert shape.area == pytest.approx(np.pi * 200 * 100, rel=0.03)
    assert shape.bounds == pytest.approx((400, 400, 800, 600), abs=4)
    # Space held: the left button pans, also with a drawing tool, and draws nothing.
    controller.set_tool("rectangle")
    view = window.slide_view
    before = view.visible_level0_rect().center()
    QTest.keyPress(view, Qt.Key.Key_Space)
    _drag(window, [(1000, 1000), (1100, 1050), (1200, 1100)])
    QTest.keyRelease(view, Qt.Key.Key_Space)
    after = view.visible_level0_rect().center()
    assert after.x() < before.x() - 100 and after.y() < before.y() - 50
    assert len(_stored(window)) == 1
    _drag(window, [(1300, 1300), (1400, 1400), (1500, 1500)])  # released: draws again
    assert len(_stored(window)) == 2


def test_shift_arrows_zoom_and_keyboard_shortcuts_list(window) -> None:
    view = window.slide_view
    scale = view.scale_factor()
    QTest.keyClick(view, Qt.Key.Key_Up, Qt.KeyboardModifier.ShiftModifier)
    assert view.scale_factor() == pytest.approx(scale * 1.25)
    QTest.keyClick(view, Qt.Key.Key_Down, Qt.KeyboardModifier.ShiftModifier)
    assert view.scale_factor() == pytest.approx(scale)
    rows = dict((command, key) for key, command in window.keyboard_shortcuts())
    assert rows["Select"] == "V" and rows["Ellipse"] == "C" and rows["Show heatmap"] == "H"
    assert rows["Adjust display"] == "Shift+C" and rows["Fit to window"] == "F"
    assert rows["Pan, whatever the tool"].startswith("Space")


def test_qupath_key_preset_is_applied_and_remembered(window, project, tmp_path) -> None:
    from pathviewer.gui.preferences import apply_key_preset

    controller = window.context.annotations
    apply_key_preset(window, controller, "QuPath")
    _key(window, Qt.Key.Key_O)
    assert controller.tool == "ellipse"
    _key(window, Qt.Key.Key_Period)
    assert controller.tool == "point"
    _key(window, Qt.Key.Key_M)
    assert controller.tool == "select"
    _key(window, Qt.Key.Key_F)  # QuPath: F fills, it does not fit
    assert not controller.display.filled
    window.slide_view.set_scale(2.0)
    QTest.keyClick(window.slide_view, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    assert window.slide_view.scale_factor() < 1.0  # fitted
    rows = dict((command, key) for key, command in window.keyboard_shortcuts())
    assert rows["Select"] == "M" and rows["Fill annotations"] == "F"
    # A new window with the same settings starts with the QuPath keys.
    second = MainWindow(settings=window.settings, threads=1)
    build_features(second)
    assert second.context.annotations.tool_actions["ellipse"].shortcut().toString() == "O"
    assert second.fit_action.shortcut().toString() == "Shift+F"
    second.close()


def test_the_next_launch_reopens_the_last_project_and_lists_it_as_recent(window, tmp_path) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    _drag(window, [(400, 400), (800, 800)])  # opens the automatic default project
    folder = tmp_path / "data" / "default-project"
    assert window.context.project.project.folder == folder
    other = window.context.project.open(tmp_path / "second", create=True)
    assert window.context.project.recent() == [str(other.folder.resolve()), str(folder.resolve())]
    window.context.project.open(folder)
    # A new window with the same settings: the project is open, the drawing is there.
    second = MainWindow(settings=window.settings, threads=1)
    build_features(second)
    try:
        assert second.context.project.project is not None
        assert second.context.project.project.folder == folder
        second.slide_view.set_slide(
            ArraySlide(np.zeros((2048, 2048, 3), np.uint8), name=str(tmp_path / "slide.png"))
        )
        assert len(second.context.annotations.document.annotations) == 1
        assert "default project" in second.context.annotations.panel.project_label.text()
    finally:
        second.context.project.close()
        second.close()


def test_import_warns_about_shapes_off_the_slide_and_adds_new_classes(
    window, project, tmp_path
) -> None:
    from tests.conftest import shared_file

    camelyon_xml = shared_file("fixtures", "camelyon16", "tumor_085.xml")
    controller = window.context.annotations
    questions: list[str] = []
    # tumor_085.xml is for a 100k px CAMELYON16 slide: every outline is off this 2048 px one.
    assert controller.import_file(str(camelyon_xml), lambda q: questions.append(q) or False) == 0
    assert questions and "outside this slide (2048 × 2048 px)" in questions[0]
    assert _stored_or_empty(window) == []
    # A file that fits: its new class joins the palette with its own colour, not Normal's.
    path = tmp_path / "fits.geojson"
    path.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type":'
        ' "Polygon", "coordinates": [[[10, 10], [60, 10], [60, 60], [10, 10]]]}, "properties":'
        ' {"classification": {"name": "metastasis"}}}]}'
    )
    assert controller.import_file(str(path), lambda q: questions.append(q) or False) == 1
    assert len(questions) == 1  # nothing off the slide: no question
    assert "metastasis" in controller.classes and "metastasis" in controller.panel.class_buttons
    assert controller.classes["metastasis"] not in (
        controller.classes[name] for name in controller.classes if name != "metastasis"
    )
    assert "metastasis" in project.classes()


def _stored_or_empty(window) -> list:
    session = window.context.annotations.session
    if session is None:
        return []
    return [r.annotation for r in session.project.annotations(session.slide_id)]


def test_preferences_store_reviewer_cache_and_threads(window) -> None:
    from pathviewer.gui.preferences import PreferencesDialog
    from pathviewer.gui.review.panel import reviewer_name

    dialog = PreferencesDialog("PathViewer", window.settings, window)
    dialog.reviewer.setText("dr-b")
    dialog.cache_mb.setValue(512)
    dialog.threads.setValue(3)
    dialog.apply(window.settings)
    assert reviewer_name(window.settings) == "dr-b"
    again = PreferencesDialog("PathViewer", window.settings, window)
    assert (again.cache_mb.value(), again.threads.value()) == (512, 3)
    assert again.reviewer.text() == "dr-b"


def test_right_click_menu_offers_the_annotation_under_the_cursor_and_the_view(
    window, project
) -> None:
    controller = window.context.annotations
    controller.add([shapely.box(700, 700, 900, 900)], "box")
    controller.select(None)
    on_shape = [a.text() for a in window.context_menu(800, 800).actions()]
    assert on_shape[0] == "Set class" and "&Delete annotation" in on_shape
    assert controller.selected is not None  # right-click selects what it acts on
    assert "&Fit to window" in on_shape and "Export &figure (PNG)…" in on_shape
    off_shape = [a.text() for a in window.context_menu(100, 100).actions()]
    assert "Set class" not in off_shape and "Show &annotations" in off_shape
    menu = window.context_menu(800, 800)
    classes = menu.actions()[0].menu()
    next(a for a in classes.actions() if a.text() == "Normal").trigger()
    assert _stored(window)[0].class_name == "Normal"


def test_points_go_on_the_slide_and_coordinates_only_over_it(window, project) -> None:
    _key(window, Qt.Key.Key_O)
    window.slide_view.center_on(0, 0)
    _click(window, -200, -200)  # beside the image
    assert _stored_or_empty(window) == []
    assert "on the slide" in window.statusBar().currentMessage()
    _click(window, 100, 100)
    assert len(_stored(window)) == 1
    window.slide_view.cursorMoved.emit(-5.0, 10.0)
    assert window.cursor_label.text() == ""
    window.slide_view.cursorMoved.emit(5.0, 10.0)
    assert window.cursor_label.text().startswith("x 5")


def test_undoing_a_delete_keeps_the_annotations_number(window, project, qtbot) -> None:
    controller = window.context.annotations
    controller.set_tool("rectangle")
    for left in (200, 700, 1200):
        _drag(window, [(left, 400), (left + 300, 700)])
    panel_model = controller.panel.model
    session = controller.session
    assert session is not None
    ids = [r.id for r in session.project.annotations(session.slide_id)]
    assert len(ids) == 3
    controller.set_tool("select")
    _click(window, 850, 550)  # the middle one
    assert controller.selected == ids[1]
    _key(window, Qt.Key.Key_Delete)
    assert [r.id for r in session.project.annotations(session.slide_id)] == [ids[0], ids[2]]
    controller.stack.undo()
    # Back under its own number, in its own row, not appended as a new one.
    assert [r.id for r in session.project.annotations(session.slide_id)] == ids
    qtbot.waitUntil(lambda: panel_model.ids == ids, timeout=2000)
    controller.stack.redo()
    controller.stack.undo()
    assert [r.id for r in session.project.annotations(session.slide_id)] == ids


def test_preferences_set_default_folders_units_and_the_heatmap_colormap(
    window, project, tmp_path: Path
) -> None:
    from pathviewer.gui import file_dialogs
    from pathviewer.gui.preferences import PreferencesDialog, apply_preferences

    controller = window.context.annotations
    controller.add([shapely.box(0, 0, 2000, 1000)], "box")  # 1000 x 500 µm at 0.5 µm/px
    model = controller.panel.model
    model.refresh()  # the list refreshes on the next event-loop turn
    assert model.headerData(3, Qt.Orientation.Horizontal) == "Area µm²"
    assert model.data(model.index(0, 3)) == "500,000"
    slides = tmp_path / "slides"
    slides.mkdir()
    dialog = PreferencesDialog("PathViewer", window.settings, window)
    dialog.folders["slides"].setText(str(slides))
    dialog.units.setCurrentText("mm")
    dialog.colormap.setCurrentText("magma")
    apply_preferences(window, controller, window.context.heatmap, dialog)
    assert file_dialogs.start_folder(window.settings, "slides") == str(slides)
    assert file_dialogs.start_folder(window.settings, "projects") == str(Path.home())
    assert model.headerData(3, Qt.Orientation.Horizontal) == "Area mm²"
    assert model.data(model.index(0, 3)) == "0.5"
    assert model.data(model.index(0, 4)) == "3"  # perimeter 3000 µm
    assert "mm²" in controller.describe(model.ids[0])
    assert window.context.heatmap.display.colormap == "magma"
    again = PreferencesDialog("PathViewer", window.settings, window, "magma")
    assert again.units.currentText() == "mm" and again.folders["slides"].text() == str(slides)
    assert again.colormap.currentText() == "magma"


def test_import_places_an_ndpa_with_the_open_slides_properties(window, project, tmp_path) -> None:
    """File > Import annotations reads NDP.view's nanometres with the slide's properties."""
    ndpa = tmp_path / "s.ndpi.ndpa"
    ndpa.write_text(
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?><annotations>'
        '<ndpviewstate id="1"><title>Tumor</title><coordformat>nanometers</coordformat>'
        '<annotation type="freehand" displayname="AnnotateFreehand" color="#ff0000">'
        "<closed>1</closed><pointlist><point><x>-100000</x><y>-100000</y></point>"
        "<point><x>100000</x><y>-100000</y></point><point><x>100000</x><y>100000</y></point>"
        "</pointlist></annotation></ndpviewstate></annotations>"
    )
    controller = window.context.annotations
    with pytest.raises(AnnotationError, match="needs the slide"):
        controller.import_file(str(ndpa))  # this slide has no Hamamatsu properties
    properties = {
        "openslide.mpp-x": "0.5",
        "openslide.mpp-y": "0.5",
        "hamamatsu.XOffsetFromSlideCentre": "0",
        "hamamatsu.YOffsetFromSlideCentre": "0",
        "openslide.level[0].width": "2048",
        "openslide.level[0].height": "2048",
    }
    rgb = np.full((2048, 2048, 3), 230, np.uint8)
    window.slide_view.set_slide(
        ArraySlide(rgb, mpp=0.5, name=str(tmp_path / "s.ndpi"), properties=properties)
    )
    assert controller.import_file(str(ndpa)) == 1
    (shape,) = [a.geometry for a in controller.document.annotations.values()]
    # +-100 um from the centre at 0.5 um/px: 200 px either side of (1024, 1024)
    assert list(shape.exterior.coords)[:3] == [(824, 824), (1224, 824), (1224, 1224)]
