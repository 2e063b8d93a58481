"""Display adjustments: brightness, contrast, gamma and stain channels, shown without tile reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.stain import (
    HED_VECTORS,
    combine_stains,
    complete_stain_matrix,
    separate_stains,
    stain_image,
)
from pathviewer.session.display import (
    ESTIMATED,
    DisplayRenderer,
    DisplaySettings,
    intensity_lut,
)


def _two_stain_image(size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB of known H and E concentrations (Ruifrok vectors), and those concentrations."""
    rng = np.random.default_rng(seed)
    h = rng.uniform(0.0, 1.2, (size, size)) * (rng.random((size, size)) < 0.6)
    e = rng.uniform(0.0, 1.0, (size, size)) * (rng.random((size, size)) < 0.7)
    concentrations = np.stack([h, e, np.zeros_like(h)], axis=-1)
    matrix = complete_stain_matrix(HED_VECTORS[[0, 1]])
    return combine_stains(concentrations, matrix), concentrations


# ----------------------------------------------------------------------------------------------
# Qt-free rules
# ----------------------------------------------------------------------------------------------


def test_intensity_lut_neutral_brightness_contrast_gamma() -> None:
    assert np.array_equal(intensity_lut(DisplaySettings()), np.arange(256))
    brighter = intensity_lut(DisplaySettings(brightness=0.2))
    assert brighter[100] == 151 and brighter[255] == 255 and brighter[0] == 51
    steeper = intensity_lut(DisplaySettings(contrast=2.0))
    assert steeper[64] == 0 and steeper[192] == 255 and abs(int(steeper[128]) - 128) <= 1
    lighter_mids = intensity_lut(DisplaySettings(gamma=2.0))
    assert lighter_mids[64] > 64 and lighter_mids[0] == 0 and lighter_mids[255] == 255
    assert np.all(np.diff(lighter_mids.astype(int)) >= 0)


def test_settings_round_trip_validate_and_clamp() -> None:
    settings = DisplaySettings(brightness=0.1, contrast=1.5, gamma=0.8, channel="stain2")
    assert DisplaySettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert DisplaySettings(contrast=50.0).contrast == 10.0  # clamped to the slider's range
    with pytest.raises(ValueError, match="channel"):
        DisplaySettings.from_dict({"channel": "infrared"})
    with pytest.raises(ValueError, match="finite"):
        DisplaySettings.from_dict({"gamma": float("nan")})
    with pytest.raises(ValueError, match="stain"):
        DisplaySettings.from_dict({"vectors": [[1, 2, 3]]})
    hdab = DisplaySettings().replace(stain_set="H-DAB")
    assert np.allclose(hdab.vectors[1], HED_VECTORS[2])
    assert hdab.stain_names == ("Haematoxylin", "DAB")
    assert DisplaySettings().is_identity and not hdab.replace(channel="stain1").is_identity


def test_stain_channels_recover_the_concentrations_of_a_two_stain_image() -> None:
    rgb, concentrations = _two_stain_image()
    matrix = complete_stain_matrix(HED_VECTORS[[0, 1]])
    bright = rgb.min(axis=-1) >= 40  # uint8 quantisation costs precision in dark pixels only
    for channel, stain in (("stain1", 0), ("stain2", 1)):
        shown = DisplayRenderer(DisplaySettings(channel=channel)).render_rgb(rgb)
        recovered = separate_stains(shown, matrix)
        error = np.abs(recovered[..., stain] - concentrations[..., stain])
        assert error[bright].max() < 0.05 and error.mean() < 0.01
        assert np.abs(recovered[..., 1 - stain])[bright].max() < 0.05  # the other stain is gone


def test_lookup_rendering_matches_the_exact_stain_image() -> None:
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    for stain_set in ("H&E", "H-DAB"):
        settings = DisplaySettings().replace(stain_set=stain_set)
        matrix = complete_stain_matrix(np.asarray(settings.vectors))
        for channel, stains in (("stain1", [0]), ("stain2", [1]), ("stains", [0, 1])):
            renderer = DisplayRenderer(settings.replace(channel=channel))
            exact = stain_image(rgb, matrix, stains)
            assert np.abs(renderer.render_rgb(rgb).astype(int) - exact).max() <= 1
            # The viewer's byte order (B, G, R, X) gives the same pixels.
            bgrx = np.concatenate([rgb[..., ::-1], np.zeros((64, 80, 1), np.uint8)], axis=-1)
            out = renderer.render_bgrx(bgrx)
            assert np.array_equal(out[..., 2::-1], renderer.render_rgb(rgb))
            assert np.all(out[..., 3] == 255)


