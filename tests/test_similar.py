"""Why this region? The training patches most like a patch, from the run's own encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pathviewer.core.cohort import read_cohort, select
from pathviewer.core.slide import open_slide
from pathviewer.ml.model_file import ModelFile
from pathviewer.ml.similar import SimilarError, SimilarIndex, embed_boxes

TINY = ["--demo", "--steps", "2", "--batch-size", "8", "--input-size", "32",
        "--patch-size", "512", "--read-level", "4", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(small_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pathviewer.cli import main

    run = tmp_path_factory.mktemp("similar") / "run"
    assert main(["train", "ngsd", "--cohort", str(small_cohort), "--out", str(run), *TINY]) == 0
    return run


def test_training_indexes_every_training_patch(trained: Path, small_cohort: Path) -> None:
    index = SimilarIndex.of_model(trained / "model.pt")
    train = select(read_cohort(small_cohort), "train")
    assert {Path(p) for p in index.paths} == {e.path for e in train}
    assert len(index) > 10 and index.features.shape[1] == 512
    assert np.allclose(np.linalg.norm(index.features, axis=1), 1.0, atol=1e-2)


def test_a_training_patch_finds_itself_first(trained: Path) -> None:
    index = SimilarIndex.of_model(trained / "model.pt")
    model = ModelFile.load(trained / "model.pt")
    i = len(index) // 2
    slide_number = int(index.slide[i])
    box = tuple(int(v) for v in index.boxes[i])
    slide = open_slide(index.paths[slide_number])
    try:
        (feature,) = embed_boxes(model, slide, [box])
    finally:
        slide.close()
    nearest = index.nearest(feature, k=5)
    assert len(nearest) == 5
    assert nearest[0].box == box and nearest[0].similarity > 0.99
    assert nearest[0].label == index.labels[slide_number]
    assert [n.similarity for n in nearest] == sorted((n.similarity for n in nearest), reverse=True)


def test_a_run_without_an_index_says_so(tmp_path: Path) -> None:
    with pytest.raises(SimilarError, match="no index of this run's training patches"):
        SimilarIndex.of_model(tmp_path / "model.pt")


def test_why_this_region_in_the_heatmap_dock(trained: Path, small_cohort: Path, qtbot) -> None:
    pytest.importorskip("pytestqt")
    from PySide6.QtCore import QSettings

    from pathviewer.core.heatmap import Heatmap
    from pathviewer.gui.app import create_main_window

    entry = select(read_cohort(small_cohort), "train")[0]
    settings = QSettings(str(trained.parent / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window([str(entry.path)], settings=settings, threads=1)
    qtbot.addWidget(window)
    controller, panel = window.context.heatmap, window.context.heatmap_panel
    width, height = window.slide_view.current_slide.dimensions
    probs = np.full((height // 512, width // 512), 0.1, np.float32)
    probs[1, 1] = 0.9
    controller.set_heatmap(Heatmap(entry.slide, (width, height), (0, 0), (512, 512), probs))
    # Without the model that made it, the dock says so.
    assert controller.model_path is None
    with pytest.raises(Exception, match="does not say which model"):
        controller.similar_to_region(controller.top_regions()[0])
    controller.model_path = trained / "model.pt"
    dialog = panel.explain_selected_region()
    assert dialog is not None and len(dialog.captions) == 8
    assert all(("positive slide" in c) or ("negative slide" in c) for c in dialog.captions)
    assert dialog.summary.text().endswith("of 8 from positive slides")
    dialog.close()
    window.close()
