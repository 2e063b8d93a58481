"""Heatmap overlay in the main window: alignment, LUT-only controls, H key, hover, regions, files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, QSettings, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from pathviewer.core.heatmap import Heatmap, save_heatmap  # noqa: E402

SLIDE_RGB = (230, 200, 220)
WIDTH, HEIGHT = 1000, 700
ORIGIN = (8, 4)
PATCH = 64
ROWS, COLS = (HEIGHT - ORIGIN[1]) // PATCH, (WIDTH - ORIGIN[0]) // PATCH  # 10 x 15


def write_slide(path: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A uniform tiled TIFF (OpenSlide generic-tiff) so that any non-slide colour is overlay."""
    import tifffile

    image = np.empty((size[1], size[0], 3), np.uint8)
    image[:] = SLIDE_RGB
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", compression="zlib")
    return path


def pattern_probs() -> np.ndarray:
    """Neighbouring cells differ by 0.1, so an off-by-one cell shows a clearly different colour."""
    r, c = np.mgrid[0:ROWS, 0:COLS]
    probs = (((r * COLS + c) % 10) / 10 + 0.05).astype(np.float32)
    probs[0, 0] = np.nan
    return probs


def expected_rgb(name: str, p: float) -> tuple[int, int, int]:
    """Colour of probability ``p`` from pyqtgraph's colormap at the image's 8-bit level."""
    from pathviewer.gui.heatmap.overlay import colormap

    level = round(p * 254) / 254
    rgba = colormap(name).map(np.array([level]), mode="byte")[0]
    return int(rgba[0]), int(rgba[1]), int(rgba[2])


def pixel(image: QImage, x: float, y: float) -> tuple[int, int, int]:
    color = image.pixelColor(int(x), int(y))
    return color.red(), color.green(), color.blue()


def close(a: tuple[int, int, int], b: tuple[int, int, int], tol: int = 2) -> bool:
    return max(abs(u - v) for u, v in zip(a, b, strict=True)) <= tol


@pytest.fixture
def slide_path(tmp_path: Path) -> Path:
    return write_slide(tmp_path / "s.tif")


@pytest.fixture
def window(qtbot, tmp_path: Path, slide_path: Path):
    from pathviewer.gui.app import ensure_application
    from pathviewer.gui.context import build_features
    from pathviewer.gui.main_window import MainWindow

    ensure_application()
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, threads=1)
    build_features(win)
    win.open_paths([str(slide_path)], raise_errors=True)
    qtbot.addWidget(win)
    win.resize(900, 700)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def show_heatmap(window, probs: np.ndarray | None = None) -> Heatmap:
    heatmap = Heatmap(
        "s.tif",
        (WIDTH, HEIGHT),
        ORIGIN,
        (PATCH, PATCH),
        pattern_probs() if probs is None else probs,
    )
    controller = window.context.heatmap
    controller.set_heatmap(heatmap)
    controller.set_opacity(1.0)
    return heatmap


def render(window) -> QImage:
    view = window.slide_view
    assert view.wait_until_idle(15)
    return view.viewport().grab().toImage()


def probe_cell(window, image: QImage, row: int, col: int, fx: float = 0.5, fy: float = 0.5):
    """Viewport colour at fraction ``(fx, fy)`` inside cell ``(row, col)``."""
    x = ORIGIN[0] + (col + fx) * PATCH
    y = ORIGIN[1] + (row + fy) * PATCH
    point = window.slide_view.mapFromScene(QPointF(x, y))
    return pixel(image, point.x(), point.y())


