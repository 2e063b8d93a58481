"""The GUI's uncaught-exception hook: logged to the log file, shown in a dialog, app keeps going."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from pathviewer import crash
from pathviewer.logs import log_file

pytestmark = pytest.mark.gui


@pytest.fixture
def restore_hook() -> Iterator[None]:
    """Put back whatever sys.excepthook was (pytest-qt's) after each test."""
    saved = sys.excepthook
    yield
    sys.excepthook = saved


@pytest.fixture
def dialogs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """Capture QMessageBox.exec calls instead of blocking on a modal dialog."""
    from PySide6.QtWidgets import QMessageBox

    shown: list[dict[str, object]] = []

    def fake_exec(box: QMessageBox) -> int:
        shown.append(
            {
                "title": box.windowTitle(),
                "text": box.text(),
                "details": box.detailedText(),
                "parent": box.parent(),
                "icon": box.icon(),
            }
        )
        return int(QMessageBox.StandardButton.Ok.value)

    monkeypatch.setattr(QMessageBox, "exec", fake_exec)
    return shown


def _raise_and_report(message: str) -> None:
    try:
        raise ValueError(message)
    except ValueError:
        sys.excepthook(*sys.exc_info())


def test_excepthook_logs_and_shows_dialog_with_log_path(qtbot, dialogs, restore_hook) -> None:
    from PySide6.QtWidgets import QMessageBox, QWidget

    window = QWidget()
    qtbot.addWidget(window)
    crash.install_excepthook(lambda: window)

    _raise_and_report("tile cache exploded 4711")  # returns: the app is not closed

    text = log_file().read_text(encoding="utf-8")
    assert "uncaught exception" in text
    assert "ValueError: tile cache exploded 4711" in text
    assert "Traceback (most recent call last)" in text
    assert "_raise_and_report" in text  # the traceback, not just the message

    assert len(dialogs) == 1
    shown = dialogs[0]
    assert shown["parent"] is window
    assert shown["icon"] == QMessageBox.Icon.Critical
    assert str(log_file()) in str(shown["text"])
    assert "ValueError: tile cache exploded 4711" in str(shown["text"])
    assert "_raise_and_report" in str(shown["details"])


@pytest.mark.qt_no_exception_capture
def test_exception_in_qt_slot_reaches_hook_and_event_loop_continues(
    qtbot, dialogs, restore_hook
) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    crash.install_excepthook(lambda: None)

    def broken_slot() -> None:
        raise RuntimeError("slot failed 9001")

    QTimer.singleShot(0, broken_slot)
    qtbot.waitUntil(lambda: len(dialogs) == 1, timeout=5000)
    assert "RuntimeError: slot failed 9001" in str(dialogs[0]["text"])

    # The event loop still runs: a later timer fires and the application object is intact.
    fired: list[bool] = []
    QTimer.singleShot(0, lambda: fired.append(True))
    qtbot.waitUntil(lambda: fired == [True], timeout=5000)
    assert QApplication.instance() is not None
    assert "slot failed 9001" in log_file().read_text(encoding="utf-8")


def test_keyboard_interrupt_goes_to_previous_hook(qtbot, dialogs, restore_hook) -> None:
    seen: list[type[BaseException]] = []
    sys.excepthook = lambda t, e, tb: seen.append(t)
    previous = crash.install_excepthook(lambda: None)
    assert previous is not sys.excepthook

    sys.excepthook(KeyboardInterrupt, KeyboardInterrupt(), None)
    assert seen == [KeyboardInterrupt]
    assert dialogs == []


def test_failing_dialog_is_logged_not_raised(qtbot, monkeypatch, restore_hook) -> None:
    from PySide6.QtWidgets import QMessageBox

    def broken_exec(box: QMessageBox) -> int:
        raise RuntimeError("no screen")

    monkeypatch.setattr(QMessageBox, "exec", broken_exec)
    crash.install_excepthook(lambda: None)
    _raise_and_report("first failure 77")  # must not raise although the dialog fails

    text = log_file().read_text(encoding="utf-8")
    assert "first failure 77" in text
    assert "could not show the error dialog" in text
    assert "RuntimeError: no screen" in text


def test_log_only_mode_shows_no_dialog(qtbot, dialogs, restore_hook) -> None:
    crash.install_excepthook(show_dialog=False)
    _raise_and_report("quiet failure 5")
    assert dialogs == []
    assert "quiet failure 5" in log_file().read_text(encoding="utf-8")


def test_message_without_log_file_points_to_terminal() -> None:
    message = crash.format_message(OSError("disk full"), None)
    assert "OSError: disk full" in message
    assert "terminal" in message
    assert "/" not in message.split("disk full")[1]  # no made-up log path