def test_fast_stain_lookup_matches_the_exact_path_on_a_large_two_stain_image() -> None:
    # Large enough to be split into several blocks rendered on the renderer's threads.
    rgb, _ = _two_stain_image(640, seed=2)
    bgrx = np.concatenate([rgb[..., ::-1], np.full((640, 640, 1), 255, np.uint8)], axis=-1)
    for stain_set in ("H&E", "H-DAB"):
        settings = DisplaySettings().replace(stain_set=stain_set)
        matrix = complete_stain_matrix(np.asarray(settings.vectors))
        for channel, stains in (("stain1", [0]), ("stain2", [1]), ("stains", [0, 1])):
            renderer = DisplayRenderer(settings.replace(channel=channel))
            exact = stain_image(rgb, matrix, stains).astype(int)
            shown = renderer.render_bgrx(bgrx)
            error = np.abs(shown[..., 2::-1].astype(int) - exact)
            assert error.max() <= 1 and error.mean() < 0.1, (stain_set, channel)
            # Block by block gives the same pixels as row by row.
            rows = np.concatenate(
                [renderer.render_bgrx(bgrx[y : y + 1]) for y in range(0, 640, 97)]
            )
            assert np.array_equal(rows, shown[::97])


def test_intensity_changes_keep_the_stain_tables_and_a_channel_change_rebuilds_them() -> None:
    rgb, _ = _two_stain_image(48, seed=3)
    renderer = DisplayRenderer(DisplaySettings(channel="stain1"))
    plain = renderer.render_rgb(rgb)
    renderer.settings = renderer.settings.replace(gamma=2.0, contrast=1.3)
    lut = intensity_lut(renderer.settings)
    assert np.array_equal(renderer.render_rgb(rgb), lut[plain])
    renderer.settings = renderer.settings.replace(channel="stain2")
    other = DisplayRenderer(DisplaySettings(channel="stain2")).render_rgb(rgb)
    assert np.array_equal(renderer.render_rgb(rgb), lut[other])
    renderer.settings = renderer.settings.replace(stain_set="H-DAB")
    hdab = DisplayRenderer(DisplaySettings(channel="stain2").replace(stain_set="H-DAB"))
    assert np.array_equal(renderer.render_rgb(rgb), lut[hdab.render_rgb(rgb)])


def test_intensity_adjustment_applies_after_the_stain_channel() -> None:
    rgb, _ = _two_stain_image(32)
    plain = DisplayRenderer(DisplaySettings(channel="stain1")).render_rgb(rgb)
    brighter = DisplayRenderer(DisplaySettings(channel="stain1", gamma=2.0)).render_rgb(rgb)
    assert np.array_equal(brighter, intensity_lut(DisplaySettings(gamma=2.0))[plain])


# ----------------------------------------------------------------------------------------------
# In the app
# ----------------------------------------------------------------------------------------------

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from pathviewer.core.slide import ArraySlide  # noqa: E402
from pathviewer.gui.app import create_main_window  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def window(qtbot, settings):
    win = create_main_window(settings=settings, threads=2)
    qtbot.addWidget(win)
    win.resize(1000, 720)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _grab(widget) -> np.ndarray:
    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
    pixels = np.frombuffer(image.constBits(), np.uint8)
    rows = pixels.reshape(image.height(), image.bytesPerLine())[:, : image.width() * 4]
    return rows.reshape(image.height(), image.width(), 4).copy()