def test_overlay_aligned_with_patches_at_two_zooms_and_bottom_right(window):
    probs = pattern_probs()
    show_heatmap(window, probs)
    view = window.slide_view
    cells = [(1, 1), (0, 1), (4, 7), (ROWS - 1, 0), (0, COLS - 1), (ROWS - 1, COLS - 1)]

    view.fit_to_window()
    image = render(window)
    for row, col in cells:
        assert close(
            probe_cell(window, image, row, col), expected_rgb("viridis", probs[row, col])
        ), (
            row,
            col,
        )
    assert close(probe_cell(window, image, 0, 0), SLIDE_RGB)  # NaN cell: transparent

    # Zoomed in at the bottom-right corner of the grid: 3 screen px inside the last cell's
    # corner is that cell, 3 px beyond it is bare slide (the grid stops short of the slide edge).
    view.set_scale(2.0)
    corner_x, corner_y = ORIGIN[0] + COLS * PATCH, ORIGIN[1] + ROWS * PATCH
    view.center_on(corner_x, corner_y)
    image = render(window)
    last = expected_rgb("viridis", probs[ROWS - 1, COLS - 1])
    corner = view.mapFromScene(QPointF(corner_x, corner_y))
    assert close(pixel(image, corner.x() - 3, corner.y() - 3), last)
    assert close(pixel(image, corner.x() + 3, corner.y() + 3), SLIDE_RGB)
    assert close(pixel(image, corner.x() + 3, corner.y() - 3), SLIDE_RGB)
    assert close(probe_cell(window, image, ROWS - 1, COLS - 1), last)
    left = expected_rgb("viridis", probs[ROWS - 1, COLS - 2])
    assert close(probe_cell(window, image, ROWS - 1, COLS - 2), left)
    assert close(probe_cell(window, image, ROWS - 1, COLS - 2, fx=0.97), left)
    assert close(probe_cell(window, image, ROWS - 1, COLS - 1, fx=0.03), last)


def test_controls_only_swap_the_colour_table(window, monkeypatch):
    import pathviewer.gui.heatmap.controller as module

    probs = pattern_probs()
    show_heatmap(window, probs)
    controller = window.context.heatmap
    image_before = controller.image
    pixels_before = bytes(controller._pixels(controller.image))
    table_before = list(controller.image.colorTable())
    calls: list[int] = []
    real_quantise = module.quantise

    def counting(values):
        calls.append(np.size(values))
        return real_quantise(values)

    import pathviewer.gui.heatmap.overlay as overlay

    monkeypatch.setattr(module, "quantise", counting)
    monkeypatch.setattr(overlay, "quantise", counting)
    monkeypatch.setattr(module, "load_heatmap", lambda *_: pytest.fail("heatmap re-read"))
    controller.set_colormap("inferno")
    controller.set_opacity(0.8)
    controller.set_opacity(1.0)
    controller.set_smooth(True)
    controller.set_smooth(False)
    window.context.heatmap_panel.colormap_combo.setCurrentText("magma")
    window.context.heatmap_panel.threshold_slider.setValue(0.3)
    assert calls == []
    assert controller.image is image_before
    assert bytes(controller._pixels(controller.image)) == pixels_before
    assert list(controller.image.colorTable()) != table_before
    assert controller.display.colormap == "magma" and controller.display.threshold == pytest.approx(
        0.3
    )
    image = render(window)
    assert close(probe_cell(window, image, 4, 7), expected_rgb("magma", probs[4, 7]))


@pytest.mark.parametrize("name", ["coolwarm", "jet"])
def test_defined_colormaps_go_from_blue_to_red(name):
    from pathviewer.gui.heatmap.overlay import color_table

    table = color_table(name, 1.0, 0.0)
    low, high = table[1], table[255]
    assert (low & 0xFF) > ((low >> 16) & 0xFF)  # blue > red at p = 0
    assert ((high >> 16) & 0xFF) > (high & 0xFF)  # red > blue at p = 1
    assert table[0] >> 24 == 0  # not scored: transparent


