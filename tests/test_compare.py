"""Side-by-side views: linked navigation, crosshair, compare runs and their difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.heatmap import Heatmap, HeatmapError, difference_heatmap, save_heatmap
from pathviewer.core.predictions import load_slide_heatmap

SIZE = (3000, 2000)
PATCH = 100


def _heatmap(probs: np.ndarray, model: str = "") -> Heatmap:
    return Heatmap("s.tif", SIZE, (0, 0), (PATCH, PATCH), probs.astype(np.float32), model=model)


def _run(folder: Path, probs: np.ndarray, stem: str = "s") -> Path:
    (folder / "heatmaps").mkdir(parents=True)
    save_heatmap(_heatmap(probs, folder.name), folder / "heatmaps" / f"{stem}.npz")
    return folder


def _probs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, (SIZE[1] // PATCH, SIZE[0] // PATCH))
    probs[0, 0] = np.nan
    return probs


def test_difference_is_centred_on_no_change_and_keeps_unscored_cells() -> None:
    a, b = _probs(0), _probs(1)
    change = difference_heatmap(_heatmap(a, "A"), _heatmap(b, "B"), span=1.0)
    assert np.allclose(change.probs[1:], ((b - a + 1) / 2)[1:], atol=1e-6)
    # The default span saturates at a change of 0.5.
    half = difference_heatmap(_heatmap(a), _heatmap(b)).probs
    expected = np.clip((b - a) / 0.5, -1, 1) / 2 + 0.5
    assert np.allclose(half[1:], expected[1:], atol=1e-6)
    assert np.isnan(change.probs[0, 0])
    assert change.probs[np.isfinite(change.probs)].min() >= 0
    assert change.model == "B minus A"
    other = Heatmap("s.tif", SIZE, (0, 0), (200, 200), np.zeros((10, 15), np.float32))
    with pytest.raises(HeatmapError, match="different patch grids"):
        difference_heatmap(_heatmap(a), other)


def test_slide_heatmap_from_a_folder_or_a_file(tmp_path: Path) -> None:
    run = _run(tmp_path / "runA", _probs(0))
    found = load_slide_heatmap(run, tmp_path / "s.tif")
    assert np.allclose(found.probs[1:], _probs(0)[1:])
    assert load_slide_heatmap(run / "heatmaps" / "s.npz", "anything").probs.shape == (20, 30)
    with pytest.raises(HeatmapError, match="no heatmap of other.tif"):
        load_slide_heatmap(run, tmp_path / "other.tif")
    with pytest.raises(HeatmapError, match="no such heatmap file or predictions folder"):
        load_slide_heatmap(tmp_path / "missing", tmp_path / "s.tif")


pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402


@pytest.fixture
def slide_path(tmp_path: Path) -> Path:
    import tifffile

    rng = np.random.default_rng(3)
    rgb = np.repeat(np.repeat(rng.integers(120, 240, (200, 300, 3), np.uint8), 10, 0), 10, 1)
    path = tmp_path / "s.tif"
    tifffile.imwrite(
        path,
        rgb,
        tile=(256, 256),
        photometric="rgb",
        resolution=(1e4 / 0.5, 1e4 / 0.5),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture
def window(qtbot, tmp_path: Path, slide_path: Path):
    from pathviewer.gui.app import create_main_window

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = create_main_window([str(slide_path)], settings=settings, threads=2, raise_errors=True)
    qtbot.addWidget(win)
    win.resize(1200, 700)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _centre(view) -> tuple[float, float]:
    centre = view.visible_level0_rect().center()
    return centre.x(), centre.y()


def test_two_views_follow_each_other(window, qtbot) -> None:
    compare = window.context.compare
    compare.set_layout(2)
    assert compare.count == 2
    main, other = window.slide_view, compare.panes[0].view
    assert other.current_slide is not None
    assert Path(other.current_slide.path) == Path(main.current_slide.path)
    qtbot.wait(50)
    main.set_scale(0.5)
    main.center_on(700, 600)
    assert _centre(other) == pytest.approx(_centre(main), abs=3)
    assert other.scale_factor() == pytest.approx(main.scale_factor(), rel=0.02)
    # ... and the other way round, also after a zoom in the second view.
    other.zoom_by(2.0)
    other.pan_by(100, 40)
    assert main.scale_factor() == pytest.approx(other.scale_factor(), rel=0.02)
    assert _centre(main) == pytest.approx(_centre(other), abs=3)
    # The cursor in one view puts a crosshair at the same level-0 point in the other.
    main.cursorMoved.emit(812.0, 433.0)
    crosshair = compare.link.crosshair(other)
    assert crosshair is not None and crosshair.isVisible()
    assert (crosshair.pos().x(), crosshair.pos().y()) == (812.0, 433.0)
    assert not compare.link.crosshair(main).isVisible()
    compare.set_layout(4)
    assert compare.count == 4 and all(p.view.current_slide is not None for p in compare.panes)
    compare.set_layout(1)
    assert compare.count == 1 and not compare.panes
    assert window.centralWidget() is compare.grid_widget


def test_compare_runs_shows_a_b_and_their_difference(window, tmp_path, qtbot) -> None:
    a, b = _probs(0), _probs(1)
    run_a, run_b = _run(tmp_path / "runA", a), _run(tmp_path / "runB", b)
    compare = window.context.compare
    compare.compare_runs(str(run_a), str(run_b), difference=True)
    assert compare.count == 3
    assert np.allclose(window.context.heatmap.heatmap.probs[1:], a[1:])
    assert np.allclose(compare.panes[0].heatmap.probs[1:], b[1:])
    change = compare.panes[1].heatmap
    assert change.method == "difference"
    assert "runA" in compare.main_title.text() and "runB" in compare.panes[0].title.text()
    # Where B scores much higher the difference view is red, where lower blue (coolwarm).
    higher = np.argwhere(np.nan_to_num(b - a) > 0.7)[0]
    lower = np.argwhere(np.nan_to_num(b - a) < -0.7)[0]
    view = compare.panes[1].view
    view.set_scale(0.5)

    def colour(cell):
        x, y = (cell[1] + 0.5) * PATCH, (cell[0] + 0.5) * PATCH
        view.center_on(x, y)
        assert view.wait_until_idle(10)
        grabbed = view.viewport().grab().toImage()
        c = grabbed.pixelColor(view.mapFromScene(x, y))
        return c.red(), c.blue()

    red, blue = colour(higher)
    assert red > blue + 40
    red, blue = colour(lower)
    assert blue > red + 40


def test_compare_runs_bad_input_changes_nothing(window, tmp_path) -> None:
    run_a = _run(tmp_path / "runA", _probs(0))
    compare = window.context.compare
    with pytest.raises(HeatmapError, match="no such heatmap file or predictions folder"):
        compare.compare_runs(str(run_a), str(tmp_path / "nowhere"))
    odd = tmp_path / "odd"
    (odd / "heatmaps").mkdir(parents=True)
    save_heatmap(
        Heatmap("s.tif", SIZE, (0, 0), (200, 200), np.zeros((10, 15), np.float32)),
        odd / "heatmaps" / "s.npz",
    )
    with pytest.raises(HeatmapError, match="different patch grids"):
        compare.compare_runs(str(run_a), str(odd), difference=True)
    assert compare.count == 1 and window.context.heatmap.heatmap is None


def test_compare_command_renders_three_views_and_refuses_bad_runs(
    tmp_path, slide_path, capsys
) -> None:
    from PySide6.QtGui import QImage

    from pathviewer.cli import main

    run_a, run_b = _run(tmp_path / "runA", _probs(0)), _run(tmp_path / "runB", _probs(1))
    out = tmp_path / "compare.png"
    args = ["compare", str(slide_path), str(run_a), str(run_b), "--size", "1500x800"]
    assert main([*args, "--screenshot", str(out)]) == 0
    image = QImage(str(out))
    assert (image.width(), image.height()) == (1500, 800)
    missing = ["compare", str(slide_path), str(run_a), str(tmp_path / "nope")]
    assert main([*missing, "--screenshot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert not (tmp_path / "x.png").exists()
