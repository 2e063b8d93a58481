"""Triage queue rules (Qt-free) and the Triage dock."""

from __future__ import annotations

import pytest

from pathviewer.session.triage import TriageItem, next_item, summary, triage_order


def _items() -> list[TriageItem]:
    return [
        TriageItem("a", "a.svs", 1, 0.95),  # confident, agrees
        TriageItem("b", "b.svs", 0, 0.90),  # confident, disagrees
        TriageItem("c", "c.svs", 1, 0.52),  # near the threshold, agrees
        TriageItem("d", "d.svs", None, None),  # not scored
        TriageItem("e", "e.svs", 1, 0.30),  # disagrees, less confident than b
        TriageItem("f", "f.svs", 0, 0.05),  # confident, agrees
    ]


def _keys(items) -> str:
    return "".join(item.key for item in items)


def test_orders() -> None:
    assert _keys(triage_order(_items(), "score")) == "abcefd"
    assert _keys(triage_order(_items(), "disagreement")) == "beacfd"
    assert _keys(triage_order(_items(), "uncertainty")) == "cebafd"
    # Another threshold changes who disagrees and who is uncertain.
    assert _keys(triage_order(_items(), "disagreement", threshold=0.2)) == "bacefd"
    with pytest.raises(ValueError, match="unknown triage order"):
        triage_order(_items(), "random")


def test_next_skips_decided_slides_and_stops_at_the_end() -> None:
    ordered = triage_order(_items(), "score")
    assert next_item(ordered, None).key == "a"
    decided = [
        TriageItem(i.key, i.path, i.label, i.score, "agree" if i.key == "b" else "")
        for i in ordered
    ]
    assert next_item(decided, "a").key == "c"
    assert next_item(decided, "a", unreviewed=False).key == "b"
    assert next_item(decided, "c", step=-1).key == "a"
    assert next_item(decided, "d") is None
    assert next_item(decided, None, step=-1).key == "d"


def test_summary_counts_at_the_threshold() -> None:
    line = summary(_items())
    assert line.startswith("6 slides · 5 scored · 3 called positive at 0.50 · 2 disagree")


# ----------------------------------------------------------------------------------------------
# The Triage dock
# ----------------------------------------------------------------------------------------------

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PySide6.QtCore import QSettings, Qt  # noqa: E402

from pathviewer.core.heatmap import Heatmap, save_heatmap  # noqa: E402

SCORES = {"s1": 0.20, "s2": 0.90, "s3": 0.55, "s4": 0.70}
LABELS = {"s1": 1, "s2": 1, "s3": 0, "s4": 0}


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    """Four tiled TIFF slides with labels, and a predictions folder that scores them."""
    import tifffile

    (tmp_path / "pred" / "heatmaps").mkdir(parents=True)
    lines = ["slide,label,split"]
    for name, score in SCORES.items():
        rgb = np.full((2048, 2048, 3), 220, np.uint8)
        tifffile.imwrite(tmp_path / f"{name}.tif", rgb, tile=(256, 256), photometric="rgb")
        lines.append(f"{name}.tif,{LABELS[name]},test")
        probs = np.full((8, 8), 0.1, np.float32)
        probs[2:4, 5:7] = score  # one region, away from the centre
        save_heatmap(
            Heatmap(f"{name}.tif", (2048, 2048), (0, 0), (256, 256), probs),
            tmp_path / "pred" / "heatmaps" / f"{name}.npz",
        )
    (tmp_path / "cohort.csv").write_text("\n".join(lines) + "\n")
    rows = [f"{name}.tif,{score}" for name, score in SCORES.items()]
    (tmp_path / "pred" / "slides.csv").write_text("slide,score\n" + "\n".join(rows) + "\n")
    return tmp_path / "cohort.csv", tmp_path / "pred"


