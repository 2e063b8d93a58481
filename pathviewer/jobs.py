"""Headless pipelines that the command line and the GUI both run (Qt-free).

Each is a job generator (:mod:`pathviewer.core.progress`): the CLI drives it with progress bars,
the Training dock on a worker thread.  Neither keeps a copy of the pipeline.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pathviewer.core.atomic import atomic_write
from pathviewer.core.cohort import CohortEntry
from pathviewer.core.errors import CheckpointError, PathViewerError, TrainingError
from pathviewer.core.progress import Progress
from pathviewer.ml.encoder_name import is_timm

if TYPE_CHECKING:
    from pathviewer.core.identity import SlidePathMap
    from pathviewer.core.store import Project


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


def run_labels_csv(run_dir: Path) -> Path | None:
    """The training labels of a refinement run (``labels`` in its ``config.json``), if any."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    labels = config.get("labels") if isinstance(config, dict) else None
    if not labels:
        return None
    path = Path(labels)
    path = path if path.is_absolute() else run_dir / path
    return path if path.is_file() else None


def import_run_flags(
    project: Project, flags_csv: Path, replace: bool = True, with_labels: bool = True
) -> int:
    """Import a run's ``flags.csv`` into the project's review queue, all or nothing.

    Slide names are mapped onto the project's own slides (one identity rule,
    :class:`~pathviewer.core.identity.SlidePathMap`), so a flag on a slide the project holds does
    not store it a second time.  With ``with_labels`` the run's training labels (named in its
    ``config.json``) come along as ``imported`` patch labels, skipping boxes the project has, so
    that every flag has the label it questions.

    Parameters
    ----------
    project
        The open project.
    flags_csv
        A ``flags.csv`` written by label refinement or ``pathviewer flags``.
    replace
        Clear the current queue first (the new run supersedes it).
    with_labels
        Also import the run's training labels.

    Returns
    -------
    int
        The number of flags imported.

    Raises
    ------
    CohortError
        A malformed flags or labels table (the message names the file and row); the project
        is left as it was.
    """
    from dataclasses import replace as with_fields

    from pathviewer.core.identity import SlidePathMap
    from pathviewer.core.patch_tables import read_flags

    path = Path(flags_csv).resolve()
    names = SlidePathMap([r.path for r in project.slides()])
    flags = [with_fields(f, slide=names.stored(f.slide, path.parent)) for f in read_flags(path)]
    labels_csv = run_labels_csv(path.parent) if with_labels else None
    # One transaction: a bad row leaves the previous queue and labels as they were.
    with project.transaction():
        if labels_csv is not None:
            _import_run_labels(project, labels_csv, names)
        if replace:
            project.clear_flags()
        return project.add_flags(flags)


def _import_run_labels(project: Project, labels_csv: Path, names: SlidePathMap) -> int:
    from pathviewer.core.patch_tables import read_labels

    have = {(r.slide_path, r.x, r.y, r.width, r.height) for r in project.patch_labels()}
    new = []
    for row in read_labels(labels_csv):
        key = (names.stored(row.slide, labels_csv.parent), *row.box)
        if key not in have:
            have.add(key)
            new.append((*key, row.label))
    if new:
        project.add_patch_labels(new, source="imported")
    return len(new)


