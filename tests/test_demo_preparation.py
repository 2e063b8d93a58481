"""The first launch opens the window at once and generates the demo cohort in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QProgressBar  # noqa: E402


@pytest.fixture
def tiny_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    import pathviewer.core.realistic as realistic

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(
        realistic,
        "demo_settings",
        lambda: {"n_slides": 2, "seed": 3, "size": 1024, "test_fraction": 0.5},
    )
    from pathviewer.paths import demo_cohort_dir

    return demo_cohort_dir()


def test_the_window_shows_progress_while_the_demo_cohort_is_made(
    qtbot, tiny_demo: Path, tmp_path: Path
) -> None:
    from pathviewer.gui.app import create_main_window
    from pathviewer.gui.demo import DemoPreparation

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window([], settings=settings)
    qtbot.addWidget(window)
    window.show()
    preparation = DemoPreparation(window)
    seen: list[tuple[bool, bool, int]] = []

    def on_progress(_event: object) -> None:
        bars = window.statusBar().findChildren(QProgressBar)
        seen.append((window.isVisible(), (tiny_demo / "cohort.csv").exists(), len(bars)))

    preparation.runner.progress.connect(on_progress)
    with qtbot.waitSignal(preparation.ready, timeout=120_000) as ready:
        preparation.start()
    assert Path(str(ready.args[0])) == tiny_demo / "cohort.csv"
    assert (tiny_demo / "cohort.csv").is_file()
    # While it worked, the window was up and showed a progress bar; the cohort was not yet there.
    assert seen and all(visible and not made and bars == 1 for visible, made, bars in seen)
    qtbot.waitUntil(lambda: not window.statusBar().findChildren(QProgressBar), timeout=2000)
    assert not list(tiny_demo.parent.glob(".demo-cohort-*"))  # no temporary folder left


def test_closing_during_generation_leaves_no_half_made_cohort(
    qtbot, tiny_demo: Path, tmp_path: Path
) -> None:
    from pathviewer.gui.app import create_main_window
    from pathviewer.gui.demo import DemoPreparation
    from pathviewer.jobs import demo_cohort_is_complete

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window([], settings=settings)
    qtbot.addWidget(window)
    preparation = DemoPreparation(window)
    with qtbot.waitSignal(preparation.runner.progress, timeout=60_000):
        preparation.start()
    preparation.shutdown()  # what quitting the app does
    assert not preparation.runner.is_running()
    assert not demo_cohort_is_complete(tiny_demo)
    assert not list(tiny_demo.parent.glob(".demo-cohort-*"))