@pytest.fixture
def window(qtbot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from pathviewer.gui.app import create_main_window

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.close()


def _names(panel) -> list[str]:
    return [item.key.removesuffix(".tif") for item in panel.items]


def test_triage_queue_ranks_walks_and_records_decisions(window, cohort, qtbot, tmp_path) -> None:
    csv, pred = cohort
    assert window.open_cohort(str(csv), raise_errors=True)
    panel = window.context.triage
    assert window.docks["triage"].isVisible()
    assert _names(panel) == ["s1", "s2", "s3", "s4"]  # cohort order, nothing scored yet
    window.context.heatmap.load_path(pred)
    assert _names(panel) == ["s2", "s4", "s3", "s1"]  # by score
    panel.set_order("disagreement")
    assert _names(panel) == ["s1", "s4", "s3", "s2"]  # s1 (0.2, label 1) is the surest miss
    panel.set_order("uncertainty")
    assert _names(panel) == ["s3", "s4", "s1", "s2"]  # 0.05, 0.20, 0.30, 0.40 from 0.5
    assert "3 called positive at 0.50 · 3 disagree" in panel.summary_label.text()

    # N opens the next undecided slide of the queue after the one shown (s1, the cohort's
    # first); a click opens any; T walks the slide's top regions.
    window.slide_view.setFocus()
    qtbot.keyClick(window.slide_view, Qt.Key.Key_N)
    assert Path(window.slide_view.current_slide.path).stem == "s2"
    qtbot.mouseClick(
        panel.list.viewport(),
        Qt.MouseButton.LeftButton,
        pos=panel.list.visualItemRect(panel.list.item(0)).center(),
    )
    assert Path(window.slide_view.current_slide.path).stem == "s3"
    window.slide_view.setFocus()
    qtbot.keyClick(window.slide_view, Qt.Key.Key_T)
    centre = window.slide_view.visible_level0_rect().center()
    assert 5 * 256 <= centre.x() <= 7 * 256 and 2 * 256 <= centre.y() <= 4 * 256

    panel.note_edit.setText("benign mimic")
    qtbot.mouseClick(panel.disagree_button, Qt.MouseButton.LeftButton)
    project = window.context.project.project
    assert project is not None
    (record,) = project.slide_reviews().values()
    assert (record.status, record.note, record.score) == ("disagree", "benign mimic", 0.55)
    assert "disagree: benign mimic" in panel.list.item(0).text()
    # N goes on to s4; Shift+N finds nothing undecided before it (s3 is decided).
    window.slide_view.setFocus()
    qtbot.keyClick(window.slide_view, Qt.Key.Key_N)
    assert Path(window.slide_view.current_slide.path).stem == "s4"
    qtbot.keyClick(window.slide_view, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert Path(window.slide_view.current_slide.path).stem == "s4"
    assert "No undecided slide" in window.statusBar().currentMessage()

    # Thumbnails carry the heatmap: the tinted region differs from the plain slide.
    qtbot.waitUntil(lambda: all(not panel.list.item(i).icon().isNull() for i in range(4)))
    image = panel.list.item(0).icon().pixmap(96, 96).toImage()
    region = image.pixelColor(int(96 * 6 / 8), int(96 * 3 / 8))
    plain = image.pixelColor(int(96 * 1 / 8), int(96 * 7 / 8))
    assert region != plain


def test_a_decision_without_a_project_opens_the_default_one(window, cohort) -> None:
    csv, _pred = cohort
    window.open_cohort(str(csv), raise_errors=True)
    panel = window.context.triage
    panel.decide("reviewed")
    project = window.context.project.project
    assert project is not None and [r.status for r in project.slide_reviews().values()] == [
        "reviewed"
    ]


def test_the_runs_operating_point_calls_the_slides(window, cohort) -> None:
    csv, pred = cohort
    point = {"threshold": 0.75, "sensitivity": 1.0, "specificity": 0.5, "split": "val"}
    info = {"method": "ngsd", "operating_point": {**point, "positives": 2, "negatives": 2}}
    (pred / "prediction.json").write_text(__import__("json").dumps(info))
    window.open_cohort(str(csv), raise_errors=True)
    controller = window.context.heatmap
    controller.load_path(pred)
    panel = window.context.triage
    assert panel.threshold == 0.75
    assert "1 called positive at 0.75" in panel.summary_label.text()
    panel.set_order("uncertainty")
    assert _names(panel)[0] == "s4"  # 0.70 is the nearest to 0.75
    spec = controller.legend._spec()
    assert spec.mark == 0.75 and spec.mark_label == "slide call ≥ 0.75"
    assert "sensitivity 1.00, specificity 0.50 on the val split" in (
        window.context.heatmap_panel.source_label.text()
    )