def test_threshold_makes_low_probabilities_transparent(window):
    probs = pattern_probs()
    show_heatmap(window, probs)
    window.context.heatmap.set_threshold(0.5)
    image = render(window)
    assert probs[0, 1] < 0.5 and probs[0, 8] > 0.5
    assert close(probe_cell(window, image, 0, 1), SLIDE_RGB)
    assert close(probe_cell(window, image, 0, 8), expected_rgb("viridis", probs[0, 8]))
    regions = window.context.heatmap.top_regions()
    assert regions and all(r.max_prob >= 0.5 for r in regions)
    assert min(r.mean_prob for r in regions) >= 0.5
    # Regions never go below 0.5, whatever the display threshold; above it they follow it.
    window.context.heatmap.set_threshold(0.0)
    assert min(r.mean_prob for r in window.context.heatmap.top_regions()) >= 0.5
    window.context.heatmap.set_threshold(0.8)
    assert min(r.mean_prob for r in window.context.heatmap.top_regions()) >= 0.8


def test_key_h_hides_and_shows_the_heatmap(window, qtbot):
    probs = pattern_probs()
    show_heatmap(window, probs)
    view = window.slide_view
    colour = expected_rgb("viridis", probs[4, 7])
    assert close(probe_cell(window, render(window), 4, 7), colour)
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert not window.context.heatmap.item.isVisible()
    assert not window.context.heatmap.show_action.isChecked()
    assert not window.context.heatmap_panel.show_check.isChecked()
    assert close(probe_cell(window, render(window), 4, 7), SLIDE_RGB)
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert window.context.heatmap.item.isVisible()
    assert close(probe_cell(window, render(window), 4, 7), colour)


def test_hover_shows_patch_probability_in_status_bar(window, qtbot):
    probs = pattern_probs()
    show_heatmap(window, probs)
    view = window.slide_view
    render(window)
    point = view.mapFromScene(QPointF(ORIGIN[0] + 7.5 * PATCH, ORIGIN[1] + 4.5 * PATCH))
    qtbot.mouseMove(view.viewport(), point)
    qtbot.waitUntil(lambda: "p =" in window.context.heatmap.status_label.text(), timeout=3000)
    assert window.context.heatmap.status_label.text() == f"heatmap: p = {probs[4, 7]:.3f}"
    point = view.mapFromScene(QPointF(ORIGIN[0] + 0.5 * PATCH, ORIGIN[1] + 0.5 * PATCH))
    qtbot.mouseMove(view.viewport(), point)
    qtbot.waitUntil(
        lambda: window.context.heatmap.status_label.text() == "heatmap: not scored",
        timeout=3000,
    )


def test_top_region_click_centres_the_view(window, qtbot):
    probs = np.full((ROWS, COLS), 0.1, np.float32)
    probs[1:3, 1:4] = 0.7  # larger but weaker
    probs[7:9, 11:13] = 0.8
    probs[8, 12] = 0.97
    show_heatmap(window, probs)
    controller = window.context.heatmap
    controller.set_threshold(0.5)
    qtbot.waitUntil(
        lambda: window.context.heatmap_panel.regions.topLevelItemCount() == 2, timeout=3000
    )
    regions = controller.top_regions()
    assert [r.cells for r in regions] == [4, 6]
    assert regions[0].peak == (8, 12) and regions[0].max_prob == pytest.approx(0.97)
    controller.set_sort("area")
    assert [r.cells for r in controller.top_regions()] == [6, 4]
    controller.set_sort("max")
    window.context.heatmap_panel.fill_regions()
    tree = window.context.heatmap_panel.regions
    item = tree.topLevelItem(0)
    qtbot.mouseClick(
        tree.viewport(), Qt.MouseButton.LeftButton, pos=tree.visualItemRect(item).center()
    )
    centre = window.slide_view.visible_level0_rect().center()
    x, y = ORIGIN[0] + 12.5 * PATCH, ORIGIN[1] + 8.5 * PATCH
    tolerance = 2 / window.slide_view.scale_factor()
    assert abs(centre.x() - x) <= tolerance and abs(centre.y() - y) <= tolerance


