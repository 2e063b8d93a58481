"""Review queue dock: ranking, review keys, counters, show in viewer, threaded thumbnails."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtGui import QAction, QKeySequence, QStandardItemModel  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from pathviewer.core.store import Project  # noqa: E402
from pathviewer.gui.context import build_features  # noqa: E402
from pathviewer.gui.review.panel import (  # noqa: E402
    ReviewGallery,
    ReviewPanel,
    ThumbnailLoader,
)

# (x, y, given, suggested, confidence); file order = rank, but rows are written shuffled with
# an explicit rank column so the test sees the model sort them.
FLAGS = [
    (0, 0, "Normal", "Tumor", 0.91),
    (64, 0, "Tumor", "Normal", 0.85),
    (128, 0, "Stroma", "Tumor", 0.80),
    (0, 64, "Normal", "Stroma", 0.72),
    (64, 64, "Tumor", "Stroma", 0.66),
    (128, 64, "Normal", "Tumor", 0.60),
]


def _slide(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    # Each 64 px box gets its own colour so a thumbnail shows which box was read.
    image = np.zeros((256, 256, 3), np.uint8)
    for y in range(0, 256, 64):
        for x in range(0, 256, 64):
            image[y : y + 64, x : x + 64] = rng.integers(0, 255, 3)
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def review_setup(tmp_path: Path) -> tuple[Project, Path, list[Path]]:
    slides = [_slide(tmp_path / f"s{i}.png", i) for i in range(2)]
    run = tmp_path / "run"
    run.mkdir()
    flags = run / "flags.csv"
    order = [3, 0, 5, 1, 4, 2]
    with flags.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["slide", "x", "y", "width", "height", "given", "suggested"]
            + ["confidence", "g", "rank"]
        )
        for rank in order:
            x, y, given, suggested, confidence = FLAGS[rank]
            # Relative to the run folder, as the refinement engine writes them.
            slide = f"../{slides[rank % 2].name}"
            writer.writerow(
                [slide, x, y, 64, 64, given, suggested, confidence, 1 - rank / 10, rank]
            )
    project = Project.create(tmp_path / "project")
    yield project, flags, slides
    project.close()


@pytest.fixture
def panel(qtbot, review_setup, tmp_path):
    project, flags, _slides = review_setup
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("review/author", "dr-test")
    widget = ReviewPanel(None, settings)
    qtbot.addWidget(widget)
    widget.set_project(project)
    widget.import_flags(flags)
    widget.resize(700, 600)
    widget.show()
    widget.gallery.setFocus()
    yield widget
    widget.shutdown()


def _current(panel: ReviewPanel) -> int:
    return panel.gallery.currentIndex().row()


def test_model_ranks_by_suspicion_and_stores_absolute_paths(panel, review_setup):
    _project, _flags, slides = review_setup
    items = panel.model.items
    assert [(i.flag.x, i.flag.y) for i in items] == [(f[0], f[1]) for f in FLAGS]
    assert [i.flag.rank for i in items] == sorted(i.flag.rank for i in items)
    assert {Path(i.flag.slide_path) for i in items} == {s.resolve() for s in slides}
    assert panel.model.counts() == (0, 6)
    assert panel.counts_label.text() == "reviewed 0 · left 6"
    assert _current(panel) == 0


def test_review_keys_store_decisions(panel, qtbot, review_setup):
    project = review_setup[0]
    classes = list(project.classes())
    gallery = panel.gallery

    QTest.keyClick(gallery, Qt.Key.Key_A)  # row 0: accept Normal -> Tumor
    assert _current(panel) == 1
    QTest.keyClick(gallery, Qt.Key.Key_K)  # row 1: keep Tumor
    QTest.keyClick(gallery, Qt.Key.Key_3)  # row 2: assign the 3rd class
    QTest.keyClick(gallery, Qt.Key.Key_U)  # row 3: unsure
    assert _current(panel) == 4

    items = panel.model.items
    labels = {r.id: r for r in project.patch_labels()}
    first, second, third, fourth = (labels[items[i].flag.patch_label_id] for i in range(4))
    assert (first.label, first.trusted) == ("Tumor", True)
    assert (second.label, second.trusted) == ("Tumor", True)
    assert (third.label, third.trusted) == (classes[2], True)
    assert (fourth.label, fourth.trusted) == ("Normal", False)
    history = project.review_history(first.id)
    assert [(h.decision, h.label, h.author) for h in history] == [("accept", "Tumor", "dr-test")]
    assert history[0].decided_at
    assert [h.decision for h in project.review_history(fourth.id)] == ["unsure"]

    # Counters follow the store; decided items stay greyed until a refresh drops them.
    assert project.review_counts() == (4, 2)
    assert panel.counts_label.text() == "reviewed 4 · left 2"
    assert panel.model.rowCount() == 6
    assert panel.model.data(panel.model.index(0), Qt.ItemDataRole.UserRole + 2) == (
        "accept",
        "Tumor",
    )
    panel.refresh()
    assert [(i.flag.x, i.flag.y) for i in panel.model.items] == [(64, 64), (128, 64)]
    panel.show_reviewed.setChecked(True)
    assert panel.model.rowCount() == 6


def test_arrows_move_and_digits_beyond_palette_do_nothing(panel, review_setup):
    project = review_setup[0]
    gallery = panel.gallery
    QTest.keyClick(gallery, Qt.Key.Key_Right)
    assert _current(panel) == 1
    QTest.keyClick(gallery, Qt.Key.Key_Left)
    assert _current(panel) == 0
    columns = max(1, gallery.viewport().width() // gallery.sizeHintForColumn(0))
    QTest.keyClick(gallery, Qt.Key.Key_Down)
    assert _current(panel) == min(columns, 5)
    QTest.keyClick(gallery, Qt.Key.Key_Up)
    assert _current(panel) == 0
    assert len(project.classes()) < 9
    QTest.keyClick(gallery, Qt.Key.Key_9)
    assert project.review_counts() == (0, 6)
    assert _current(panel) == 0
    # Ctrl+A is not a review key.
    QTest.keyClick(gallery, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    assert project.review_counts() == (0, 6)


def test_gallery_claims_review_keys_over_window_shortcuts(qtbot):
    from PySide6.QtWidgets import QMainWindow

    window = QMainWindow()
    qtbot.addWidget(window)
    gallery = ReviewGallery()
    window.setCentralWidget(gallery)
    fired = []
    for key in ("A", "1"):
        action = QAction(key, window)
        action.setShortcut(QKeySequence(key))
        action.triggered.connect(lambda _c=False, k=key: fired.append(k))
        window.addAction(action)
    requested = []
    gallery.decisionRequested.connect(lambda *args: requested.append(args))
    gallery.setModel(QStandardItemModel(2, 1))
    gallery.class_names = ["Tumor"]
    window.show()
    qtbot.waitExposed(window)
    gallery.setCurrentIndex(gallery.model().index(0, 0))
    gallery.setFocus()
    # Through the window, as a real key press travels (shortcut map first).
    handle = window.windowHandle()
    QTest.keyClick(handle, Qt.Key.Key_A)
    QTest.keyClick(handle, Qt.Key.Key_1)
    assert fired == []
    assert [r[1:] for r in requested] == [("accept", None), ("assign", "Tumor")]
    # Control: without the gallery's focus the window's shortcuts do fire.
    gallery.clearFocus()
    window.setFocus()
    QTest.keyClick(handle, Qt.Key.Key_A)
    assert fired == ["A"]


def test_thumbnails_load_off_the_ui_thread(panel, qtbot):
    model = panel.model
    qtbot.waitUntil(
        lambda: all(model.thumbnail(i.flag) is not None for i in model.items), timeout=10_000
    )
    assert model.loader.thread_ids
    assert threading.get_ident() not in model.loader.thread_ids
    # The patch read is the box: the (0, 0) box of slide 0 is one flat colour.
    image = model.thumbnail(model.items[0].flag)
    colours = {image.pixelColor(x, y).name() for x in (5, image.width() - 5) for y in (5, 60)}
    assert len(colours) == 1
    assert model.loader.slides.opened == 2  # each slide opened once, then cached


def test_unreadable_slide_gives_a_marked_thumbnail(qtbot, tmp_path):
    loader = ThumbnailLoader(size=32)
    results = []
    loader.loaded.connect(lambda *args: results.append(args))
    loader.request(1, str(tmp_path / "missing.svs"), (0, 0, 10, 10))
    qtbot.waitUntil(lambda: bool(results), timeout=5000)
    assert results[0][0] == 1 and results[0][1] is None and "missing.svs" in results[0][2]
    loader.wait()


def test_click_opens_and_centres_slide_with_box(qtbot, review_setup, tmp_path):
    from pathviewer.gui.main_window import MainWindow

    project, flags, slides = review_setup
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    qtbot.addWidget(window)
    build_features(window)
    panel = window.context.review
    panel.set_project(project)
    panel.import_flags(flags)
    window.docks["review"].show()
    window.show()
    qtbot.waitExposed(window)
    gallery = panel.gallery
    scene_items = []
    for row in (1, 2):  # slide 1, then slide 0: each click switches the slide
        rect = gallery.visualRect(panel.model.index(row))
        QTest.mouseClick(gallery.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
        flag = panel.model.items[row].flag
        view = window.slide_view
        assert Path(view.current_slide.path).resolve() == Path(flag.slide_path)
        centre = view.mapToScene(view.viewport().rect().center())
        assert abs(centre.x() - (flag.x + 32)) < 2 and abs(centre.y() - (flag.y + 32)) < 2
        highlight = panel.highlight
        assert highlight.scene() is view.scene()
        assert highlight.rect().getRect() == (flag.x, flag.y, 64.0, 64.0)
        scene_items.append(highlight)
    # Same slide again: the previous highlight is removed, not piled up.
    QTest.keyClick(gallery, Qt.Key.Key_Left)
    QTest.keyClick(gallery, Qt.Key.Key_Left)
    QTest.keyClick(gallery, Qt.Key.Key_Space)  # row 0, slide 0 (already open)
    from PySide6.QtWidgets import QGraphicsRectItem

    boxes = [i for i in window.slide_view.scene().items() if isinstance(i, QGraphicsRectItem)]
    assert boxes == [panel.highlight]
    assert panel.highlight.rect().getRect() == (0.0, 0.0, 64.0, 64.0)
    window.close()
    panel.shutdown()


def test_import_needs_project_and_is_all_or_nothing(qtbot, review_setup, tmp_path):
    from pathviewer.core.errors import PathViewerError

    project, flags, _slides = review_setup
    widget = ReviewPanel(None, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(widget)
    with pytest.raises(PathViewerError, match="project"):
        widget.import_flags(flags)
    widget.set_project(project)
    widget.import_flags(flags)
    bad = tmp_path / "bad.csv"
    bad.write_text(flags.read_text() + "../s0.png,1,2,three,4,Normal,Tumor,0.5,0.5,9\n")
    with pytest.raises(PathViewerError, match="row 8"):
        widget.import_flags(bad)
    assert len(project.review_queue()) == 6  # the previous queue is untouched
    widget.shutdown()


def test_panel_says_how_the_queue_is_ordered(qtbot, review_setup, tmp_path):
    import json

    from pathviewer.core.ranking import RANKINGS

    project, flags, _slides = review_setup
    settings = QSettings(str(tmp_path / "order.ini"), QSettings.Format.IniFormat)
    widget = ReviewPanel(None, settings)
    qtbot.addWidget(widget)
    widget.set_project(project)
    assert widget.order_label.text() == ""
    # A run folder without config.json: the file's own order.
    widget.import_flags(flags, with_labels=False)
    assert widget.order_label.text() == "Queue order: as in the imported flags.csv."
    (flags.parent / "config.json").write_text(json.dumps({"rank_by": "class_normalised"}))
    widget.import_flags(flags, with_labels=False)
    assert widget.order_label.text() == f"Queue order: {RANKINGS['class_normalised']}."
    # Remembered for the project: a new panel on the same project says the same.
    again = ReviewPanel(None, settings)
    qtbot.addWidget(again)
    again.set_project(project)
    assert again.order_label.text() == widget.order_label.text()
    widget.shutdown()
    again.shutdown()


def test_blind_review_hides_the_suggestion_and_reports_agreement(
    panel, qtbot, review_setup, monkeypatch
):
    from pathviewer.gui.review import panel as review_module

    project = review_setup[0]
    gallery, model = panel.gallery, panel.model
    warnings: list[str] = []
    monkeypatch.setattr(
        review_module.QMessageBox, "warning", lambda _parent, _title, text: warnings.append(text)
    )
    QTest.keyClick(gallery, Qt.Key.Key_A)  # row 0, suggestion shown: accept
    panel.blind_check.setChecked(True)
    assert panel.settings.value(review_module.BLIND_SETTING) in (True, "true")
    assert model.data(model.index(1), Qt.ItemDataRole.DisplayRole) == "Tumor → ?"
    assert "hidden (blind review)" in model.data(model.index(1), Qt.ItemDataRole.ToolTipRole)
    assert model.data(model.index(0), Qt.ItemDataRole.DisplayRole) == "Normal → Tumor"  # decided
    assert "blind review" in panel.keys_label.text()
    QTest.keyClick(gallery, Qt.Key.Key_A)  # cannot accept what is hidden
    assert warnings and "blind review" in warnings[0] and _current(panel) == 1
    qtbot.wait(30)
    QTest.keyClick(gallery, Qt.Key.Key_2)  # row 1 (Tumor -> Normal): assign Normal, unseen
    assert model.data(model.index(1), Qt.ItemDataRole.DisplayRole) == "Tumor → Normal"
    QTest.keyClick(gallery, Qt.Key.Key_K)  # row 2 (Stroma -> Tumor): keep, unseen
    shown = project.review_history(model.items[0].flag.patch_label_id)[0]
    blind = project.review_history(model.items[1].flag.patch_label_id)[0]
    assert shown.suggestion_shown is True and blind.suggestion_shown is False
    assert blind.seconds is not None and blind.seconds >= 0.02
    report = project.suggestion_agreement()
    assert report["shown"]["decisions"] == 1 and report["shown"]["rate"] == 1.0
    assert report["blind"]["decisions"] == 2 and report["blind"]["rate"] == 0.5
    assert "suggestion shown: 100% of 1" in panel.agreement_label.text()
    assert "blind: 50% of 2" in panel.agreement_label.text()


def test_decisions_for_every_flag_in_a_selected_region_and_the_flag_overlay(
    qtbot, review_setup, tmp_path, monkeypatch
):
    import shapely
    from PySide6.QtWidgets import QGraphicsPathItem

    from pathviewer.gui.main_window import MainWindow

    monkeypatch.setenv("PATHVIEWER_DATA_DIR", str(tmp_path / "data"))
    project, flags, _slides = review_setup
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    qtbot.addWidget(window)
    build_features(window)
    window.context.project.open(project.folder)
    panel = window.context.review
    panel.import_flags(flags)
    window.show()
    qtbot.waitExposed(window)
    assert panel.show_row(0)  # slide 0: its flags are at (0, 0), (128, 0) and (64, 64)
    annotations = window.context.annotations
    # Without a selected region nothing is decided.
    monkeypatch.setattr("pathviewer.gui.review.panel.QMessageBox.information", lambda *args: None)
    assert panel.decide_region("keep") == 0
    (region,) = annotations.add([shapely.box(0, 0, 200, 60)], "Lasso")
    annotations.select(region)
    assert panel.decide_region("keep") == 2
    items = panel.model.items
    decided = {
        (item.flag.x, item.flag.y)
        for row, item in enumerate(items)
        if panel.model.data(panel.model.index(row), Qt.ItemDataRole.UserRole + 2)
    }
    assert decided == {(0, 0), (128, 0)}
    assert panel.decide_region("keep") == 0  # nothing undecided is left inside
    # The overlay outlines the slide's flags: two grey (decided), one yellow.
    panel.flags_check.setChecked(True)
    group = panel.flags_item
    assert group is not None and group.scene() is window.slide_view.scene()
    grey, yellow = (c for c in group.childItems() if isinstance(c, QGraphicsPathItem))
    assert grey.path().boundingRect().getRect() == (0.0, 0.0, 192.0, 64.0)
    assert yellow.path().boundingRect().getRect() == (64.0, 64.0, 64.0, 64.0)
    # One undo takes back the whole region; the empty second try left no step of its own.
    assert panel.undo_stack.count() == 1
    panel.undo_stack.undo()
    assert project.review_counts() == (0, 6)
    grey, yellow = (c for c in panel.flags_item.childItems() if isinstance(c, QGraphicsPathItem))
    assert grey.path().isEmpty() and yellow.path().boundingRect().width() == 192.0
    window.close()
    panel.shutdown()


def test_adjudicating_the_patches_reviewers_disagree_on(panel, review_setup, monkeypatch):
    from pathviewer.gui.review import panel as review_module

    project = review_setup[0]
    warnings: list[str] = []
    monkeypatch.setattr(
        review_module.QMessageBox, "warning", lambda _parent, _title, text: warnings.append(text)
    )
    first, second = (item.flag.patch_label_id for item in panel.model.items[:2])
    project.record_review(first, "accept", author="A")
    project.record_review(first, "keep", author="B")  # Normal -> Tumor suggested: A Tumor, B Normal
    project.record_review(second, "keep", author="A")
    project.record_review(second, "keep", author="B")  # agreed: not disputed
    panel.set_adjudicating(True)
    assert panel.mode_combo.currentData() == "adjudicate"
    assert [item.flag.patch_label_id for item in panel.model.items] == [first]
    tip = panel.model.data(panel.model.index(0), Qt.ItemDataRole.ToolTipRole)
    assert "reviewers disagree — A: Tumor, B: Normal" in tip
    decision_role = Qt.ItemDataRole.UserRole + 2
    assert panel.model.data(panel.model.index(0), decision_role) is None  # not settled yet
    panel.gallery.setCurrentIndex(panel.model.index(0))
    QTest.keyClick(panel.gallery, Qt.Key.Key_U)  # unsure settles nothing
    assert warnings and "adjudication settles" in warnings[0]
    QTest.keyClick(panel.gallery, Qt.Key.Key_A)  # the suggestion, Tumor
    assert project.disputed() == {}
    record = next(r for r in project.patch_labels() if r.id == first)
    assert (record.label, record.trusted) == ("Tumor", True)
    assert "adjudicated" in [row[2] for row in project.audit_rows()]
    panel.set_adjudicating(False)
    assert panel.mode_combo.currentData() == "review"


def test_a_finished_project_refinement_run_fills_the_review_queue(qtbot, review_setup, tmp_path):
    from pathviewer.gui.main_window import MainWindow
    from pathviewer.runs import write_run_info

    project, flags, _slides = review_setup
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    qtbot.addWidget(window)
    build_features(window)
    window.context.project.open(project.folder)
    panel = window.context.review
    run_dir = flags.parent
    write_run_info(run_dir, method="ngsd", status="completed")
    window.context.training.trainingFinished.emit(run_dir)  # a slide model: nothing to review
    assert panel.model.rowCount() == 0
    write_run_info(run_dir, method="refine-project", status="completed")
    window.context.training.trainingFinished.emit(run_dir)
    assert panel.model.rowCount() == len(FLAGS)
    assert window.docks["review"].isVisible() or not window.isVisible()
    window.close()
    panel.shutdown()


def _trusted_boxes(project: Project, out: Path) -> set[tuple[str, str]]:
    project.export_trusted_labels_csv(out, only_trusted=True)
    with out.open(newline="") as handle:
        return {(row["x"], row["y"]) for row in csv.DictReader(handle)}


def test_ctrl_z_takes_a_decision_back_and_redo_records_it_again(panel, review_setup, tmp_path):
    project = review_setup[0]
    model, gallery = panel.model, panel.gallery
    handle = panel.windowHandle()  # through the shortcut map, as a real key press travels
    decision = Qt.ItemDataRole.UserRole + 2
    QTest.keyClick(gallery, Qt.Key.Key_A)  # row 0: accept Normal -> Tumor
    QTest.keyClick(gallery, Qt.Key.Key_K)  # row 1: keep Tumor
    first = model.items[0].flag.patch_label_id
    assert _trusted_boxes(project, tmp_path / "a.csv") == {("0", "0"), ("64", "0")}
    assert _current(panel) == 2

    QTest.keyClick(handle, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo keep
    QTest.keyClick(handle, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # undo accept
    assert _current(panel) == 0  # the queue went back to the patch to decide again
    assert model.data(model.index(0), decision) is None
    assert model.data(model.index(1), decision) is None
    assert _trusted_boxes(project, tmp_path / "b.csv") == set()
    label = project.patch_label(first)
    assert (label.label, label.trusted) == ("Normal", False)
    assert project.review_counts() == (0, 6)
    assert panel.counts_label.text() == "reviewed 0 · left 6"
    assert [h.retracted_by for h in project.review_history(first)] == ["dr-test"]
    assert "review retracted" in [row[2] for row in project.audit_rows()]

    redo = Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    QTest.keyClick(handle, Qt.Key.Key_Z, redo)  # redo accept
    assert model.data(model.index(0), decision) == ("accept", "Tumor")
    QTest.keyClick(handle, Qt.Key.Key_Y, Qt.KeyboardModifier.ControlModifier)  # redo keep
    assert _trusted_boxes(project, tmp_path / "c.csv") == {("0", "0"), ("64", "0")}
    history = project.review_history(first)
    assert [(h.decision, h.retracted_at is None) for h in history] == [
        ("accept", False),
        ("accept", True),
    ]
    assert project.review_counts() == (2, 4)


def test_a_refused_undo_leaves_the_decision_standing_and_redo_records_nothing(
    panel, review_setup, monkeypatch
):
    from pathviewer.core.store import ProjectError
    from pathviewer.gui.review import panel as review_module

    project = review_setup[0]
    model = panel.model
    warnings: list[str] = []
    monkeypatch.setattr(
        review_module.QMessageBox, "warning", lambda _parent, _title, text: warnings.append(text)
    )
    panel.decide(0, "keep")
    first = model.items[0].flag.patch_label_id

    def refuse(*_args, **_kwargs):
        raise ProjectError("the project is locked by another process")

    undecide = model.undecide
    monkeypatch.setattr(model, "undecide", refuse)
    panel.undo_stack.undo()  # the store refuses: the decision still stands...
    assert warnings and "was not undone" in warnings[0]
    monkeypatch.setattr(model, "undecide", undecide)
    panel.undo_stack.redo()  # ...so redo has nothing to record again
    history = project.review_history(first)
    assert [(h.decision, h.retracted_at is None) for h in history] == [("keep", True)]
    assert project.review_counts() == (1, 5)
    panel.undo_stack.undo()  # and a later undo still takes it back
    assert project.review_counts() == (0, 6)


def test_undo_after_a_refresh_and_in_blind_review(panel, review_setup):
    project = review_setup[0]
    model = panel.model
    QTest.keyClick(panel.gallery, Qt.Key.Key_K)
    panel.refresh()  # the decided patch leaves the gallery...
    assert model.rowCount() == 5
    panel.undo_stack.undo()  # ...and comes back, undecided, to be decided again
    assert model.rowCount() == 6 and _current(panel) == 0
    assert project.review_counts() == (0, 6)

    # Blind review: once a decision showed the suggestion, undoing it does not hide it again,
    # and the new decision is stored as taken with the suggestion seen.
    panel.set_blind(True)
    assert model.hides_suggestion(1)
    panel.decide(1, "keep")
    panel.undo_stack.undo()
    assert not model.hides_suggestion(1)
    panel.decide(1, "accept")
    history = project.review_history(model.items[1].flag.patch_label_id)
    assert [h.suggestion_shown for h in history] == [False, True]


def test_edit_undo_follows_the_focus_and_the_viewer_follows_the_queue(
    qtbot, review_setup, tmp_path, monkeypatch
):
    from pathviewer.gui.main_window import MainWindow

    project, flags, _slides = review_setup
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings, threads=1)
    qtbot.addWidget(window)
    context = build_features(window)
    panel = context.review
    panel.set_project(project)
    panel.import_flags(flags)
    panel.show_dock()
    window.show()
    qtbot.waitExposed(window)
    gallery, view = panel.gallery, window.slide_view
    gallery.setFocus()
    qtbot.waitUntil(gallery.hasFocus)

    def centred_on(row: int) -> bool:
        flag = panel.model.items[row].flag
        if Path(view.current_slide.path).resolve() != Path(flag.slide_path):
            return False
        centre = view.mapToScene(view.viewport().rect().center())
        return abs(centre.x() - (flag.x + 32)) < 2 and abs(centre.y() - (flag.y + 32)) < 2

    QTest.keyClick(gallery, Qt.Key.Key_Right)  # row 1, on the other slide
    assert centred_on(1)
    assert panel.highlight.rect().getRect() == (64.0, 0.0, 64.0, 64.0)
    QTest.keyClick(gallery, Qt.Key.Key_Right)  # row 2, slide 0: opened, so shown whole
    assert centred_on(2)
    view.set_scale(1.0)  # a zoom at which the patches are visible is kept
    gallery.setCurrentIndex(panel.model.index(4))  # as a click does: slide 0 again
    assert centred_on(4) and view.scale_factor() == pytest.approx(1.0)
    # Where a patch would be a few pixels on screen, the view zooms in to show it.
    flag = panel.model.items[4].flag
    monkeypatch.setattr(view, "scale_factor", lambda: 0.05)
    assert 64 * panel._scale_for(flag) >= 24
    monkeypatch.undo()
    QTest.keyClick(gallery, Qt.Key.Key_Left)
    QTest.keyClick(gallery, Qt.Key.Key_Left)
    QTest.keyClick(gallery, Qt.Key.Key_Left)  # row 1
    QTest.keyClick(gallery, Qt.Key.Key_A)  # decided: the queue moves on to row 2
    assert _current(panel) == 2 and centred_on(2)

    # Edit > Undo acts on the review while the dock has the focus...
    undo = context.annotations.undo_action
    assert context.annotations.undo_group.activeStack() is panel.undo_stack
    assert undo.text().startswith("&Undo review")
    undo.trigger()
    assert _current(panel) == 1 and centred_on(1)
    assert project.review_counts() == (0, 6)
    # ...and on the slide's annotations elsewhere.
    view.setFocus()
    qtbot.waitUntil(view.hasFocus)
    assert context.annotations.undo_group.activeStack() is context.annotations.slide_stack
    assert context.annotations.slide_stack is not None

    # Follow in viewer off (remembered): moving no longer moves the view.
    panel.follow_check.setChecked(False)
    gallery.setFocus()
    before = view.mapToScene(view.viewport().rect().center())
    QTest.keyClick(gallery, Qt.Key.Key_Right)
    assert view.mapToScene(view.viewport().rect().center()) == before
    assert str(settings.value("review/follow")).lower() == "false"
    window.close()
    panel.shutdown()


def test_gallery_columns_share_the_dock_width(panel, qtbot):
    gallery = panel.gallery
    columns = {}
    for width in (700, 1000):
        panel.resize(width, 600)
        qtbot.waitUntil(lambda w=width: panel.width() == w)
        gallery.doItemsLayout()
        rects = [gallery.visualRect(panel.model.index(r)) for r in range(6)]
        first_row = [r for r in rects if r.top() == rects[0].top()]
        columns[width] = len(first_row)
        # The tiles fill the row: no strip wider than a scroll bar is left on the right.
        bar = gallery.style().pixelMetric(gallery.style().PixelMetric.PM_ScrollBarExtent)
        leftover = gallery.viewport().width() - first_row[-1].right()
        assert leftover <= bar + 2 * gallery.spacing() + len(first_row)
    assert columns[1000] > columns[700]


def test_the_queue_can_be_filtered_by_the_label_given(panel, qtbot):
    combo = panel.given_combo
    names = [combo.itemText(i) for i in range(combo.count())]
    assert names == ["Any label", "Labelled Normal", "Labelled Stroma", "Labelled Tumor"]
    combo.setCurrentIndex(combo.findData("Normal"))
    # Only the Normal labels, in the queue's order (ranks 0, 3, 5 of FLAGS).
    assert [(i.flag.x, i.flag.y) for i in panel.model.items] == [(0, 0), (0, 64), (128, 64)]
    assert _current(panel) == 0
    panel.gallery.setFocus()
    qtbot.keyClick(panel.gallery, Qt.Key.Key_A)  # a decision in the filtered queue
    assert panel.model.project is not None and panel.model.project.review_counts() == (1, 5)
    panel.model.refresh()  # the choice survives a reload
    assert combo.currentData() == "Normal" and len(panel.model.items) == 2
    combo.setCurrentIndex(0)
    assert combo.currentData() is None and len(panel.model.items) == 5