def _tissue_slide(size: int = 3000) -> ArraySlide:
    rgb, _ = _two_stain_image(size // 8, seed=5)
    return ArraySlide(np.kron(rgb, np.ones((8, 8, 1), np.uint8)), mpp=0.5, levels=3, name="he")


def _centre(pixels: np.ndarray) -> np.ndarray:
    """The middle of a grab, clear of the scale bar and the minimap."""
    h, w = pixels.shape[:2]
    return pixels[h // 3 : 2 * h // 3, w // 8 : w // 2, :3].astype(int)


def test_adjustments_repaint_from_cached_tiles_without_reading_any(window, qtbot) -> None:
    view = window.slide_view
    view.set_slide(_tissue_slide())
    view.set_scale(0.5)
    assert view.wait_until_idle(10)
    qtbot.wait(250)  # settle: smooth painting
    before = _grab(view.viewport())
    reads = view.pipeline.stats.read
    controller = window.context.display
    for changes in (
        {"gamma": 1.8},
        {"contrast": 1.6, "brightness": -0.1},
        {"channel": "stain1"},
        {"channel": "stains", "gamma": 1.2},
        {"channel": "stain2", "stain_set": "H-DAB"},
    ):
        controller.update(**changes)
        qtbot.wait(50)
        after = _grab(view.viewport())
        expected = DisplayRenderer(controller.settings).render_bgrx(before)
        assert np.abs(_centre(after) - _centre(expected)).max() <= 1, changes
        assert np.abs(_centre(after) - _centre(before)).mean() > 5  # it did change
    assert view.pipeline.stats.read == reads  # no tile was read again
    controller.reset()
    qtbot.wait(50)
    assert np.array_equal(_centre(_grab(view.viewport())), _centre(before))


def test_settings_are_remembered_per_slide(window, qtbot, tmp_path, settings, cmu_small) -> None:
    other = tmp_path / "other.tiff"
    import tifffile

    tifffile.imwrite(other, np.full((256, 256, 3), 200, np.uint8))
    assert window.open_slide(str(cmu_small))
    controller = window.context.display
    controller.update(gamma=1.5, channel="stain1")
    assert window.open_slide(str(other))
    assert controller.settings.is_identity
    assert window.context.display_panel.gamma.value() == pytest.approx(1.0)
    assert window.open_slide(str(cmu_small))
    assert controller.settings.gamma == pytest.approx(1.5)
    assert controller.settings.channel == "stain1"
    assert window.context.display_panel.channel_combo.currentText() == "Haematoxylin"
    # A new window with the same settings file remembers too.
    second = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(second)
    assert second.open_slide(str(cmu_small))
    assert second.context.display.settings.gamma == pytest.approx(1.5)
    second.close()


def test_broken_saved_settings_open_the_slide_plainly(window, settings, cmu_small) -> None:
    from pathviewer.gui.viewer.display import SETTINGS_GROUP, slide_key

    settings.setValue(f"{SETTINGS_GROUP}/{slide_key(str(cmu_small))}", '{"channel": 7')
    assert window.open_slide(str(cmu_small))
    assert window.context.display.settings.is_identity


def test_panel_controls_drive_the_view(window, qtbot, cmu_small) -> None:
    assert window.open_slide(str(cmu_small))
    panel = window.context.display_panel
    dock = window.docks["display"]
    assert not dock.isVisible()
    qtbot.keyClick(window.slide_view, Qt.Key.Key_C, Qt.KeyboardModifier.ShiftModifier)
    assert dock.isVisible()
    panel.gamma.slider.setValue(30)  # log10(gamma) * 100
    assert window.slide_view.display.settings.gamma == pytest.approx(10**0.3)
    panel.channel_combo.setCurrentIndex(2)
    assert window.slide_view.display.settings.channel == "stain2"
    panel.stain_combo.setCurrentText("H-DAB")
    assert panel.channel_combo.currentText() == "DAB"
    qtbot.mouseClick(panel.reset_button, Qt.MouseButton.LeftButton)
    assert window.slide_view.display.settings.is_identity
    assert panel.gamma.value() == pytest.approx(1.0)


def test_estimate_stains_from_view_on_real_tissue(window, qtbot, cmu_small) -> None:
    assert window.open_slide(str(cmu_small))
    window.slide_view.fit_to_window()
    controller = window.context.display
    controller.estimate_from_view()
    settings = controller.settings
    assert settings.stain_set == ESTIMATED and settings.channel == "stain1"
    haematoxylin = np.asarray(settings.vectors[0])
    assert float(haematoxylin @ HED_VECTORS[0]) > 0.9  # Ruifrok-like, as on real H&E
    assert not np.allclose(settings.vectors, DisplaySettings().vectors)
    assert window.context.display_panel.stain_combo.currentText() == ESTIMATED


def test_estimate_without_tissue_says_why(window) -> None:
    window.slide_view.set_slide(ArraySlide(np.full((512, 512, 3), 250, np.uint8), mpp=0.5))
    with pytest.raises(ValueError, match="cannot estimate stains"):
        window.context.display.estimate_from_view()
    assert window.context.display.settings.stain_set == "H&E"


def test_stains_are_estimated_in_a_drawn_region(window, cmu_small, monkeypatch) -> None:
    import shapely

    from pathviewer.gui.viewer import display as display_module

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(Path(window.settings.fileName()).parent))
    assert window.open_slide(str(cmu_small))
    read: list[tuple] = []
    real_read_box = display_module.read_box
    monkeypatch.setattr(
        display_module,
        "read_box",
        lambda slide, box, size: read.append(box) or real_read_box(slide, box, size),
    )
    annotations = window.context.annotations
    (region,) = annotations.add([shapely.box(600, 900, 1400, 1700)], "Stain sample")
    annotations.select(region)
    window.context.display.estimate_from_view()
    assert read == [(600, 900, 800, 800)]  # the drawn rectangle, not the whole view
    assert window.context.display.settings.stain_set == ESTIMATED