def test_update_patches_fills_in_place(window, monkeypatch):
    import pathviewer.gui.heatmap.controller as module

    show_heatmap(window, np.full((ROWS, COLS), np.nan, np.float32))
    controller = window.context.heatmap
    image_before = controller.image
    sizes: list[int] = []
    real_quantise = module.quantise
    monkeypatch.setattr(module, "quantise", lambda v: sizes.append(np.size(v)) or real_quantise(v))
    updates = []
    item = controller.item
    real_update = item.update
    monkeypatch.setattr(item, "update", lambda *a: updates.append(a) or real_update(*a))
    controller.update_patches([2, 3], [5, 6], [0.25, 0.95])
    assert sizes == [2]  # only the new values were quantised
    assert controller.image is image_before
    assert controller.heatmap.probs[3, 6] == pytest.approx(0.95)
    assert np.isnan(controller.heatmap.probs[0, 0])
    pixels = controller._pixels(controller.image)
    assert pixels[3, 6] == 1 + round(0.95 * 254) and pixels[2, 5] == 1 + round(0.25 * 254)
    assert int(np.count_nonzero(pixels[:, :COLS])) == 2
    (rect,) = updates[-1]
    assert (rect.x(), rect.y(), rect.width(), rect.height()) == (5, 2, 2, 2)
    image = render(window)
    assert close(probe_cell(window, image, 3, 6), expected_rgb("viridis", 0.95))
    assert close(probe_cell(window, image, 4, 6), SLIDE_RGB)


def write_cohort(tmp_path: Path) -> tuple[Path, Path]:
    """Two slides, a GeoJSON tumour for the positive one, and an infer-style predictions folder."""
    write_slide(tmp_path / "neg.tif", (800, 600))
    write_slide(tmp_path / "pos.tif")
    tumour = [[200.0, 150.0], [600.0, 150.0], [600.0, 450.0], [200.0, 450.0], [200.0, 150.0]]
    geojson = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [tumour]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            }
        ],
    }
    (tmp_path / "pos.geojson").write_text(json.dumps(geojson))
    cohort = tmp_path / "cohort.csv"
    cohort.write_text(
        "slide,label,split,annotations\nneg.tif,0,test,\npos.tif,1,test,pos.geojson\n"
    )
    pred = tmp_path / "pred"
    (pred / "heatmaps").mkdir(parents=True)
    (pred / "slides.csv").write_text("slide,score,pred\nneg.tif,0.120000,0\npos.tif,0.910000,1\n")
    probs_pos = np.full((ROWS, COLS), 0.1, np.float32)
    r, c = np.mgrid[0:ROWS, 0:COLS]
    inside = (ORIGIN[0] + (c + 0.5) * PATCH > 200) & (ORIGIN[0] + (c + 0.5) * PATCH < 600)
    inside &= (ORIGIN[1] + (r + 0.5) * PATCH > 150) & (ORIGIN[1] + (r + 0.5) * PATCH < 450)
    probs_pos[inside] = 0.9
    save_heatmap(
        Heatmap("pos.tif", (WIDTH, HEIGHT), ORIGIN, (PATCH, PATCH), probs_pos, "test"),
        pred / "heatmaps" / "pos.npz",
    )
    save_heatmap(
        Heatmap("neg.tif", (800, 600), (0, 0), (100, 100), np.full((6, 8), 0.05, np.float32)),
        pred / "heatmaps" / "neg.npz",
    )
    return cohort, pred