def refine_run(
    run_dir: Path,
    config: Any,
    labels_csv: Path | None = None,
    project_dir: Path | None = None,
    classes: list[str] | None = None,
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
        A :class:`~pathviewer.ml.refine.RefineConfig`.  Its ``model`` (a key of
        :data:`~pathviewer.ml.refine.REFINE_MODELS`) says what is trained: ``stain`` trains on
        each patch's stain statistics standardised within its slide
        (:mod:`pathviewer.ml.stain_classifier`), read at that module's ``FEATURE_VIEW``;
        ``timm:NAME`` a timm encoder with a linear head.  ``weights`` is the encoder's
        weights file (resnet18, timm); with ``freeze_encoder`` each patch's features are
        computed once and only the head trains.
    labels_csv, project_dir
        Where the labels come from (a project wins; one of them is required).
    classes
        Class names in order (default: as found in the labels).
    resume
        Continue from ``run_dir/model.pt``.

    Returns
    -------
    RefineResult
    """
    from pathviewer.core.ranking import patch_neighbours
    from pathviewer.ml.patch_data import PatchDataset, read_labels_csv, write_refinement_outputs
    from pathviewer.ml.refine import iter_train_refine

    config.validate()
    model = config.model
    if config.freeze_encoder and model not in _ENCODER_MODELS and not is_timm(model):
        raise TrainingError(
            f"freeze_encoder needs an encoder model (resnet18 or timm:NAME), not {model}"
        )
    if model in _ENCODER_MODELS or is_timm(model):
        from pathviewer.ml.models import network_input_size

        # An encoder that takes one input size only (a ViT) gets it; config.json records it.
        config = dataclasses.replace(
            config, input_size=network_input_size(_encoder_arch(model), config.input_size)
        )
    search_dirs: list[Path] = []
    if project_dir is not None:
        labels_csv = export_project_labels(project_dir, run_dir)
        search_dirs.append(project_dir)
    if labels_csv is None:
        raise TrainingError("label refinement needs a labels.csv or a project")
    rows, names = read_labels_csv(labels_csv, classes, search_dirs=search_dirs)
    index = {name: i for i, name in enumerate(names)}
    labels = np.array([index[r.label] for r in rows])
    trusted = np.array([r.trusted for r in rows])
    factory = _classifier_factory(
        model, len(names), config.weights or None, config.input_size, config.freeze_encoder
    )
    slides = [str(r.path) for r in rows]
    encoder: dict[str, Any] | None = None
    if model == "stain":
        from pathviewer.ml.stain_classifier import (
            FEATURE_VIEW,
            FeatureDataset,
            iter_slide_features,
        )

        images = PatchDataset(rows, FEATURE_VIEW)
        try:
            features = yield from iter_slide_features(images, slides)
        finally:
            images.close()
        dataset: Any = FeatureDataset(features)
    else:
        size = config.input_size
        dataset = PatchDataset(rows, size, cache=len(rows) * size**2 < 2**28)
        if config.freeze_encoder:
            import torch

            from pathviewer.ml.device import pick_device
            from pathviewer.ml.models import encode_patches
            from pathviewer.ml.stain_classifier import FeatureDataset

            images = dataset
            torch.manual_seed(config.seed)  # the head every fold starts from (see the factory)
            network = factory()
            try:
                features = yield from encode_patches(
                    network,
                    len(images),
                    images.__getitem__,
                    pick_device(config.device),
                    config.batch_size,
                )
            finally:
                images.close()
                network.cpu()
            # Only the head trains, on features computed once per patch (no augmentation).
            dataset = FeatureDataset(features)
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
            groups=slides,
            neighbours=patch_neighbours(slides, [(r.x, r.y, r.width, r.height) for r in rows]),
        )
    finally:
        if isinstance(dataset, PatchDataset):
            dataset.close()
    if model in _ENCODER_MODELS or is_timm(model):
        # After training: the weights file has been read (and found to fit) by then.
        encoder = _refine_encoder_record(config)
    config_path = run_dir / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    saved["labels"] = str(Path(labels_csv).resolve())
    if encoder is not None:
        saved["encoder"] = encoder
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


def train_slide_model(
    cohort_csv: str | Path,
    run_dir: str | Path,
    config: Any,
    resume: bool = False,
    dist: Any = None,
    calibrate: bool = True,
) -> Generator[Progress, None, Any]:
    """Train a slide model (``config.method``: ngsd, naive or abmil) on a cohort's train split.

    The pipeline of ``pathviewer train ngsd|naive|abmil``, the Training dock and the demo.

    Parameters
    ----------
    cohort_csv
        Cohort CSV.
    run_dir
        Run folder (model.pt, config.json, metrics.jsonl, checkpoints/).
    config
        A :class:`~pathviewer.ml.ngsd.NGSDConfig`.
    resume
        Continue from the run folder's last checkpoint (ngsd and naive).
    dist
        A :class:`~pathviewer.ml.distributed.DistContext` under ``torchrun`` (ngsd and naive).
    calibrate
        Afterwards, choose the run's operating point (:func:`calibrate_model`) and embed its
        training patches for "why this region?" (:mod:`pathviewer.ml.similar`); not under
        ``torchrun``, where rank 0 alone would have to score the slides.

    Returns
    -------
    RunResult
        Of :func:`pathviewer.ml.ngsd.train` or :func:`pathviewer.ml.baselines.train_abmil`.
    """
    # An unknown method goes to the NGSD trainer, whose settings check names it.
    trainer = SLIDE_TRAINERS.get(config.method, _train_ngsd)
    result = yield from trainer(cohort_csv, run_dir, config, resume, dist)
    model_path = getattr(result, "model_path", None)
    if calibrate and dist is None and model_path is not None and Path(model_path).is_file():
        yield from calibrate_model(model_path, cohort_csv)
        from pathviewer.ml.similar import build_similar_index

        # "Why this region?" compares a patch with these (the Heatmap dock's top regions).
        yield from build_similar_index(model_path, cohort_csv)
    return result


#: Subfolder of a run with the predictions its operating point was chosen on.
CALIBRATION_DIR = "calibration"


def calibrate_model(
    model_path: str | Path, cohort_csv: str | Path
) -> Generator[Progress, None, Any]:
    """Choose and write the run's operating point (``operating_point.json`` next to the model).

    The cohort's val split is scored when it has slides of both labels, else the train split
    (the threshold is then chosen on slides the model has seen, and says so).  The scored
    slides are kept in ``RUN/calibration``.  A cohort without both labels in either split gets
    no operating point (slides are then called at 0.5).

    Returns
    -------
    OperatingPoint or None
    """
    from pathviewer.core.cohort import read_cohort, select
    from pathviewer.core.operating_point import (
        OPERATING_POINT_JSON,
        choose_operating_point,
        write_operating_point,
    )
    from pathviewer.ml.inference import predict

    run_dir = Path(model_path).parent
    stale = run_dir / OPERATING_POINT_JSON
    if stale.is_file():
        stale.unlink()  # a retrained model must not be called at its predecessor's threshold
    entries = read_cohort(cohort_csv)
    for split in ("val", "train"):
        labels = {e.label for e in select(entries, split)}
        if {0, 1} <= labels:
            break
    else:
        yield Progress("calibration", 1, 1, "no split with both labels: slides called at 0.5")
        return None
    results = yield from predict(model_path, cohort_csv, run_dir / CALIBRATION_DIR, split)
    scored = [
        (r.tiled.entry.label, float(r.score)) for r in results if r.tiled.entry.label in (0, 1)
    ]
    point = choose_operating_point([y for y, _ in scored], [s for _, s in scored], split)
    write_operating_point(point, run_dir)
    yield Progress("calibration", 1, 1, f"operating point: {point.describe()}")
    return point


def _train_ngsd(
    cohort_csv: str | Path, run_dir: str | Path, config: Any, resume: bool, dist: Any
) -> Generator[Progress, None, Any]:
    from pathviewer.ml.ngsd import train

    return train(cohort_csv, run_dir, config, resume=resume, dist=dist)


def _train_abmil(
    cohort_csv: str | Path, run_dir: str | Path, config: Any, resume: bool, dist: Any
) -> Generator[Progress, None, Any]:
    if resume or dist is not None:
        raise TrainingError("attention MIL trains in one process and cannot resume")
    from pathviewer.ml.baselines import train_abmil

    return train_abmil(cohort_csv, run_dir, config)


#: The trainer of each slide-model method (how a model file is scored:
#: :data:`pathviewer.ml.model_file.SCORERS`).
SLIDE_TRAINERS: dict[str, Callable[..., Generator[Progress, None, Any]]] = {
    "ngsd": _train_ngsd,
    "naive": _train_ngsd,
    "abmil": _train_abmil,
}


def predict_cohort(
    model_path: str | Path,
    cohort_csv: str | Path,
    out_dir: str | Path,
    split: str | None = "test",
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    pooling: str | None = None,
    shard: tuple[int, int] | None = None,
) -> Generator[Progress, None, Any]:
    """Score a cohort split with a slide model into a predictions folder (``pathviewer infer``).

    See :func:`pathviewer.ml.inference.predict` for the parameters and the folder written.
    """
    from pathviewer.ml.inference import predict

    return (
        yield from predict(
            model_path,
            cohort_csv,
            out_dir,
            split,
            device,
            batch_size,
            workers,
            pooling,
            shard=shard,
        )
    )


@dataclass
class SlideAnalysis:
    """What "Analyse this slide" returns."""

    heatmap: Any
    score: float
    out_dir: Path


def slide_entry(path: str | Path, entry: CohortEntry | None = None) -> CohortEntry:
    """The cohort row of a slide, or a stand-in row for a slide opened on its own."""
    if entry is not None:
        return entry
    path = Path(path)
    return CohortEntry(path.name, path, None, "test", None, 0)


def analyse_slide(
    model_path: str | Path,
    entry: CohortEntry,
    out_dir: Path,
    device_name: str = "auto",
    batch_size: int = 64,
) -> Generator[Progress, None, SlideAnalysis]:
    """Score one slide with a run's model, patch batch by patch batch.

    Events: ``tiling``; one ``heatmap`` event whose payload is the empty (all-NaN)
    :class:`~pathviewer.core.heatmap.Heatmap`; ``inference`` events whose payload is
    ``{"rows", "cols", "probs"}`` of the batch just scored.  The predictions folder
    (:func:`pathviewer.ml.inference.write_predictions`) is written to ``out_dir`` at the end.
    """
    from pathviewer.core.heatmap import Heatmap
    from pathviewer.ml.data import PatchStore, cache_dir_for, tile_cohort
    from pathviewer.ml.device import pick_device
    from pathviewer.ml.inference import (
        SlidePrediction,
        describe_model,
        model_normalizer,
        run_scorer,
        slide_checks,
        write_predictions,
    )
    from pathviewer.ml.model_file import ModelFile

    model = ModelFile.load(model_path, pick_device(device_name))
    cfg, data, method = model.config, model.data, model.method
    tiled = yield from tile_cohort(
        [entry], model.patch_size, model.read_downsample, cfg.threshold, cache_dir_for(out_dir)
    )
    index = tiled[0].index
    warnings = slide_checks(data, tiled)[0]
    for warning in warnings:
        yield Progress("warning", 0, None, warning)
    model_info = describe_model(model_path, data)
    coords = np.asarray(index.coords, np.int64).reshape(-1, 2)
    empty = np.full(len(coords), np.nan, np.float32)
    heatmap = Heatmap.from_patches(
        entry.slide, index.dimensions, index.patch_size, coords, empty, method=method
    )
    heatmap.model, heatmap.warnings = model_info, warnings
    yield Progress("heatmap", 0, len(coords), f"{entry.slide}: {len(coords)} patches", {}, heatmap)
    # Same cells as Heatmap.from_patches (origin 0, square patches).
    cols_all = coords[:, 0] // index.patch_size
    rows_all = coords[:, 1] // index.patch_size
    scorer = model.scorer()
    store = PatchStore(tiled, model_normalizer(data))
    try:
        for event in run_scorer(scorer, store, batch_size, 0):
            payload = None
            if event.payload is not None:  # probabilities final now (not attention MIL's)
                start, batch = event.payload
                part = slice(start, start + len(batch))
                payload = {"rows": rows_all[part], "cols": cols_all[part], "probs": batch}
            yield Progress("inference", event.done, event.total, entry.slide, {}, payload)
    finally:
        store.close()
    probs, score = scorer.finish()
    write_predictions(
        out_dir,
        [SlidePrediction(tiled[0], probs, score, warnings)],
        method,
        model_path,
        cfg.pooling,
        model_info,
    )
    final = Heatmap.from_patches(
        entry.slide, index.dimensions, index.patch_size, coords, probs, method=method
    )
    final.model, final.warnings = model_info, warnings
    return SlideAnalysis(final, float(score), out_dir)


#: Refinement models that are an encoder plus a linear head (besides ``timm:NAME``).
_ENCODER_MODELS = ("resnet18",)


def _encoder_arch(model: str) -> str:
    """The :func:`~pathviewer.ml.models.build_classifier` architecture of a refinement model."""
    return model if is_timm(model) else "resnet18"


def _classifier_factory(
    model: str,
    num_classes: int,
    weights: str | None,
    input_size: int,
    freeze_encoder: bool = False,
) -> Callable[[], Any]:
    """What builds a refinement run's network (each out-of-sample fold calls it again).

    With ``weights``, every network starts from the file's encoder; a frozen encoder is read
    once and copied, so that every fold's head sits on the same features.
    """
    if model == "small":
        from pathviewer.ml.small_cnn import SmallCNN

        return lambda: SmallCNN(num_classes, 3)
    if model == "stain":
        from pathviewer.ml.stain_classifier import StainFeatureClassifier

        return lambda: StainFeatureClassifier(num_classes)
    import copy

    from pathviewer.ml.models import build_classifier

    arch = _encoder_arch(model)
    if not freeze_encoder:
        return lambda: build_classifier(num_classes, arch, weights, input_size)
    frozen: list[Any] = []

    def build_frozen() -> Any:
        if not frozen:
            network = build_classifier(num_classes, arch, weights, input_size)
            network.freeze_encoder()
            frozen.append(network)
        return copy.deepcopy(frozen[0])

    return build_frozen


def _refine_encoder_record(config: Any) -> dict[str, Any]:
    """The run record's account of a refinement run's encoder (config.json)."""
    from pathviewer.ml.encoders import encoder_record
    from pathviewer.ml.models import encoder_info

    info = encoder_info(_encoder_arch(config.model))
    return encoder_record(
        _encoder_arch(config.model),
        config.input_size,
        info.mean,
        info.std,
        config.weights or None,
        config.freeze_encoder,
    )


def load_refinement_model(model_path: str | Path) -> Any:
    """The network of a label-refinement run's ``model.pt``, rebuilt from its recorded settings.

    The file records the model (``resnet18``, ``timm:NAME`` ...), the input size and the
    classes; its state dict holds every trained weight, so no weights file is needed.

    Returns
    -------
    torch.nn.Module
        In eval mode, on the CPU; it maps ``(B, 3, S, S)`` images in [0, 1] (``S`` the
        recorded ``input_size``), or the stain model's features, to class logits.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file, or weights that do not fit the recorded model.
    """
    from pathviewer.ml.encoders import weights_problem
    from pathviewer.ml.refine import RefineConfig, load_checkpoint

    path = Path(model_path)
    state = load_checkpoint(path)
    try:
        config = RefineConfig.from_dict(state["config"])
        config.validate()
        num_classes = int(state["num_classes"])
    except (KeyError, TypeError, ValueError, PathViewerError) as error:
        raise CheckpointError(
            f"{path}: model file's settings are unusable ({str(error)[:160]})"
        ) from None
    try:
        network = _classifier_factory(config.model, num_classes, None, config.input_size)()
    except PathViewerError as error:
        raise CheckpointError(f"{path}: {str(error)[:200]}") from None
    problem = weights_problem(network, state["state_dict"])
    if problem is not None:
        raise CheckpointError(f"{path}: weights do not fit a {config.model[:60]} model ({problem})")
    network.load_state_dict(state["state_dict"])
    return network.eval()


def export_heatmaps(
    predictions: str | Path,
    fmt: str,
    out: str | Path,
    cohort: str | Path | None = None,
    slides: list[str] | None = None,
) -> list[Path]:
    """Export a predictions folder's heatmaps, one file per slide (``pathviewer export heatmap``).

    Every heatmap is read, and for ``asap`` / ``tiff`` every slide opened, before the first file
    is written, so a bad slide stops the export with nothing written; each file is written
    atomically.

    Parameters
    ----------
    fmt
        ``qupath``, ``asap``, ``tiff`` or ``csv`` (see :mod:`pathviewer.core.heatmap_export`).
    cohort
        Cohort CSV naming the slides (needed for ``asap`` / ``tiff`` when slides.csv names
        slides by paths relative to it).
    slides
        Only these slides (as slides.csv names them).

    Raises
    ------
    PathViewerError
        One line naming the folder, slide or file.
    """
    from pathviewer.core.cohort import read_cohort
    from pathviewer.core.errors import PathViewerError
    from pathviewer.core.heatmap import load_heatmap
    from pathviewer.core.heatmap_export import export_name, write_heatmap
    from pathviewer.core.predictions import read_predictions
    from pathviewer.core.slide import open_slide

    export_name("x", fmt)  # an unknown format fails before anything is read
    found = read_predictions(predictions, patches=False)
    wanted = [row.slide for row in found.slides]
    if slides:
        unknown = [s for s in slides if s not in wanted]
        if unknown:
            raise PathViewerError(f"{predictions}: no slide {unknown[0]!r} in slides.csv")
        wanted = [s for s in wanted if s in slides]
    missing = [s for s in wanted if s not in found.heatmaps]
    if missing:
        raise PathViewerError(f"{predictions}: no heatmap for slide {missing[0]!r}")
    heatmaps = {s: load_heatmap(found.heatmaps[s]) for s in wanted}
    slides_open: dict[str, Any] = {}
    target = Path(out)
    written = []
    try:
        if fmt in ("asap", "tiff"):  # every slide opened before the first file is written
            paths = {e.slide: e.path for e in read_cohort(cohort)} if cohort else {}
            for slide in wanted:
                path = paths.get(slide, Path(slide))
                if not Path(path).is_file():
                    hint = "" if cohort else " (give --cohort)"
                    raise PathViewerError(f"{slide}: slide file not found{hint}")
                slides_open[slide] = open_slide(path)
        elif fmt in ("qupath", "contours"):
            # QuPath crops a slide with bounds (MRXS): its tiles and regions move with them.
            # A slide that cannot be found is taken to have none.
            paths = {e.slide: e.path for e in read_cohort(cohort)} if cohort else {}
            for slide in wanted:
                path = paths.get(slide, Path(slide))
                if Path(path).is_file():
                    slides_open[slide] = open_slide(path)
        _make_folder(target)
        for slide, heatmap in heatmaps.items():
            out_path = target / export_name(slide, fmt)
            try:
                write_heatmap(heatmap, out_path, fmt, slides_open.get(slide))
            except OSError as error:
                raise PathViewerError(
                    f"{out_path}: cannot write ({error.strerror or error})"
                ) from None
            written.append(out_path)
    finally:
        for source in slides_open.values():
            source.close()
    return written


def convert_heatmap_file(
    source: str | Path,
    slide_path: str | Path,
    fmt: str,
    out: str | Path,
    patch_size: int | None = None,
    dataset: str | None = None,
    class_index: int | None = None,
    stride_div: int = 2,
) -> Path:
    """Convert another tool's heatmap of one slide (``pathviewer export heatmap FILE --slide S``).

    ``source`` is read as :func:`~pathviewer.core.heatmap_export.read_heatmap_file` reads it
    (QuPath tiles, a ``x,y,width,height,value`` CSV, CLAM's h5, Slideflow's npz) on the slide's
    size and pyramid, then written in export format ``fmt`` into ``out``, named after the slide.

    Parameters
    ----------
    patch_size, dataset, class_index, stride_div
        What the file may not say (see
        :class:`~pathviewer.core.heatmap_export.HeatmapImportOptions`).

    Returns
    -------
    Path
        The file written (atomically; nothing is written when reading fails).

    Raises
    ------
    PathViewerError
        One line naming the file, the slide or the option that is missing.
    """
    from pathviewer.core.annotations import qupath_offset
    from pathviewer.core.heatmap_export import (
        HeatmapImportOptions,
        PatchSizeNeeded,
        export_name,
        read_heatmap_file,
        write_heatmap,
    )
    from pathviewer.core.slide import open_slide

    export_name("x", fmt)  # an unknown format fails before anything is read
    if not Path(source).is_file():
        raise PathViewerError(f"{source}: heatmap file not found")
    slide = open_slide(slide_path)
    try:
        options = HeatmapImportOptions(
            level_downsamples=tuple(float(d) for d in slide.level_downsamples),
            patch_size=patch_size,
            dataset=dataset,
            class_index=class_index,
            stride_div=stride_div,
            qupath_offset=qupath_offset(slide.properties),
        )
        try:
            heatmap = read_heatmap_file(source, str(slide_path), slide.dimensions, options)
        except PatchSizeNeeded as error:
            raise PathViewerError(f"{error} (--patch-size)") from None
        target = Path(out)
        _make_folder(target)
        out_path = target / export_name(str(slide_path), fmt)
        try:
            write_heatmap(heatmap, out_path, fmt, slide)
        except OSError as error:
            raise PathViewerError(f"{out_path}: cannot write ({error.strerror or error})") from None
    finally:
        slide.close()
    return out_path


def label_project_patches(
    project_dir: str | Path, patch_size: int = 256, background_class: str = "Normal"
) -> Generator[Progress, None, int]:
    """Patch labels from the project's drawn regions, for label refinement.

    The step ``pathviewer labels from-annotations`` does for a cohort, on a project: every
    slide with annotations is tiled (tissue only) and each patch gets the class covering most
    of it, else ``background_class``.  The labels are stored untrusted (source ``imported``), so
    a refinement run may question them; reviewed labels stay as they are.

    Returns
    -------
    int
        Patch labels stored.

    Raises
    ------
    PathViewerError
        No annotated slide in the project, a slide that cannot be opened (named), or a bad
        patch size.
    """
    from pathviewer.core.geometry import patch_labels_from_regions
    from pathviewer.core.slide import open_slide
    from pathviewer.core.store import Project
    from pathviewer.core.tiling import iter_tissue_boxes

    if patch_size <= 0:
        raise TrainingError(f"patch size must be positive, got {patch_size}")
    stored = 0
    with Project.open(project_dir) as project:
        annotated = [
            (record, [a.annotation for a in project.annotations(record.id)])
            for record in project.slides()
        ]
        annotated = [(record, regions) for record, regions in annotated if regions]
        if not annotated:
            raise TrainingError(
                f"{project_dir}: no slide of the project has annotations to make patch labels"
                " from (draw the regions first)"
            )
        for number, (record, regions) in enumerate(annotated, start=1):
            yield Progress("patch labels", number - 1, len(annotated), f"tiling {record.name}")
            slide = open_slide(record.path)
            try:
                boxes = yield from iter_tissue_boxes(slide, patch_size)
            finally:
                slide.close()
            names = patch_labels_from_regions(regions, boxes, background_class)
            rows = [(record.id, *box, name) for box, name in zip(boxes, names, strict=True)]
            stored += len(project.add_patch_labels(rows, source="imported"))
        yield Progress("patch labels", len(annotated), len(annotated), f"{stored} patch labels")
    return stored


def demo_cohort_is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a complete demo cohort (its CSV lists only existing files)."""
    from pathviewer.core.cohort import read_cohort

    try:
        read_cohort(folder / "cohort.csv", check_files=True)
    except PathViewerError:
        return False
    return True


def prepare_demo_cohort(regenerate: bool = False) -> Generator[Progress, None, Path]:
    """Generate the demo cohort into :func:`pathviewer.paths.demo_cohort_dir` unless complete.

    The cohort is generated in a temporary sibling folder and renamed into place, so an
    interrupted (or cancelled) generation never looks complete.  Returns ``cohort.csv``.
    ``pathviewer demo`` drives it in the terminal with ``--no-gui``; otherwise the window opens
    first and runs it on its worker thread, so a first launch is never a silent wait.
    """
    import shutil
    import tempfile

    from pathviewer.core.realistic import demo_settings, generate_realistic_cohort
    from pathviewer.paths import demo_cohort_dir

    target = demo_cohort_dir()
    if not regenerate and demo_cohort_is_complete(target):
        return target / "cohort.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".demo-cohort-", dir=target.parent))
    try:
        yield from generate_realistic_cohort(work, **demo_settings())
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "cohort.csv"


def _make_folder(target: Path) -> None:
    """Create an output folder; one that cannot be made is a PathViewerError naming it."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PathViewerError(f"{target}: cannot create the folder ({error.strerror})") from None
