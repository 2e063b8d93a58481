"""The crash-safe project store: schema, migrations, edits, reviews, queue, crash safety."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from shapely.geometry import Point, Polygon, box

from pathviewer.core import store as store_module
from pathviewer.core.annotations import Annotation
from pathviewer.core.errors import CohortError
from pathviewer.core.store import (
    DB_NAME,
    MIGRATIONS,
    SCHEMA_VERSION,
    Project,
    ProjectError,
    migrate,
    schema_version,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Project:
    with Project.create(tmp_path / "proj") as p:
        yield p


def test_create_sets_wal_foreign_keys_version_and_default_classes(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    conn = project.connection
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert schema_version(conn) == SCHEMA_VERSION == len(MIGRATIONS)
    assert project.classes()["Tumor"] == (200, 0, 0)
    project.close()
    with pytest.raises(ProjectError, match="already holds a project"):
        Project.create(tmp_path / "p")
    with pytest.raises(ProjectError, match="not a PathViewer project"):
        Project.open(tmp_path / "nothing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProjectError, match="not a usable project database"):
        Project.open(tmp_path / "junk")


def test_foreign_keys_enforced(project: Project) -> None:
    with pytest.raises(ProjectError, match="FOREIGN KEY"):
        project.add_annotation(999, Annotation(box(0, 0, 1, 1), "Tumor"))
    with pytest.raises(ProjectError, match="FOREIGN KEY"):
        project.add_patch_labels([(42, 0, 0, 10, 10, "Tumor")], source="annotator")
    assert project.connection.execute("SELECT COUNT(*) FROM annotations").fetchone()[0] == 0
    # Deleting a slide cascades to everything that hangs on it.
    slide = project.add_slide("/data/a.svs")
    project.add_annotation(slide, Annotation(box(0, 0, 5, 5), "Tumor"))
    (label_id,) = project.add_patch_labels([(slide, 0, 0, 10, 10, "Tumor")], source="model")
    project.record_review(label_id, "assign", "Normal", author="ann")
    project.remove_slide(slide)
    for table in ("annotations", "patch_labels", "reviews"):
        count = project.connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        assert count == 0, table


def test_migrates_a_version_1_database(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute("INSERT INTO slides(path, name, added) VALUES ('/s/one.svs', 'one', '2024-01-01')")
    conn.execute(
        "INSERT INTO patch_labels(slide_id, x, y, width, height, label, source, created) "
        "VALUES (1, 0, 0, 224, 224, 'Tumor', 'imported', '2024-01-01')"
    )
    conn.close()
    with Project.open(folder) as project:
        assert schema_version(project.connection) == SCHEMA_VERSION
        tables = {
            r[0]
            for r in project.connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert "flags" in tables
        # Old data survives the upgrade and the new table works.
        assert [s.path for s in project.slides()] == ["/s/one.svs"]
        assert project.patch_labels()[0].label == "Tumor"
        assert project.review_queue() == []


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    Project.create(tmp_path / "p").close()
    conn = sqlite3.connect(tmp_path / "p" / DB_NAME)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ProjectError, match="newer than this PathViewer"):
        Project.open(tmp_path / "p")


def test_annotation_crud_bbox_query_and_listeners(project: Project) -> None:
    slide = project.add_slide("/data/s1.svs", label="tumor", split="train")
    assert project.add_slide("/data/s1.svs") == slide  # idempotent by path
    other = project.add_slide("/data/s2.svs")
    assert [s.name for s in project.slides()] == ["s1", "s2"]
    events: list[tuple[str, list[int]]] = []
    project.add_listener(lambda what, ids: events.append((what, list(ids))))
    donut = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)], [[(40, 40), (60, 40), (60, 60)]])
    a = project.add_annotation(slide, Annotation(donut, "Tumor", (1, 2, 3), name="d"), "alice")
    b = project.add_annotation(slide, Annotation(Point(500, 500), "Other"), "bob")
    project.add_annotation(other, Annotation(box(0, 0, 10, 10), "Normal"))
    assert events[0] == ("annotations", [a])
    record = project.annotation(a)
    assert record.annotation.geometry.equals(donut)
    assert record.annotation.color == (1, 2, 3) and record.author == "alice"
    # The bbox filter uses real intersection, not just bounding boxes: this view lies inside the
    # triangular hole, so within the donut's bounds but not touching it.
    assert [r.id for r in project.annotations(slide, bbox=(200, 200, 600, 600))] == [b]
    assert [r.id for r in project.annotations(slide, bbox=(50, 43, 51, 44))] == []
    assert [r.id for r in project.annotations(slide, bbox=(90, 90, 95, 95))] == [a]
    assert len(project.annotations(slide)) == 2
    created = record.created
    time.sleep(0.01)
    project.update_annotation(a, Annotation(box(0, 0, 20, 20), "Stroma"), author="carol")
    updated = project.annotation(a)
    assert updated.annotation.class_name == "Stroma" and updated.author == "carol"
    assert updated.created == created and updated.modified > created
    project.delete_annotation(a)
    project.delete_annotation(a)  # already gone: fine (undo/redo)
    assert [r.id for r in project.annotations(slide)] == [b]
    with pytest.raises(ProjectError, match="no annotation"):
        project.update_annotation(a, Annotation(box(0, 0, 1, 1)))


def test_a_stored_bad_colour_does_not_break_reading_the_slide(project: Project) -> None:
    # Issue 15 item 1: a colour stored as "#12c-53e8" by an older version made every read of the
    # slide raise; it now reads as "no own colour" (the class colour is drawn).
    slide = project.add_slide("/data/s1.svs")
    good = project.add_annotation(slide, Annotation(box(0, 0, 10, 10), "Tumor", (1, 2, 3)))
    bad = project.add_annotation(slide, Annotation(box(20, 20, 30, 30), "Tumor", (4, 5, 6)))
    with project.transaction() as conn:
        conn.execute("UPDATE annotations SET color = '#12c-53e8' WHERE id = ?", (bad,))
        conn.execute("UPDATE classes SET color = 'nonsense' WHERE name = 'Tumor'")
    colours = {r.id: r.annotation.color for r in project.annotations(slide)}
    assert colours == {good: (1, 2, 3), bad: None}
    assert project.annotation(bad).annotation.color is None
    assert project.classes()["Tumor"] == (128, 128, 128)


def test_a_bad_colour_is_refused_on_write(project: Project) -> None:
    slide = project.add_slide("/data/s1.svs")
    with pytest.raises(ProjectError, match=r"colour \(300, -5, 1000\)"):
        project.add_annotation(slide, Annotation(box(0, 0, 10, 10), "Tumor", (300, -5, 1000)))
    with pytest.raises(ProjectError, match="colour"):
        project.set_class("Odd", (0, float("nan"), 0))  # type: ignore[arg-type]
    assert project.annotations(slide) == [] and "Odd" not in project.classes()


def test_transaction_groups_edits_atomically(project: Project) -> None:
    slide = project.add_slide("/data/s.svs")
    with pytest.raises(RuntimeError), project.transaction():
        project.add_annotation(slide, Annotation(box(0, 0, 1, 1), "Tumor"))
        project.add_annotation(slide, Annotation(box(2, 2, 3, 3), "Tumor"))
        raise RuntimeError("boom")
    assert project.annotations(slide) == []
    # A failing bulk import inserts nothing either.
    with pytest.raises(ProjectError):
        project.add_annotations(
            slide, [Annotation(box(0, 0, 1, 1)), Annotation(Polygon(), "Tumor")]
        )
    assert project.annotations(slide) == []


def test_classes_palette(project: Project) -> None:
    project.set_class("Necrosis", (10, 20, 30))
    project.set_class("Tumor", (255, 0, 0))
    classes = project.classes()
    assert classes["Necrosis"] == (10, 20, 30) and classes["Tumor"] == (255, 0, 0)
    project.delete_class("Necrosis")
    assert "Necrosis" not in project.classes()


def _write_flags(path: Path, rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["slide", "x", "y", "width", "height", "given", "suggested", "confidence", "g"]
        )
        writer.writerows(rows)
    return path


def test_review_queue_decisions_history_and_export(project: Project, tmp_path: Path) -> None:
    slide = project.add_slide("/data/a.svs")
    model_ids = project.add_patch_labels(
        [
            (slide, 0, 0, 224, 224, "Tumor"),
            {
                "slide": "/data/b.svs",
                "x": 224,
                "y": 0,
                "width": 224,
                "height": 224,
                "label": "Normal",
            },
        ],
        source="imported",
    )
    assert [p.trusted for p in project.patch_labels()] == [False, False]
    project.add_patch_labels([(slide, 448, 0, 224, 224, "Tumor")], source="model")
    flags = _write_flags(
        tmp_path / "flags.csv",
        [
            ["/data/a.svs", 0, 0, 224, 224, "Tumor", "Normal", 0.91, 2.5],
            ["/data/b.svs", 224, 0, 224, 224, "Normal", "Tumor", 0.80, 1.5],
            ["/data/c.svs", 0, 224, 224, 224, "Stroma", "Tumor", 0.70, ""],
            ["/data/a.svs", 224, 224, 224, 224, "Normal", "Stroma", 0.60, 0.5],
        ],
    )
    assert project.import_flags(flags) == 4
    queue = project.review_queue()
    assert [f.rank for f in queue] == [0, 1, 2, 3]
    # Flags link to the stored label of their box; missing boxes/slides are created.
    assert queue[0].patch_label_id == model_ids[0] and queue[1].patch_label_id == model_ids[1]
    assert queue[2].slide_path == "/data/c.svs" and queue[2].g is None
    assert project.review_counts() == (0, 4)

    accept = project.record_review(queue[0].patch_label_id, "accept", author="ann")
    project.record_review(queue[1].patch_label_id, "keep", author="ann")
    project.record_review(queue[2].patch_label_id, "unsure", author="bob")
    project.record_review(queue[2].patch_label_id, "assign", "Normal", author="ann")
    assert accept > 0
    label0 = project.patch_label(queue[0].patch_label_id)
    assert (label0.label, label0.trusted) == ("Normal", True)
    assert project.patch_label(queue[1].patch_label_id).label == "Normal"
    history = project.review_history(queue[2].patch_label_id)
    assert [(h.decision, h.label, h.author) for h in history] == [
        ("unsure", None, "bob"),
        ("assign", "Normal", "ann"),
    ]
    assert all(h.decided_at for h in history)
    # The queue now shows only what is still suspect.
    assert [f.rank for f in project.review_queue()] == [3]
    assert len(project.review_queue(only_pending=False)) == 4
    assert project.review_counts() == (3, 1)
    with pytest.raises(ProjectError, match="'assign' needs a label"):
        project.record_review(queue[3].patch_label_id, "assign")
    with pytest.raises(ProjectError, match="is not one of"):
        project.record_review(queue[3].patch_label_id, "maybe")

    out = tmp_path / "labels.csv"
    n = project.export_trusted_labels_csv(out)
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert n == len(rows) == 4  # model prediction left out
    assert list(rows[0]) == ["slide", "x", "y", "width", "height", "label", "trusted"]
    by_box = {(r["slide"], r["x"], r["y"]): (r["label"], r["trusted"]) for r in rows}
    assert by_box[("/data/a.svs", "0", "0")] == ("Normal", "1")
    assert by_box[("/data/b.svs", "224", "0")] == ("Normal", "1")
    assert by_box[("/data/c.svs", "0", "224")] == ("Normal", "1")
    assert by_box[("/data/a.svs", "224", "224")] == ("Normal", "0")
    assert project.export_trusted_labels_csv(out, only_trusted=True) == 3


def test_import_flags_is_all_or_nothing(project: Project, tmp_path: Path) -> None:
    bad = _write_flags(
        tmp_path / "bad.csv",
        [
            ["/data/a.svs", 0, 0, 224, 224, "Tumor", "Normal", 0.9, 1],
            ["/data/a.svs", "left", 0, 224, 224, "Tumor", "Normal", 0.9, 1],
        ],
    )
    with pytest.raises(CohortError, match="row 3"):
        project.import_flags(bad)
    assert project.review_queue(only_pending=False) == [] and project.slides() == []
    (tmp_path / "cols.csv").write_text("slide,x\n/a,1\n")
    with pytest.raises(CohortError, match="missing column.* y, width, height, given, suggested"):
        project.import_flags(tmp_path / "cols.csv")


def test_runs(project: Project) -> None:
    run = project.add_run("noisy", "/runs/1", {"epochs": 3})
    project.update_run(run, status="done")
    project.add_run("ngsd")
    runs = project.runs()
    assert [(r.kind, r.status) for r in runs] == [("noisy", "done"), ("ngsd", "running")]
    assert runs[0].config == {"epochs": 3} and runs[0].path == "/runs/1"
    assert [r.id for r in project.runs("ngsd")] == [runs[1].id]
    with pytest.raises(ProjectError):
        project.update_run(999, status="done")


def test_threads_each_get_a_connection(project: Project) -> None:
    slide = project.add_slide("/data/t.svs")
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(20):
                project.add_annotation(slide, Annotation(box(offset + i, 0, offset + i + 1, 1)))
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(project.annotations(slide)) == 60
    assert len(project._connections) == 4  # main thread + 3 workers


_CRASH_SCRIPT = textwrap.dedent(
    """
    import sys
    from shapely.geometry import box
    from pathviewer.core.annotations import Annotation
    from pathviewer.core.store import Project

    project = Project.open(sys.argv[1])
    slide = project.add_slide("/data/crash.svs")
    i = 0
    while True:
        kind = i % 3
        if kind == 0:
            ident = project.add_annotation(slide, Annotation(box(i, i, i + 10, i + 10), "Tumor"))
        elif kind == 1:
            (ident,) = project.add_patch_labels([(slide, i, 0, 224, 224, "Normal")], "annotator")
        else:
            ident = project.add_run("noisy", config={"i": i})
        # Printed only once the edit method has returned, i.e. after COMMIT.
        print(kind, ident, i, flush=True)
        i += 1
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_mid_edit_loses_no_committed_edit(tmp_path: Path) -> None:
    folder = tmp_path / "crash"
    Project.create(folder).close()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    process = subprocess.Popen(
        [sys.executable, "-c", _CRASH_SCRIPT, str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    committed: list[tuple[int, int, int]] = []
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    try:
        while len(committed) < 150 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            kind, ident, i = (int(v) for v in line.split())
            committed.append((kind, ident, i))
    finally:
        # Kill while it is writing the next edits, without any chance to clean up.
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # Lines already in the pipe were committed too.
        assert process.stdout is not None
        for line in process.stdout.read().splitlines():
            parts = line.split()
            if len(parts) == 3:
                committed.append(tuple(int(v) for v in parts))  # type: ignore[arg-type]
    assert process.returncode == -signal.SIGKILL
    assert len(committed) >= 150, "the editing subprocess did not get going"
    with Project.open(folder) as project:
        assert project.integrity_check() == "ok"
        slide = project.slide_id("/data/crash.svs")
        assert slide is not None
        annotations = {r.id: r for r in project.annotations(slide)}
        labels = {p.id: p for p in project.patch_labels()}
        runs = {r.id: r for r in project.runs()}
        for kind, ident, i in committed:
            if kind == 0:
                assert annotations[ident].annotation.geometry.bounds == (i, i, i + 10, i + 10)
            elif kind == 1:
                assert (labels[ident].x, labels[ident].label) == (i, "Normal")
            else:
                assert runs[ident].config == {"i": i}
        # Nothing beyond the last reported edit but at most the one in flight.
        total = len(annotations) + len(labels) + len(runs)
        assert len(committed) <= total <= len(committed) + 1


def test_module_has_no_qt_import() -> None:
    source = Path(store_module.__file__).read_text()
    assert "PySide6" not in source and "pyqtgraph" not in source


def test_a_locked_project_gives_one_line_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Project, "busy_timeout", 0.1)
    project = Project.create(tmp_path / "p")
    slide = project.add_slide(tmp_path / "a.tif")
    other = sqlite3.connect(project.db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(ProjectError, match="locked by another program.*nothing was saved"):
            project.add_slide(tmp_path / "b.tif")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert [s.id for s in project.slides()] == [slide]
    project.add_slide(tmp_path / "b.tif")  # the lock is gone: edits work again
    assert len(project.slides()) == 2
    project.close()


def test_a_full_disk_gives_one_line_and_rolls_back(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    slide = project.add_slide(tmp_path / "a.tif")
    pages = project.connection.execute("PRAGMA page_count").fetchone()[0]
    project.connection.execute(f"PRAGMA max_page_count = {pages + 1}")  # the disk is now full
    # Many vertices: each annotation's geometry takes several pages.
    ring = Point(0, 0).buffer(100, quad_segs=4000)
    with pytest.raises(ProjectError, match="disk is full; nothing was saved"):
        project.add_annotations(slide, [Annotation(ring, "Tumor") for _ in range(20)])
    assert project.annotations(slide) == []
    project.close()


def test_annotations_keep_their_uuid_lock_and_metadata_through_the_project(tmp_path) -> None:
    """A QuPath object imported into a project and exported again loses nothing."""
    import dataclasses
    import json

    import shapely

    from pathviewer.core.annotations import Annotation, read_annotations

    project = Project.create(tmp_path / "p")
    slide = project.add_slide("s.svs")
    qupath = Annotation(
        shapely.box(0, 0, 10, 10),
        "Tumor: Positive",
        uid="5b8e8c4e-4f4b-4d3e-9b8f-1d2c3b4a5f60",
        locked=True,
        metadata={"reviewer": "AB"},
        measurements={"Num Detections": 12.0},
    )
    drawn = Annotation(shapely.box(20, 20, 30, 30), "Normal")
    qupath_id, drawn_id = project.add_annotations(slide, [qupath, drawn])
    stored = project.annotation(qupath_id).annotation
    assert dataclasses.replace(stored, color=None) == qupath  # the store gives it a colour
    uid = project.annotation(drawn_id).annotation.uid
    assert uid and len(uid) == 36  # a drawn annotation gets a UUID when stored ...
    moved = Annotation(shapely.box(25, 25, 35, 35), "Normal")
    project.update_annotation(drawn_id, moved)
    assert project.annotation(drawn_id).annotation.uid == uid  # ... kept through an edit
    out = tmp_path / "out.geojson"
    project.export_annotations(slide, out)
    features = json.loads(out.read_text())["features"]
    assert features[0]["id"] == qupath.uid and features[1]["id"] == uid
    assert dataclasses.replace(read_annotations(out)[0], color=None) == qupath


def test_annotations_of_a_version_2_database_read_with_stable_uuids(tmp_path: Path) -> None:
    import shapely

    folder = tmp_path / "old"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    assert migrate(conn, target=2) == 2
    conn.execute("INSERT INTO slides(path, name, added) VALUES ('/s/one.svs', 'one', '2024-01-01')")
    conn.execute(
        "INSERT INTO annotations(slide_id, geometry, min_x, min_y, max_x, max_y, class_name, "
        "created, modified) VALUES (1, ?, 0, 0, 5, 5, 'Tumor', '2024-01-01', '2024-01-01')",
        (shapely.to_wkb(shapely.box(0, 0, 5, 5)),),
    )
    conn.close()
    with Project.open(folder) as project:
        assert schema_version(project.connection) == SCHEMA_VERSION == 7
        (record,) = project.annotations(1)
        uid = record.annotation.uid
        assert uid and len(uid) == 36 and not record.annotation.locked
    with Project.open(folder) as project:
        assert project.annotations(1)[0].annotation.uid == uid  # the same on every read


def test_slide_triage_decisions_keep_history_and_the_newest_wins(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    one, two = project.add_slide("/s/one.svs"), project.add_slide("/s/two.svs")
    assert project.slide_reviews() == {}
    project.record_slide_review(one, "reviewed", score=0.8, author="AB")
    project.record_slide_review(one, "disagree", "focus at the margin is DCIS", 0.8, "AB")
    project.record_slide_review(two, "agree", author="CD")
    current = project.slide_reviews()
    assert current[one].status == "disagree" and current[one].note.startswith("focus")
    assert current[one].score == pytest.approx(0.8) and current[two].author == "CD"
    assert [r.status for r in project.slide_review_history(one)] == ["reviewed", "disagree"]
    with pytest.raises(ProjectError, match="not one of"):
        project.record_slide_review(one, "maybe")
    with pytest.raises(ProjectError, match="no slide with id 99"):
        project.record_slide_review(99, "agree")
    project.remove_slide(one)
    assert set(project.slide_reviews()) == {two}


def test_a_version_3_project_gains_slide_reviews(tmp_path: Path) -> None:
    folder = tmp_path / "v3"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    assert migrate(conn, target=3) == 3
    conn.execute("INSERT INTO slides(path, name, added) VALUES ('/s/one.svs', 'one', '2024-01-01')")
    conn.close()
    with Project.open(folder) as project:
        assert schema_version(project.connection) == SCHEMA_VERSION
        project.record_slide_review(1, "agree")
        assert project.slide_reviews()[1].status == "agree"


def test_suggestion_agreement_separates_blind_from_shown_review(tmp_path: Path) -> None:
    project = Project.create(tmp_path / "p")
    flags = tmp_path / "flags.csv"
    rows = [f"/s/one.svs,{i * 10},0,10,10,Normal,Tumor,0.9,0.8" for i in range(6)]
    flags.write_text("slide,x,y,width,height,given,suggested,confidence,g\n" + "\n".join(rows))
    assert project.import_flags(flags) == 6
    ids = [flag.patch_label_id for flag in project.review_queue()]
    # Shown: three of three follow the suggestion.  Blind: one of two lands on it.
    project.record_review(ids[0], "accept", author="AB", suggestion_shown=True, seconds=2.0)
    project.record_review(ids[1], "accept", author="AB", suggestion_shown=True, seconds=3.0)
    project.record_review(ids[2], "assign", "Tumor", "AB", suggestion_shown=True, seconds=4.0)
    project.record_review(ids[3], "assign", "Tumor", "AB", suggestion_shown=False, seconds=9.0)
    project.record_review(ids[4], "keep", author="AB", suggestion_shown=False, seconds=7.0)
    project.record_review(ids[5], "unsure", author="AB", suggestion_shown=False)
    report = project.suggestion_agreement()
    assert report["shown"] == {"decisions": 3, "agree": 3, "rate": 1.0, "median_seconds": 3.0}
    assert report["blind"] == {"decisions": 2, "agree": 1, "rate": 0.5, "median_seconds": 8.0}
    assert report["unrecorded"]["rate"] is None
    (first,) = project.review_history(ids[3])
    assert first.suggestion_shown is False and first.seconds == 9.0


def test_audit_trail_lists_every_kind_of_change_in_time_order(tmp_path: Path, capsys) -> None:
    import json as json_module

    from pathviewer.cli import main

    folder = tmp_path / "p"
    project = Project.create(folder)
    slide = project.add_slide("/s/one.svs")
    annotation = project.add_annotations(slide, [Annotation(box(0, 0, 5, 5), "Tumor")])[0]
    time.sleep(0.01)
    project.update_annotation(annotation, Annotation(box(0, 0, 6, 6), "Tumor"))
    flags = tmp_path / "flags.csv"
    flags.write_text(
        "slide,x,y,width,height,given,suggested,confidence,g\n/s/one.svs,0,0,10,10,Normal,Tumor,0.9,0.8\n"
    )
    project.import_flags(flags)
    (flag,) = project.review_queue()
    project.record_review(
        flag.patch_label_id, "accept", author="AB", suggestion_shown=False, seconds=4.2
    )
    project.record_slide_review(slide, "agree", "clear carcinoma", 0.93, "CD")
    project.close()
    out = tmp_path / "audit.csv"
    assert main(["labels", "audit", "--project", str(folder), "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    actions = [r["action"] for r in rows]
    for expected in (
        "slide added",
        "annotation created",
        "annotation changed",
        "label from imported",
        "flag imported",
        "review accept",
        "slide agree",
    ):
        assert expected in actions, expected
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    review = next(r for r in rows if r["action"] == "review accept")
    assert review["author"] == "AB" and review["detail"] == "Tumor; blind; 4.2 s"
    triage = next(r for r in rows if r["action"] == "slide agree")
    assert triage["detail"] == "clear carcinoma (score 0.930)" and triage["author"] == "CD"
    capsys.readouterr()
    assert main(["labels", "review-report", "--project", str(folder)]) == 0
    report = json_module.loads(capsys.readouterr().out)
    assert report["blind"] == {"decisions": 1, "agree": 1, "rate": 1.0, "median_seconds": 4.2}
    assert main(["labels", "audit", "--project", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_wanted_ids_are_used_when_free_and_replaced_when_taken(project: Project) -> None:
    slide = project.add_slide("/slides/a.svs")
    first, taken = project.add_annotations(
        slide, [Annotation(box(0, 0, 10, 10), "Tumor"), Annotation(box(20, 0, 30, 10), "Stroma")]
    )
    project.delete_annotation(first)
    again = project.add_annotations(
        slide,
        [Annotation(box(0, 0, 10, 10), "Tumor"), Annotation(box(40, 0, 50, 10), "Tumor")],
        wanted_ids=[first, taken],
    )
    assert again[0] == first  # free: the annotation keeps its number
    assert again[1] not in (first, taken)  # in use by another annotation: a new number
    assert {r.id: r.annotation.class_name for r in project.annotations(slide)} == {
        first: "Tumor",
        taken: "Stroma",
        again[1]: "Tumor",
    }
    with pytest.raises(ValueError, match="one wanted id"):
        project.add_annotations(slide, [Annotation(box(0, 0, 1, 1), "Tumor")], wanted_ids=[])


def _flagged(tmp_path: Path, n: int = 3) -> tuple[Project, list[int]]:
    project = Project.create(tmp_path / "r")
    flags = tmp_path / "flags.csv"
    rows = [f"/s/one.svs,{i * 10},0,10,10,Normal,Tumor,0.9,0.8" for i in range(n)]
    flags.write_text("slide,x,y,width,height,given,suggested,confidence,g\n" + "\n".join(rows))
    project.import_flags(flags)
    return project, [f.patch_label_id for f in project.review_queue()]


def _trusted_rows(project: Project, out: Path) -> list[dict[str, str]]:
    project.export_trusted_labels_csv(out, only_trusted=True)
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_retracted_review_counts_nowhere_but_stays_in_the_audit_trail(tmp_path: Path) -> None:
    project, (one, two, _three) = _flagged(tmp_path)
    review = project.record_review(one, "accept", author="ann", suggestion_shown=True)
    project.record_review(two, "assign", "Stroma", author="ann", suggestion_shown=True)
    assert [r["x"] for r in _trusted_rows(project, tmp_path / "a.csv")] == ["0", "10"]
    assert project.suggestion_agreement()["shown"]["decisions"] == 2

    project.retract_review(review, author="ann")
    label = project.patch_label(one)
    assert (label.label, label.trusted) == ("Normal", False)  # back to the questioned label
    assert [r["x"] for r in _trusted_rows(project, tmp_path / "b.csv")] == ["10"]
    assert one in {f.patch_label_id for f in project.review_queue()}  # pending again
    assert project.review_counts() == (1, 2)
    assert project.suggestion_agreement()["shown"]["decisions"] == 1
    assert one not in project.reviewer_labels()
    (history,) = project.review_history(one)
    assert history.retracted_at and history.retracted_by == "ann"
    actions = [row[2] for row in project.audit_rows()]
    assert "review accept" in actions and "review retracted" in actions
    retraction = next(row for row in project.audit_rows() if row[2] == "review retracted")
    assert retraction[1] == "ann" and retraction[4] == "box 0,0,10,10"
    assert retraction[5].startswith("accept Tumor of ")
    with pytest.raises(ProjectError, match="was retracted at"):
        project.retract_review(review)
    with pytest.raises(ProjectError, match="no review decision with id 999"):
        project.retract_review(999)

    # Redo records the decision anew.
    project.record_review(one, "accept", author="ann")
    assert (project.patch_label(one).label, project.patch_label(one).trusted) == ("Tumor", True)
    assert [h.retracted_at is None for h in project.review_history(one)] == [False, True]
    project.close()


def test_retracting_a_review_restores_agreement_and_disputes(tmp_path: Path) -> None:
    project, (one, _two, _three) = _flagged(tmp_path)
    project.record_review(one, "accept", author="A")
    second = project.record_review(one, "keep", author="B")  # A Tumor, B Normal: disputed
    assert project.disputed() == {one: {"A": "Tumor", "B": "Normal"}}
    assert project.patch_label(one).trusted is False
    project.retract_review(second, author="B")
    assert project.disputed() == {}
    assert project.reviewer_labels() == {one: {"A": "Tumor"}}
    assert (project.patch_label(one).label, project.patch_label(one).trusted) == ("Tumor", True)
    # An adjudication taken back leaves the dispute open again.
    project.record_review(one, "keep", author="B")
    settled = project.adjudicate(one, "Tumor", author="lead")
    assert project.disputed() == {} and project.patch_label(one).trusted is True
    project.retract_adjudication(settled, author="lead")
    assert one in project.disputed() and project.patch_label(one).trusted is False
    assert "adjudication retracted" in [row[2] for row in project.audit_rows()]
    project.close()


def test_a_version_6_project_keeps_its_decisions_and_can_retract_them(tmp_path: Path) -> None:
    folder = tmp_path / "v6"
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    assert migrate(conn, target=6) == 6
    conn.execute("INSERT INTO slides(path, name, added) VALUES ('/s/one.svs', 'one', '2024-01-01')")
    conn.execute(
        "INSERT INTO patch_labels(slide_id, x, y, width, height, label, source, trusted, "
        "created) VALUES (1, 0, 0, 10, 10, 'Tumor', 'imported', 1, '2024-01-01')"
    )
    conn.execute(
        "INSERT INTO flags(rank, patch_label_id, given, suggested, imported) "
        "VALUES (0, 1, 'Normal', 'Tumor', '2024-01-01')"
    )
    conn.execute(
        "INSERT INTO reviews(patch_label_id, decision, label, author, decided_at, "
        "suggestion_shown, seconds) VALUES (1, 'accept', 'Tumor', 'ann', '2024-01-02', 1, 2.5)"
    )
    conn.close()
    with Project.open(folder) as project:
        assert schema_version(project.connection) == SCHEMA_VERSION == 7
        (old,) = project.review_history(1)
        assert (old.decision, old.label, old.author, old.seconds) == ("accept", "Tumor", "ann", 2.5)
        assert old.retracted_at is None
        assert project.patch_label(1).trusted is True
        assert project.review_counts() == (1, 0)
        # A decision from before v7 has no state before it: retracting it falls back to the
        # label its flag questioned, untrusted.
        project.retract_review(old.id, author="ann")
        assert (project.patch_label(1).label, project.patch_label(1).trusted) == ("Normal", False)


_ADD_SLIDES_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathviewer.core.store import Project

    folder, ready, go, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    project = Project.open(folder)
    open(ready, "w").close()
    while not os.path.exists(go):  # both processes start adding at the same moment
        time.sleep(0.001)
    ids = [project.add_slide(f"/data/race-{i}.svs") for i in range(count)]
    print(json.dumps(ids), flush=True)
    """
)


def test_two_processes_adding_the_same_slides_share_one_row_each(tmp_path: Path) -> None:
    folder = tmp_path / "race"
    Project.create(folder).close()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    go = tmp_path / "go"
    count = 60
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _ADD_SLIDES_SCRIPT,
                str(folder),
                str(tmp_path / f"ready{n}"),
                str(go),
                str(count),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{n}").exists() for n in range(2)):
        assert time.monotonic() < deadline, "the adding subprocesses did not start"
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        time.sleep(0.01)
    go.touch()
    results = [p.communicate(timeout=120) for p in processes]
    for process, (_out, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    first, second = (json.loads(out) for out, _ in results)
    assert first == second  # both got the one stored id of each slide
    with Project.open(folder) as project:
        slides = project.slides()
        assert len(slides) == count
        assert [s.id for s in slides] == sorted(first)
        assert {s.path for s in slides} == {f"/data/race-{i}.svs" for i in range(count)}