def test_predictions_folder_follows_slides_fills_cohort_and_outlines(window, tmp_path):
    cohort, pred = write_cohort(tmp_path)
    assert window.open_cohort(str(cohort), raise_errors=True)
    controller = window.context.heatmap
    controller.load_path(pred)
    model = window.cohort_panel.model
    row = model.row_of("pos.tif")
    assert model.item(row, model.SCORE).text() == "0.910"
    assert model.item(row, model.PRED).text() == "tumour"
    assert model.item(row, model.LABEL).text() == "tumour"
    assert model.item(model.row_of("neg.tif"), model.SCORE).text() == "0.120"
    assert controller.heatmap is not None and controller.heatmap.slide == "neg.tif"
    assert window.docks["heatmap"].isVisible()

    assert window.open_slide(str(tmp_path / "pos.tif"), raise_errors=True)
    assert controller.heatmap.slide == "pos.tif"
    assert controller.item is not None and controller.item.scene() is window.slide_view.scene()
    controller.set_outlines_visible(True)
    outline = controller.outline_item
    assert outline is not None and outline.pen().isCosmetic()
    bounds = outline.path().boundingRect()
    assert (bounds.left(), bounds.top(), bounds.right(), bounds.bottom()) == (200, 150, 600, 450)
    controller.set_opacity(1.0)
    image = render(window)
    inside = window.slide_view.mapFromScene(QPointF(400, 300))
    assert close(pixel(image, inside.x(), inside.y()), expected_rgb("viridis", 0.9))
    # The outline is drawn over the heatmap on the tumour's edge.
    edge = window.slide_view.mapFromScene(QPointF(200, 300))
    window_pixels = [
        pixel(image, edge.x() + dx, edge.y() + dy) for dx in (-1, 0, 1) for dy in range(-6, 7)
    ]
    assert any(min(p) >= 235 for p in window_pixels)  # white dashes

    # Re-opening the cohort keeps the scores in the table.
    assert window.open_cohort(str(cohort), raise_errors=True)
    from PySide6.QtWidgets import QApplication

    QApplication.processEvents()
    assert model.item(model.row_of("pos.tif"), model.SCORE).text() == "0.910"


def test_bad_heatmap_files_raise_clear_errors(window, tmp_path):
    from pathviewer.core.heatmap import HeatmapError

    controller = window.context.heatmap
    with pytest.raises(HeatmapError, match="not a predictions folder"):
        controller.load_path(tmp_path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(HeatmapError, match="bad.npz"):
        controller.load_path(bad)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "slides.csv").write_text("slide,score\ns.tif,high\n")
    with pytest.raises(HeatmapError, match="row 2"):
        controller.load_path(pred)


