"""File dialogs start in the last folder used for their kind of file, else the default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtWidgets import QFileDialog  # noqa: E402

from pathviewer.gui import file_dialogs  # noqa: E402


@pytest.fixture
def settings(tmp_path: Path) -> QSettings:
    return QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)


def test_start_folder_prefers_last_then_near_then_default_then_home(
    settings: QSettings, tmp_path: Path
) -> None:
    slides, work, last, near = (tmp_path / n for n in ("slides", "work", "last", "near"))
    for folder in (slides, work, last, near):
        folder.mkdir()
    assert file_dialogs.start_folder(settings, "slides") == str(Path.home())
    settings.setValue(file_dialogs.default_key("slides"), str(slides))
    settings.setValue(file_dialogs.default_key("work"), str(work))
    assert file_dialogs.start_folder(settings, "slides") == str(slides)
    assert file_dialogs.start_folder(settings, "cohorts") == str(slides)
    assert file_dialogs.start_folder(settings, "exports") == str(work)
    assert file_dialogs.start_folder(settings, "exports", near=str(near)) == str(near)
    file_dialogs.remember(settings, "exports", str(last / "figure.png"))
    assert file_dialogs.start_folder(settings, "exports", near=str(near)) == str(last)
    assert file_dialogs.start_folder(settings, "annotations") == str(work)  # kinds apart
    last.rmdir()  # a folder that went away is skipped
    assert file_dialogs.start_folder(settings, "exports", near=str(near)) == str(near)
    with pytest.raises(KeyError, match="unknown kind"):
        file_dialogs.start_folder(settings, "pictures")


def test_dialogs_remember_what_was_chosen_and_not_a_cancel(
    settings: QSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    (tmp_path / "a").mkdir()
    answers = iter([str(tmp_path / "a" / "slide.svs"), ""])

    def fake_open(_parent, _title, start, _filters):
        asked.append(start)
        return next(answers), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    for _ in range(2):
        file_dialogs.open_file(None, settings, "slides", "Open slide", "Slides (*.svs)")
    # The second dialog started where the first chose; its cancel kept that folder.
    assert asked == [str(Path.home()), str(tmp_path / "a")]
    assert file_dialogs.start_folder(settings, "slides") == str(tmp_path / "a")
    saved: list[str] = []

    def fake_save(_parent, _title, start, _filters, _selected):
        saved.append(start)
        return str(tmp_path / "a" / "out.geojson"), "GeoJSON"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(fake_save))
    path, chosen = file_dialogs.save_file(
        None, settings, "annotations", "Export", "GeoJSON", suggested="/x/y/slide.geojson"
    )
    # The suggested name goes into the start folder, not its own folder.
    assert saved == [str(Path.home() / "slide.geojson")]
    assert (path, chosen) == (str(tmp_path / "a" / "out.geojson"), "GeoJSON")
    assert file_dialogs.start_folder(settings, "annotations") == str(tmp_path / "a")


def test_the_windows_open_slide_dialog_starts_where_the_last_slide_was(
    qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathviewer.gui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    qtbot.addWidget(window)
    folder = tmp_path / "slides"
    folder.mkdir()
    asked: list[str] = []

    def fake_open(_parent, _title, start, _filters):
        asked.append(start)
        return str(folder / "missing.svs"), ""

    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(fake_open))
    monkeypatch.setattr(window, "open_paths", lambda paths: None)
    window.choose_slide()
    window.choose_slide()
    assert asked == [str(Path.home()), str(folder)]
