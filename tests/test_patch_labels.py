"""labels.csv reading and validation, writers, and the patch datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathviewer.core.errors import CohortError
from pathviewer.ml.patch_data import (
    FLAG_COLUMNS,
    ArrayDataset,
    PatchDataset,
    read_labels_csv,
    write_flags_csv,
    write_labels_csv,
)


@pytest.fixture
def slide_dir(tmp_path: Path) -> Path:
    """A 400 x 300 PNG 'slide' (OpenSlide reads it through ImageSlide)."""
    image = np.zeros((300, 400, 3), np.uint8)
    image[:, :200] = (200, 50, 50)
    image[:, 200:] = (50, 50, 200)
    Image.fromarray(image).save(tmp_path / "s1.png")
    return tmp_path


def _write(path: Path, rows: list[str], header: str = "slide,x,y,width,height,label") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_reads_rows_classes_and_trusted(slide_dir: Path) -> None:
    path = _write(
        slide_dir / "labels.csv",
        [
            "s1.png,0,0,100,100,Tumor,1",
            "s1.png,250,100,100,100,Normal,0",
            "s1.png,10,10,50,50,Normal,",
        ],
        header="slide,x,y,width,height,label,trusted",
    )
    rows, classes = read_labels_csv(path)
    assert classes == ["Normal", "Tumor"]
    assert [r.trusted for r in rows] == [True, False, False]
    assert rows[0].path == (slide_dir / "s1.png").resolve()
    assert rows[1].row == 3
    rows, classes = read_labels_csv(path, classes=["Tumor", "Normal", "Stroma"])
    assert classes == ["Tumor", "Normal", "Stroma"]


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (["s1.png,0,0,100,100,Tumor", "s1.png,0,0,100,100,Fat"], r"row 3: unknown class 'Fat'"),
        ([], "empty label file"),
        (["s1.png,0,0,100,100,Tumor", "s1.png,350,0,100,100,Normal"], r"row 3: .*outside"),
        (["s1.png,0,0,100,100,Tumor", "s1.png,0,0,50,50,Tumor"], "only 1 class"),
        (["s1.png,0,0,100,100,Tumor", "gone.png,0,0,50,50,Normal"], r"row 3: slide file not found"),
        (["s1.png,a,0,100,100,Tumor"], r"row 2: .*numbers"),
        (["s1.png,0,0,0,100,Tumor"], r"row 2: empty patch box"),
    ],
)
def test_bad_tables_name_the_row(slide_dir: Path, lines: list[str], match: str) -> None:
    path = _write(slide_dir / "labels.csv", lines)
    with pytest.raises(CohortError, match=match):
        read_labels_csv(path, classes=["Tumor", "Normal"])


def test_zero_byte_file_and_missing_columns(slide_dir: Path) -> None:
    empty = slide_dir / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(CohortError, match="empty label file"):
        read_labels_csv(empty)
    bad = _write(slide_dir / "bad.csv", ["s1.png,0,0,Tumor"], header="slide,x,y,label")
    with pytest.raises(CohortError, match="missing column"):
        read_labels_csv(bad)
    with pytest.raises(CohortError, match="not found"):
        read_labels_csv(slide_dir / "nope.csv")


def test_writers_and_patch_dataset(slide_dir: Path, tmp_path: Path) -> None:
    path = _write(
        slide_dir / "labels.csv", ["s1.png,0,0,100,100,Tumor", "s1.png,250,100,100,80,Normal"]
    )
    rows, classes = read_labels_csv(path)
    dataset = PatchDataset(rows, input_size=16)
    first, second = dataset[0], dataset[1]
    dataset.close()
    assert first.shape == (3, 16, 16) and first.dtype.is_floating_point
    assert float(first[0].mean()) > float(first[2].mean())  # red half of the slide
    assert float(second[2].mean()) > float(second[0].mean())  # blue half
    out_dir = tmp_path / "run"
    write_labels_csv(
        out_dir / "refined.csv", rows, labels=["Normal", "Normal"], extra={"p": [0.5, 0.25]}
    )
    again, _ = read_labels_csv(out_dir / "refined.csv", min_classes=1)
    assert [r.path for r in again] == [r.path for r in rows]  # paths stay valid from the new folder
    assert [r.label for r in again] == ["Normal", "Normal"]
    write_flags_csv(out_dir / "flags.csv", rows, [(1, "Normal", "Tumor", 0.8, 0.9)])
    with open(out_dir / "flags.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert tuple(table[0]) == FLAG_COLUMNS
    assert table[1][1:] == ["250", "100", "100", "80", "Normal", "Tumor", "0.8000", "0.9000"]


def test_array_dataset_accepts_uint8_hwc() -> None:
    images = np.full((2, 8, 8, 3), 255, np.uint8)
    dataset = ArrayDataset(images)
    assert len(dataset) == 2 and dataset[1].shape == (3, 8, 8) and float(dataset[0].max()) == 1.0


def test_patch_labels_from_a_projects_drawn_regions(small_cohort: Path, tmp_path: Path, qtbot):
    import shapely

    from pathviewer.core.annotations import Annotation
    from pathviewer.core.cohort import read_cohort
    from pathviewer.core.progress import run_job
    from pathviewer.core.store import Project
    from pathviewer.jobs import label_project_patches

    entry = read_cohort(small_cohort)[0]
    project = Project.create(tmp_path / "p")
    slide_id = project.add_slide(str(entry.path))
    empty = Project.create(tmp_path / "empty")
    empty.close()
    with pytest.raises(Exception, match="no slide of the project has annotations"):
        run_job(label_project_patches(tmp_path / "empty"))
    project.add_annotations(slide_id, [Annotation(shapely.box(0, 0, 1536, 1536), "Tumor")])
    project.close()
    count = run_job(label_project_patches(tmp_path / "p", 256, "Normal"))
    with Project.open(tmp_path / "p") as reopened:
        labels = reopened.patch_labels()
    assert count == len(labels) > 0
    assert {r.label for r in labels} <= {"Tumor", "Normal"} and not any(r.trusted for r in labels)
    inside = [r for r in labels if r.x + r.width <= 1536 and r.y + r.height <= 1536]
    assert inside and all(r.label == "Tumor" for r in inside)
    # The Training dock runs the same job on the open project.
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from pathviewer.gui.app import create_main_window

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(window)
    window.context.project.open(tmp_path / "p")
    panel = window.context.training
    with qtbot.waitSignal(panel.labelsMade, timeout=60_000) as blocker:
        assert panel.make_patch_labels(256, "Normal") is not None
    assert blocker.args == [count]
    assert "patch labels made" in panel.log_view.toPlainText()
    window.close()