def test_screenshot_with_heatmap_shows_heatmap_colours(qtbot, tmp_path):
    from pathviewer.cli import main

    cohort, pred = write_cohort(tmp_path)
    # The cohort opens its first slide; make the positive one first.
    cohort.write_text("slide,label,split,annotations\npos.tif,1,test,pos.geojson\n")
    out = tmp_path / "shot.png"
    argv = ["screenshot", str(cohort), str(out), "--size", "1400x900", "--heatmap", str(pred)]
    assert main([*argv, "--outlines"]) == 0
    image = QImage(str(out))
    assert not image.isNull() and image.width() == 1400
    # Default opacity 0.6 over the uniform slide colour: the blend of the LUT colour of 0.9.
    lut = np.array(expected_rgb("viridis", 0.9), float)
    alpha = round(0.6 * 255) / 255
    blend = tuple(int(v) for v in np.rint(lut * alpha + np.array(SLIDE_RGB) * (1 - alpha)))
    rgb = image.convertToFormat(QImage.Format.Format_RGB888)
    pixels = np.frombuffer(rgb.constBits(), np.uint8).reshape(rgb.height(), rgb.bytesPerLine())
    pixels = pixels[:, : 3 * rgb.width()].reshape(rgb.height(), rgb.width(), 3).astype(int)
    found = np.all(np.abs(pixels - np.array(blend)) <= 3, axis=2).sum()
    # The 30 patches at 0.9 (64 px) at ~0.33 screen px per level-0 px: ~13,000 screen px (the
    # window is large enough that the docks of every feature leave the view that scale).
    assert found > 5_000
    assert (
        main(
            [
                "screenshot",
                str(cohort),
                str(tmp_path / "x.png"),
                "--heatmap",
                str(tmp_path / "nope"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.png").exists()


def test_export_heatmap_for_qupath_and_load_it_back_on_the_slide(window, tmp_path, monkeypatch):
    """Tools > Export heatmap writes QuPath tiles; loading that file paints the same cells."""
    from PySide6.QtWidgets import QFileDialog

    from pathviewer.gui.heatmap import dock as heatmap_module

    shown = show_heatmap(window)
    out = tmp_path / "export" / "s.tiles.geojson"
    out.parent.mkdir()
    monkeypatch.setattr(
        QFileDialog,
        "getSaveFileName",
        lambda *a, **k: (str(out), next(iter(heatmap_module.EXPORT_FILTERS))),
    )
    window.context.heatmap.export_action.trigger()
    assert out.is_file()
    window.context.heatmap.set_heatmap(None)
    window.context.heatmap.load_path(out)
    loaded = window.context.heatmap.heatmap
    assert loaded is not None and loaded.origin == shown.origin
    np.testing.assert_allclose(loaded.probs, shown.probs, atol=1e-6, equal_nan=True)
    # an ASAP map of the same heatmap, through the same controller
    assert window.context.heatmap.export(tmp_path / "s_likelihood_map.tif", "asap") > 0


def test_colour_bar_on_the_slide_follows_the_heatmap(window, qtbot):
    legend = window.context.heatmap.legend
    view = window.slide_view
    assert legend is not None and not legend.isVisible()  # no heatmap yet
    show_heatmap(window)
    assert legend.isVisible()
    # Along the bottom, right of the scale bar (in its place: this slide has no MPP).
    bar = view.scale_bar
    assert not bar.isVisible() and legend.x() == 12
    assert legend.geometry().bottom() < view.viewport().height()
    image = render(window)
    low = pixel(image, legend.x() + 12, legend.y() + 25)
    high = pixel(image, legend.x() + legend.width() - 12, legend.y() + 25)
    assert close(low, expected_rgb("viridis", 0.0), 12) and close(
        high, expected_rgb("viridis", 1.0), 12
    )
    # The threshold greys out the part of the bar that is not drawn on the slide.
    window.context.heatmap.set_threshold(0.5)
    image = render(window)
    assert sum(pixel(image, legend.x() + 20, legend.y() + 25)) < sum(low) - 30
    assert close(pixel(image, legend.x() + legend.width() - 12, legend.y() + 25), high, 12)
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert not legend.isVisible()
    qtbot.keyClick(view, Qt.Key.Key_H)
    assert legend.isVisible()
    toggle = next(
        a for a in window.menu("view").actions() if a.text() == "&Colour bar on the slide"
    )
    toggle.setChecked(False)
    assert not legend.isVisible()
    window.context.heatmap.set_heatmap(None)
    toggle.setChecked(True)
    assert not legend.isVisible()


def test_a_heatmap_of_another_slide_with_the_same_name_is_never_drawn(window, tmp_path):
    from pathviewer.core.errors import PathViewerError

    controller = window.context.heatmap
    other = Heatmap("s.tif", (4000, 3000), ORIGIN, (PATCH, PATCH), pattern_probs())
    (tmp_path / "pred" / "heatmaps").mkdir(parents=True)
    save_heatmap(other, tmp_path / "pred" / "heatmaps" / "s.npz")
    controller.load_path(tmp_path / "pred")
    assert controller.heatmap is None and controller.item is None
    assert "made for a 4000 × 3000 px slide, not this 1000 × 700 px one" in controller.source
    with pytest.raises(PathViewerError, match="not drawn"):
        controller.load_path(tmp_path / "pred" / "heatmaps" / "s.npz")
    assert controller.heatmap is None


def test_the_heatmap_display_is_remembered_in_the_next_window(window, qtbot, tmp_path) -> None:
    from pathviewer.gui.context import build_features
    from pathviewer.gui.main_window import MainWindow

    panel = window.context.heatmap_panel
    panel.colormap_combo.setCurrentText("inferno")
    panel.threshold_slider.setValue(0.35)
    window.context.heatmap.set_visible(False)
    window.settings.sync()
    again = MainWindow(settings=window.settings, threads=1)
    build_features(again)
    qtbot.addWidget(again)
    display = again.context.heatmap.display
    assert (display.colormap, display.threshold, display.visible) == ("inferno", 0.35, True)
    assert again.context.heatmap_panel.colormap_combo.currentText() == "inferno"
    assert again.context.heatmap_panel.threshold_slider.value() == pytest.approx(0.35)
    again.close()


def test_smooth_display_stays_on_the_scored_patches(window):
    """Bilinear smoothing must not tint the background beside the tissue's edge patches."""
    probs = np.full((ROWS, COLS), 0.95, np.float32)
    probs[:, :5] = np.nan  # background: not scored
    show_heatmap(window, probs)
    controller = window.context.heatmap
    controller.set_smooth(True)
    image = render(window)
    colour = expected_rgb("viridis", 0.95)
    for row in (3, 6):
        # Just outside the edge: the slide as it is; just inside: the patch's own colour.
        assert close(probe_cell(window, image, row, 4, fx=0.9), SLIDE_RGB)
        assert close(probe_cell(window, image, row, 5, fx=0.1), colour, tol=4)
        assert close(probe_cell(window, image, row, 8), colour)


def test_clam_h5_without_patch_size_asks_for_it_then_paints_its_cells(
    window, tmp_path, monkeypatch
):
    """A CLAM heatmap h5 has no patch size: the dialog asks for one and the cells land right."""
    import h5py
    from PySide6.QtWidgets import QFileDialog, QInputDialog

    from pathviewer.gui.heatmap.dock import choose_and_load

    coords = np.array([(64 * c, 64 * r) for r in range(3) for c in range(4)], np.int64)
    scores = np.linspace(0.1, 0.9, len(coords)).reshape(-1, 1)
    path = tmp_path / "s_blockmap.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("attention_scores", data=scores)
        h5.create_dataset("coords", data=coords)
    asked: list[str] = []
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    monkeypatch.setattr(
        QInputDialog, "getInt", lambda _w, _t, label, *a, **k: (asked.append(label), (64, True))[1]
    )
    controller = window.context.heatmap
    choose_and_load(window, controller)
    assert asked and "patch size is unknown" in asked[0]
    loaded = controller.heatmap
    assert loaded is not None and loaded.patch_size == (64, 64)
    for (x, y), score in zip(coords, scores[:, 0], strict=True):
        assert loaded.value_at(x + 32, y + 32) == pytest.approx(score)


def test_the_docks_colour_bar_names_both_ends(window):
    from pathviewer.gui.heatmap.dock import COLORBAR_TICKS

    axis = window.context.heatmap_panel.colorbar.getAxis("bottom")
    labels = [label for level in axis._tickLevels for _value, label in level]
    assert labels[0] == "0" and labels[-1] == "1"
    assert [v for v, _ in COLORBAR_TICKS][:: len(COLORBAR_TICKS) - 1] == [0.0, 1.0]


def test_an_exported_figure_says_which_heatmap_it_shows(window):
    assert "heatmap" not in window.figure_provenance()  # none shown
    show_heatmap(window)
    controller = window.context.heatmap
    controller.set_threshold(0.3)
    line = window.figure_provenance()
    assert "heatmap s.tif" in line and "threshold 0.30" in line and "colormap viridis" in line
    controller.set_visible(False)  # a hidden heatmap is not on the figure
    assert "heatmap" not in window.figure_provenance()
