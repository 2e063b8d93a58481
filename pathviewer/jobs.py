"""Headless pipelines that the command line and the GUI both run (Qt-free).

Each is a job generator (:mod:`pathviewer.core.progress`): the CLI drives it with progress bars,
the Training dock on a worker thread.  Neither keeps a copy of the pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import TrainingError
from pathviewer.core.progress import Progress

#: Patch classifiers a refinement run can train: name -> what it is.
REFINE_MODELS = {"resnet18": "ResNet18 (default)", "small": "a small CNN (fast on a CPU)"}


def export_project_labels(project_dir: Path, out: Path) -> Path:
    """Export a project's patch labels (trusted ones marked) to ``out/project_labels.csv``.

    Raises
    ------
    TrainingError
        The project has no patch labels.
    """
    from pathviewer.core.store import Project

    project = Project.open(project_dir)
    try:
        path = out / "project_labels.csv"
        out.mkdir(parents=True, exist_ok=True)
        count = project.export_trusted_labels_csv(path)
    finally:
        project.close()
    if count == 0:
        raise TrainingError(f"{project_dir}: the project has no patch labels to train on")
    return path


def refine_run(
    run_dir: Path,
    config: Any,
    labels_csv: Path | None = None,
    project_dir: Path | None = None,
    classes: list[str] | None = None,
    model: str = "resnet18",
    weights: str | None = None,
    resume: bool = False,
) -> Generator[Progress, None, Any]:
    """Label refinement on a labels.csv or a project's patch labels, into ``run_dir``.

    Writes model.pt, metrics.jsonl, refined_labels.csv, flags.csv and a config.json that names
    the training labels (so that importing the flags can bring the labels along) and the model.

    Parameters
    ----------
    run_dir
        Output folder.
    config
        A :class:`~pathviewer.ml.refine.RefineConfig`.
    labels_csv, project_dir
        Where the labels come from (a project wins; one of them is required).
    classes
        Class names in order (default: as found in the labels).
    model
        A key of :data:`REFINE_MODELS`.
    weights
        Encoder weights for the ResNet (optional).
    resume
        Continue from ``run_dir/model.pt``.

    Returns
    -------
    RefineResult
    """
    from pathviewer.ml.patch_data import PatchDataset, read_labels_csv, write_refinement_outputs
    from pathviewer.ml.refine import iter_train_refine

    if model not in REFINE_MODELS:
        raise TrainingError(f"unknown model {model!r} (known: {', '.join(REFINE_MODELS)})")
    search_dirs: list[Path] = []
    if project_dir is not None:
        labels_csv = export_project_labels(project_dir, run_dir)
        search_dirs.append(project_dir)
    if labels_csv is None:
        raise TrainingError("label refinement needs a labels.csv or a project")
    import numpy as np

    rows, names = read_labels_csv(labels_csv, classes, search_dirs=search_dirs)
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[r.label] for r in rows])
    trusted = np.array([r.trusted for r in rows])
    factory = _classifier_factory(model, len(names), weights, config.input_size)
    size = config.input_size
    dataset = PatchDataset(rows, size, cache=len(rows) * size**2 < 2**28)
    try:
        result = yield from iter_train_refine(
            dataset,
            labels,
            len(names),
            factory,
            config,
            trusted,
            out_dir=run_dir,
            resume=resume,
            classes=names,
            # Out-of-sample folds keep each slide together (annotation errors are regional).
            groups=[str(r.path) for r in rows],
        )
    finally:
        dataset.close()
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    saved.update({"labels": str(Path(labels_csv).resolve()), "model": model})
    with atomic_write(config_path) as handle:
        json.dump(saved, handle, indent=2)
    write_refinement_outputs(
        run_dir,
        rows,
        names,
        result.refined,
        [(f.index, f.given, f.suggested, f.confidence, f.g) for f in result.flags],
    )
    return result


def _classifier_factory(
    model: str, num_classes: int, weights: str | None, input_size: int
) -> Callable[[], Any]:
    if model == "small":
        from pathviewer.ml.small_cnn import SmallCNN

        return lambda: SmallCNN(num_classes, 3)
    from pathviewer.ml.models import build_classifier

    return lambda: build_classifier(num_classes, "resnet18", weights, input_size)
