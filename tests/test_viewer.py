"""The slide viewer window: navigation, levels, minimap, errors, cohort panel, screenshot."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QImage, QWheelEvent  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from pathviewer.core.slide import ArraySlide  # noqa: E402
from pathviewer.gui import main_window as main_window_module  # noqa: E402
from pathviewer.gui.app import create_main_window  # noqa: E402
from pathviewer.gui.viewer.slide_view import SlideItem  # noqa: E402
from pathviewer.gui.viewer.tiles import CACHE_SETTING  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, settings):
    win = create_main_window(settings=settings, threads=2)
    qtbot.addWidget(win)
    win.resize(1100, 760)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _array_slide(size: int = 2048, levels: int = 4) -> ArraySlide:
    """A slide with structure everywhere (so blank renders are caught) and a 4-level pyramid."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack(
        [(x * 255 // size), (y * 255 // size), ((x // 64 + y // 64) % 2) * 200], axis=-1
    ).astype(np.uint8)
    return ArraySlide(rgb, mpp=0.5, levels=levels, name="array")


def _grab_array(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    ptr = image.constBits()
    # Copy: the array must not outlive the QImage's buffer.
    return (
        np.frombuffer(ptr, np.uint8)
        .reshape(image.height(), image.bytesPerLine())[:, : image.width() * 4]
        .copy()
    )


def test_open_boxes_tiff_loads_every_visible_tile(window, openslide_fixtures) -> None:
    assert window.open_slide(str(openslide_fixtures / "boxes.tiff"))
    view = window.slide_view
    assert view.current_slide.level_count == 4
    view.set_scale(2.0)
    assert view.wait_until_idle(10)
    assert view.missing_visible_tiles() == 0
    assert view.visible_tile_keys()  # tiles were really needed at this zoom
    assert view.paint_count > 0
    pixels = _grab_array(view.viewport())
    assert pixels.std() > 10  # not a blank frame
    assert window.properties_panel.table.rowCount() == len(view.current_slide.properties)


def test_open_cmu_small_region_properties_and_images(window, cmu_small) -> None:
    assert window.open_paths([str(cmu_small)])
    slide = window.slide_view.current_slide
    assert slide.objective_power == 20
    panel = window.properties_panel
    names = [panel.table.item(r, 0).text() for r in range(panel.table.rowCount())]
    assert "aperio.AppMag" in names
    assert "CMU-1-Small-Region.svs" in panel.summary.text()
    assert set(slide.associated_image_names) >= {"label", "macro", "thumbnail"}
    assert panel._images_layout.count() >= 2 * len(slide.associated_image_names)
    assert str(Path(cmu_small).resolve()) in window.recent_files()


def test_level_choice_follows_zoom(window) -> None:
    view = window.slide_view
    view.thumbnail_size = 128  # so that tiles, not the thumbnail, are needed at every scale
    view.set_slide(_array_slide())
    assert view.current_slide.level_downsamples == (1.0, 2.0, 4.0, 8.0)
    expected = {1.0: 0, 0.6: 0, 0.5: 1, 0.3: 1, 0.25: 2, 0.2: 2, 0.12: 3}
    for scale, level in expected.items():
        view.set_scale(scale)
        assert view.scale_factor() == pytest.approx(scale)
        assert view.current_level() == level, scale
    view.set_scale(0.25)
    assert view.wait_until_idle(10)
    assert {key[1] for key in view.cache.keys()} == {2}


def test_wheel_zoom_keeps_point_under_cursor(window, qtbot) -> None:
    view = window.slide_view
    view.set_slide(_array_slide())
    viewport = view.viewport()
    for pos, delta in (
        (QPointF(200.5, 150.5), 120),
        (QPointF(600.5, 420.5), 240),
        (QPointF(90.5, 500.5), -120),
    ):
        before = view.view_to_level0(pos)
        scale_before = view.scale_factor()
        event = QWheelEvent(
            pos,
            QPointF(viewport.mapToGlobal(pos.toPoint())),
            QPoint(0, 0),
            QPoint(0, delta),
            Qt.MouseButton.NoButton,
            Qt.KeyboardModifier.NoModifier,
            Qt.ScrollPhase.NoScrollPhase,
            False,
        )
        QApplication.sendEvent(viewport, event)
        after = view.view_to_level0(pos)
        assert view.scale_factor() != pytest.approx(scale_before)
        tolerance = 1.0 / view.scale_factor()  # one screen pixel, in level-0 px
        assert abs(after[0] - before[0]) <= tolerance
        assert abs(after[1] - before[1]) <= tolerance


def test_fit_to_window_shows_whole_slide(window) -> None:
    view = window.slide_view
    view.set_slide(_array_slide())
    view.set_scale(1.0)
    view.center_on(100, 100)
    window.fit_action.trigger()
    visible = view.visible_level0_rect()
    assert visible.contains(0, 0) and visible.contains(2047, 2047)
    vp = view.viewport().rect()
    expected = min(vp.width(), vp.height()) / 2048 * 0.96
    assert view.scale_factor() == pytest.approx(expected, rel=1e-6)
    assert visible.center().x() == pytest.approx(1024, abs=1 / view.scale_factor())


def test_magnification_button_sets_scale(window, cmu_small) -> None:
    assert window.open_slide(str(cmu_small))
    view = window.slide_view
    window.magnification_actions[10.0].trigger()
    assert view.scale_factor() == pytest.approx(0.5)  # 10x on a 20x scan
    assert view.magnification() == pytest.approx(10.0)
    window.magnification_actions[40.0].trigger()
    assert view.scale_factor() == pytest.approx(2.0)
    assert "20x" not in window.zoom_label.text() and "40.00×" in window.zoom_label.text()
    # Scale bar: um per screen px at 2 screen px per 0.499 um pixel.
    assert view.um_per_screen_px() == pytest.approx(0.499 / 2)
    assert view.scale_bar.label().endswith("µm")


def test_keyboard_pan_and_zoom(window, qtbot) -> None:
    view = window.slide_view
    view.set_slide(_array_slide())
    view.set_scale(1.0)
    view.center_on(1024, 1024)
    x0 = view.visible_level0_rect().center().x()
    qtbot.keyClick(view, Qt.Key.Key_Right)
    assert view.visible_level0_rect().center().x() > x0 + 50
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.scale_factor() == pytest.approx(1.25)
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.scale_factor() == pytest.approx(1.0)


def test_minimap_click_moves_view(window, qtbot) -> None:
    view = window.slide_view
    view.set_slide(_array_slide())
    view.set_scale(1.0)
    view.center_on(200, 200)
    minimap = view.minimap
    assert minimap.isVisible()
    target = QPoint(minimap.width() * 3 // 4, minimap.height() * 3 // 4)
    expected = minimap.to_level0(QPointF(target))
    qtbot.mouseClick(minimap, Qt.MouseButton.LeftButton, pos=target)
    centre = view.visible_level0_rect().center()
    assert centre.x() == pytest.approx(expected[0], abs=2)
    assert centre.y() == pytest.approx(expected[1], abs=2)
    assert expected[0] > 1400  # really moved from 200


def test_minimap_hides_in_fit_view_and_stays_small_in_a_small_view(window, qtbot) -> None:
    from pathviewer.gui.viewer.minimap import MINIMAP_SHARE

    view = window.slide_view
    view.set_slide(_array_slide())
    view.fit_to_window()
    assert not view.minimap.isVisible()  # the whole slide is on screen: it would only cover it
    view.set_scale(1.0)
    view.center_on(200, 200)
    assert view.minimap.isVisible()
    window.resize(700, 500)  # a small window: the minimap shrinks with the view
    qtbot.waitUntil(lambda: view.viewport().width() < 600)
    viewport = view.viewport()
    side = max(view.minimap.width(), view.minimap.height()) - 4
    assert side <= max(60, MINIMAP_SHARE * min(viewport.width(), viewport.height())) + 1
    view.fit_to_window()
    assert not view.minimap.isVisible()


def test_open_error_shows_dialog_and_app_keeps_running(
    window, monkeypatch, tmp_path, openslide_fixtures
) -> None:
    shown: list[str] = []
    monkeypatch.setattr(
        main_window_module.QMessageBox, "critical", lambda _parent, _title, text: shown.append(text)
    )
    missing = tmp_path / "missing.svs"
    assert not window.open_slide(str(missing))
    assert shown and str(missing) in shown[-1] and "not found" in shown[-1]
    assert not window.open_slide(str(openslide_fixtures / "unopenable.tiff"))
    assert "unopenable.tiff" in shown[-1]
    text = tmp_path / "notes.svs"
    text.write_text("not a slide")
    assert not window.open_slide(str(text))
    assert "notes.svs" in shown[-1]
    assert window.slide_view.current_slide is None
    assert window.open_slide(str(openslide_fixtures / "boxes.tiff"))  # still works


def test_unreadable_slide_shows_error_tile(window, openslide_fixtures) -> None:
    assert window.open_slide(str(openslide_fixtures / "unreadable.svs"))
    view = window.slide_view
    view.set_scale(4.0)
    view.center_on(8, 8)
    assert view.wait_until_idle(10)
    assert view.cache.errors
    pixels = _grab_array(view.viewport())
    b, g, r = pixels[..., 0::4], pixels[..., 1::4], pixels[..., 2::4]
    assert ((r > 150) & (g < 100) & (b < 100)).sum() > 20  # red hatching on screen
    # ... and the status bar says in words which slide and why.
    message = window.statusBar().currentMessage()
    assert message.startswith("unreadable.svs: part of the image cannot be read (")
    assert window.open_slide(str(openslide_fixtures / "boxes.tiff"))
    assert not view.cache.errors


def test_switching_slides_is_bounded(window, openslide_fixtures, cmu_small, settings) -> None:
    view = window.slide_view
    cap = view.cache.cap_bytes
    refs: list[weakref.ref] = []
    item_counts: set[int] = set()
    paths = [openslide_fixtures / "boxes.tiff", openslide_fixtures / "small.svs", cmu_small]
    for i in range(20):
        assert window.open_slide(str(paths[2 if i == 10 else i % 2]))
        refs.append(weakref.ref(view.current_slide))
        view.set_scale(1.0 if i % 2 else 3.0)
        if i % 4 == 0:
            assert view.wait_until_idle(10)
        assert view.cache.bytes_used <= cap
        generation = view.pipeline.generation
        assert all(key[0] == generation for key in view.cache.keys())
        # One slide item; overlays installed by extensions re-add themselves, never accumulate.
        items = view.scene().items()
        assert sum(isinstance(item, SlideItem) for item in items) == 1
        item_counts.add(len(items))
    assert len(item_counts) == 1
    assert view.wait_until_idle(10)
    gc.collect()
    alive = [ref for ref in refs if ref() is not None]
    assert len(alive) == 1 and alive[0]() is view.current_slide
    assert view.pipeline._session is not None and view.pipeline._session.slide is alive[0]()
    assert len(view.cache) <= 40


def test_cache_cap_comes_from_settings(qtbot, settings) -> None:
    settings.setValue(CACHE_SETTING, 32)
    win = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(win)
    try:
        assert win.slide_view.cache.cap_bytes == 32 * 1024 * 1024
    finally:
        win.close()


def test_cohort_csv_fills_panel_and_predictions(window, openslide_fixtures, cmu_small, tmp_path):
    csv = tmp_path / "cohort.csv"
    csv.write_text(
        f"slide,label,split\n{openslide_fixtures / 'boxes.tiff'},0,train\n{cmu_small},1,test\n"
    )
    assert window.open_paths([str(csv)])
    model = window.cohort_panel.model
    assert model.rowCount() == 2
    assert [model.item(r, 1).text() for r in range(2)] == ["normal", "tumour"]
    assert Path(window.slide_view.current_slide.path).name == "boxes.tiff"
    keys = model.slide_keys()
    window.scores.update({keys[1]: (0.875, 1), "unknown": (0.1, 0)}, source="test")
    assert model.item(1, model.SCORE).text() == "0.875"
    assert model.item(1, model.PRED).text() == "tumour"
    assert model.item(0, model.SCORE).text() == ""
    # The same cohort opened again keeps its scores; another cohort starts without any.
    assert window.open_paths([str(csv)])
    assert model.item(1, model.SCORE).text() == "0.875"
    other = tmp_path / "other.csv"
    other.write_text(csv.read_text())
    assert window.open_paths([str(other)])
    assert model.item(1, model.SCORE).text() == ""
    # Clicking the second row opens that slide.
    panel = window.cohort_panel
    index = panel.proxy.mapFromSource(model.index(1, 0))
    panel.view.clicked.emit(index)
    assert Path(window.slide_view.current_slide.path).name == "CMU-1-Small-Region.svs"


def test_screenshot_command_writes_png(tmp_path, cmu_small) -> None:
    from pathviewer.cli import main

    out = tmp_path / "shot.png"
    assert main(["screenshot", str(cmu_small), str(out), "--size", "900x640", "--mag", "10"]) == 0
    image = QImage(str(out))
    assert (image.width(), image.height()) == (900, 640)
    pixels = _grab_from_image(image)
    assert pixels.std() > 20
    # Many distinct colours: real tissue was rendered, not a flat placeholder.
    sample = pixels[::7, ::7, :3].reshape(-1, 3)
    assert len(np.unique(sample, axis=0)) > 500


def test_screenshot_command_bad_file_exits_2(tmp_path, capsys) -> None:
    from pathviewer.cli import main

    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"\x00" * 100)
    assert main(["screenshot", str(bad), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.svs" in err
    assert not (tmp_path / "x.png").exists()


def _grab_from_image(image: QImage) -> np.ndarray:
    image = image.convertToFormat(QImage.Format.Format_RGB32)
    ptr = image.constBits()
    raw = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return raw[:, : image.width() * 4].reshape(image.height(), image.width(), 4).copy()


def test_figure_export_is_the_view_at_twice_the_resolution(window, cmu_small, tmp_path) -> None:
    from pathviewer.cli import main
    from pathviewer.core.errors import PathViewerError

    with pytest.raises(PathViewerError, match="open a slide"):
        window.export_figure(tmp_path / "none.png")
    assert window.open_slide(str(cmu_small))
    assert window.slide_view.wait_until_idle(20)
    out = window.export_figure(tmp_path / "figure.png")
    image = QImage(str(out))
    viewport = window.slide_view.viewport()
    # The view doubled, and below it a strip with the provenance line.
    assert image.width() == 2 * viewport.width()
    assert image.height() == 2 * (viewport.height() + 24)
    assert _grab_from_image(image).std() > 20
    strip = _grab_from_image(image)[2 * viewport.height() :]
    assert strip.std() > 5  # text is drawn there
    line = window.figure_provenance()
    assert line.startswith(f"{cmu_small.name} · ") and "PathViewer" in line
    cli_out = tmp_path / "cli-figure.png"
    argv = ["screenshot", str(cmu_small), str(cli_out), "--size", "900x640", "--figure", "2"]
    assert main(argv) == 0
    assert QImage(str(cli_out)).height() > 640  # the view alone, doubled: taller than the window


def test_the_magnification_preset_is_checked_only_at_that_magnification(window, cmu_small):
    assert window.open_slide(str(cmu_small))
    actions = window.magnification_actions
    actions[10.0].trigger()
    assert actions[10.0].isChecked() and not actions[2.5].isChecked()
    window.slide_view.zoom_by(1.25)
    assert not any(action.isChecked() for action in actions.values())
    actions[2.5].trigger()
    assert actions[2.5].isChecked() and not actions[10.0].isChecked()


def test_the_window_and_dock_layout_come_back_on_the_next_launch(qtbot, settings) -> None:
    first = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(first)
    first.resize(1000, 700)
    first.show()
    qtbot.waitExposed(first)
    first.docks["annotations"].hide()
    first.docks["display"].show()
    first.close()
    second = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(second)
    second.show()
    qtbot.waitExposed(second)
    assert not second.docks["annotations"].isVisible()
    assert second.docks["display"].isVisible()
    # The size too, as far as the screen allows (the offscreen test screen is 800 px wide).
    screen = second.screen().availableGeometry()
    assert second.height() == min(700, screen.height()) or second.height() == 700
    second.close()


def test_overlays_are_detached_not_deleted_when_the_slide_changes(window) -> None:
    import shapely
    import shiboken6
    from PySide6.QtWidgets import QGraphicsRectItem

    from pathviewer.core.annotations import Annotation

    view = window.slide_view
    view.set_slide(_array_slide(512, 2))
    annotations = window.context.annotations
    old_layer = annotations.layer
    assert old_layer is not None and old_layer in view.overlays()
    mine = QGraphicsRectItem(0, 0, 10, 10)
    view.add_overlay(mine)
    heard = []
    view.slideAboutToChange.connect(lambda slide: heard.append((slide, mine.scene())))
    view.set_slide(_array_slide(256, 2))
    # Told before, while the overlay was still drawn; afterwards it is out of the scene, alive.
    assert heard and heard[0][1] is view.scene()
    assert shiboken6.isValid(mine) and mine.scene() is None
    assert shiboken6.isValid(old_layer) and old_layer.scene() is None
    # The new slide has its own layer; the old one no longer hears the document.
    assert annotations.layer is not old_layer
    assert annotations.layer in view.overlays() and old_layer not in view.overlays()
    assert mine not in view.overlays()
    paints = old_layer.paint_count
    annotations.document.set(99, Annotation(shapely.box(0, 0, 5, 5)))
    assert old_layer.annotations is annotations.document.annotations  # shared, but unsubscribed
    view.remove_overlay(annotations.layer)
    assert annotations.layer.scene() is None and annotations.layer not in view.overlays()
    assert old_layer.paint_count == paints


def test_no_tab_bar_of_closed_docks_covers_the_menu(qtbot, settings, cmu_small) -> None:
    from PySide6.QtWidgets import QTabBar

    def stale_bars(window) -> list[list[str]]:
        open_titles = {
            d.windowTitle() for d in window.docks.values() if d.toggleViewAction().isChecked()
        }
        bars = window.findChildren(QTabBar, options=Qt.FindChildOption.FindDirectChildrenOnly)
        return [
            [bar.tabText(i) for i in range(bar.count())]
            for bar in bars
            if bar.isVisible()
            and bar.count()
            and not any(bar.tabText(i) in open_titles for i in range(bar.count()))
        ]

    # The second launch restores the layout the first one saved, in a smaller window: Qt had
    # left a "Triage" bar at the top-left corner, over the File menu.
    for size in [(1400, 900), (1024, 768)]:
        window = create_main_window([str(cmu_small)], settings=settings, threads=2)
        window.resize(*size)
        window.show()
        for _ in range(30):
            QApplication.processEvents()
        assert stale_bars(window) == []
        window.close()
        QApplication.processEvents()


def test_the_cohort_list_keeps_the_csv_order_and_names_the_classes(window, tmp_path) -> None:
    from PIL import Image

    for name in ("c.png", "a.png", "b.png"):
        Image.new("RGB", (64, 64), (200, 100, 150)).save(tmp_path / name)
    csv = tmp_path / "cohort.csv"
    csv.write_text("slide,label,split\nc.png,1,test\na.png,0,test\nb.png,,test\n")
    assert window.open_paths([str(csv)])
    panel = window.cohort_panel
    shown = [panel.proxy.index(r, 0).data() for r in range(panel.proxy.rowCount())]
    assert shown == ["c.png", "a.png", "b.png"]  # as listed, not sorted by name descending
    labels = [panel.proxy.index(r, 1).data() for r in range(3)]
    assert labels == ["tumour", "normal", ""]
    window.scores.update({"c.png": (0.2, 0), "a.png": (0.1, 0)}, source="test")
    model = panel.model
    disagree = model.item(model.row_of("c.png"), model.PRED).foreground().color().getRgb()[:3]
    agree = model.item(model.row_of("a.png"), model.PRED).foreground().color().getRgb()[:3]
    assert disagree == (255, 170, 0) and agree != disagree


def test_a_truncated_slide_shows_error_tiles_and_one_message(window, truncated_slide) -> None:
    messages: list[str] = []
    window.statusBar().messageChanged.connect(lambda text: text and messages.append(text))
    assert window.open_slide(str(truncated_slide[0]))
    view = window.slide_view
    view.set_scale(1.0)  # level 0: both whole and cut-off tiles are in view
    view.center_on(512, 512)
    assert view.wait_until_idle(10)
    assert view.cache.errors
    assert all(key[1] == 0 and key[3] == 1 for key in view.cache.errors), (
        view.cache.errors
    )  # only the cut rows
    whole = [key for key in view.cache.keys() if key[1] == 0 and key[3] == 0]
    assert whole and not set(whole) & view.cache.errors
    failures = [m for m in messages if "cannot be read" in m]
    assert len(failures) == 1 and failures[0].startswith("truncated.tif: part of the image")
    pixels = _grab_array(view.viewport())
    b, g, r = pixels[..., 0::4], pixels[..., 1::4], pixels[..., 2::4]
    assert ((r > 150) & (g < 100) & (b < 100)).sum() > 20  # red hatching on screen


def test_a_complete_frame_is_a_paint_with_every_visible_tile_and_no_stand_in(window) -> None:
    import time

    view = window.slide_view
    view.set_slide(_array_slide(4096))
    view.set_scale(1.0)
    start = time.perf_counter()
    assert view.wait_for_complete_frame(start, 10)
    assert view.last_complete_paint >= start
    assert view.visible_tile_keys() and view.missing_visible_tiles() == 0
    # With the tiles gone, a paint draws stand-ins: the frame is not complete again.
    view.pipeline.cancel_all()
    view.pipeline.wait_until_idle(10)
    view.cache.clear()
    before = time.perf_counter()
    view.viewport().repaint()
    assert view.last_complete_paint < before
    assert not view.wait_for_complete_frame(before, 0.0)
    # Once the tiles are read again and painted, it is.
    view.update_requests()
    assert view.wait_for_complete_frame(before, 10)
    assert view.missing_visible_tiles() == 0
