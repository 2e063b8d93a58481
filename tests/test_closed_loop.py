"""The closed loop: flags of a refinement run -> review keys -> trusted labels -> next run.

labels from-annotations -> train noisy --labels (run 1) -> import its flags.csv into a project
-> decide with the gallery's keys -> export_trusted_labels_csv holds the decisions as trusted ->
train noisy --project (run 2) does not refine them -> run 2's queue does not show them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")

from PySide6.QtCore import QSettings, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402

from pathviewer.cli import main as cli  # noqa: E402
from pathviewer.core.store import Project  # noqa: E402
from pathviewer.gui.review.panel import ReviewPanel  # noqa: E402

# Tiny training: a small CNN on 32 px inputs, two rounds (one warm-up, one refinement).
TRAIN = ["--model", "small", "--epochs", "2", "--warmup", "1", "--input-size", "32"]
TRAIN += ["--device", "cpu", "--batch-size", "32", "--seed", "0", "-q"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _key(slide: str, row: dict[str, str], base: Path) -> tuple[Path, int, int, int, int]:
    file = Path(slide)
    file = (file if file.is_absolute() else base / file).resolve()
    return (file, *(int(row[k]) for k in ("x", "y", "width", "height")))  # type: ignore[return-value]


def test_review_decisions_feed_the_next_run(qtbot, small_cohort: Path, tmp_path: Path) -> None:
    torch.set_num_threads(2)
    labels_csv = tmp_path / "labels.csv"
    assert cli(["labels", "from-annotations", "--cohort", str(small_cohort)]
               + ["--out", str(labels_csv), "--patch-size", "512", "-q"]) == 0  # fmt: skip
    n_labels = len(_rows(labels_csv))
    run1 = tmp_path / "run1"
    assert cli(["train", "noisy", "--labels", str(labels_csv), "--out", str(run1), *TRAIN]) == 0
    flags1 = _rows(run1 / "flags.csv")
    assert len(flags1) >= 3

    project = Project.create(tmp_path / "project")
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    settings.setValue("review/author", "reviewer-1")
    panel = ReviewPanel(None, settings)
    qtbot.addWidget(panel)
    panel.set_project(project)
    assert panel.import_flags(run1 / "flags.csv") == len(flags1)
    # The run's training labels came along (once per box), so --project trains on all of them.
    assert len(project.patch_labels()) == n_labels
    panel.show()
    panel.gallery.setFocus()

    # Decide on the three most suspect patches with the keyboard.
    classes = list(project.classes())
    items = panel.model.items[:3]
    QTest.keyClick(panel.gallery, Qt.Key.Key_A)  # accept the suggestion
    QTest.keyClick(panel.gallery, Qt.Key.Key_K)  # keep the given label
    QTest.keyClick(panel.gallery, Qt.Key.Key_3)  # assign the third class
    expected = {
        items[0].flag.patch_label_id: items[0].flag.suggested,
        items[1].flag.patch_label_id: items[1].flag.given,
        items[2].flag.patch_label_id: classes[2],
    }
    decided_boxes = {}
    for record in project.patch_labels(trusted=True):
        assert record.id in expected and record.label == expected[record.id]
        assert project.review_history(record.id)[-1].author == "reviewer-1"
        decided_boxes[_key(record.slide_path, record.__dict__, Path("/"))] = record.label
    assert len(decided_boxes) == 3
    assert project.review_counts() == (
        3,
        len({i.flag.patch_label_id for i in panel.model.items}) - 3,
    )

    # What training reads: the decisions as trusted rows, everything else untrusted.
    export = tmp_path / "export.csv"
    assert project.export_trusted_labels_csv(export) == n_labels
    exported = {_key(r["slide"], r, export.parent): r for r in _rows(export)}
    trusted = {k: r["label"] for k, r in exported.items() if r["trusted"] == "1"}
    assert trusted == decided_boxes
    project.close()

    # The next run reads the project: trusted labels are never refined.
    run2 = tmp_path / "run2"
    assert cli(["train", "noisy", "--project", str(tmp_path / "project"), "--out", str(run2)]
               + TRAIN) == 0  # fmt: skip
    refined = _rows(run2 / "refined_labels.csv")
    assert len(refined) == n_labels
    refined_trusted = {
        _key(r["slide"], r, run2): r for r in refined if r["trusted"] in ("1", "True", "true")
    }
    assert set(refined_trusted) == set(decided_boxes)
    for box, label in decided_boxes.items():
        assert refined_trusted[box]["label"] == label
        assert refined_trusted[box]["given"] == label

    # Its flags, imported, leave the decided patches out of the queue.
    project = Project.open(tmp_path / "project")
    panel.set_project(project)
    panel.import_flags(run2 / "flags.csv")
    assert len(project.patch_labels()) == n_labels  # same boxes, no duplicates
    queued = {_key(i.flag.slide_path, i.flag.__dict__, Path("/")) for i in panel.model.items}
    assert queued and not queued & set(decided_boxes)
    assert project.review_counts()[1] == len(panel.model.items)
    panel.shutdown()
    project.close()


def test_a_refinement_run_of_the_training_dock_brings_its_labels_with_its_flags(
    qtbot, small_cohort: Path, tmp_path: Path
) -> None:
    # The Training dock's job is the CLI's pipeline: its config.json names the training labels,
    # so importing its flags adds every training label to the project, not only the flagged.
    from pathviewer.core.progress import run_job
    from pathviewer.jobs import refine_run
    from pathviewer.ml.refine import RefineConfig

    torch.set_num_threads(2)
    labels_csv = tmp_path / "labels.csv"
    assert cli(["labels", "from-annotations", "--cohort", str(small_cohort)]
               + ["--out", str(labels_csv), "--patch-size", "512", "-q"]) == 0  # fmt: skip
    n_labels = len(_rows(labels_csv))
    run = tmp_path / "gui-run"
    config = RefineConfig(
        max_rounds=1, warmup=1, input_size=32, batch_size=32, device="cpu", class_balance="none"
    )
    run_job(refine_run(run, config, labels_csv=labels_csv))
    project = Project.create(tmp_path / "project")
    panel = ReviewPanel(None, QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(panel)
    panel.set_project(project)
    panel.import_flags(run / "flags.csv")
    assert len(project.patch_labels()) == n_labels
    panel.shutdown()
    project.close()
