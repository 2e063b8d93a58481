"""``pathviewer train noisy`` (label refinement) and ``pathviewer labels from-annotations``."""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

from pathviewer.cli import CommandGroups


def register(groups: CommandGroups) -> None:
    """Add ``train noisy`` and ``labels from-annotations``."""
    from pathviewer.ml.refine import RefineConfig

    d = RefineConfig()
    train = groups.train.add_parser(
        "noisy",
        help="train a patch classifier on noisy labels, refine the labels and flag suspects",
        description=(
            "Train on labels.csv (slide,x,y,width,height,label[,trusted]) with the gradient-density "
            "and Gaussian weighted loss, refine the labels after a warm-up, and write model.pt, "
            "config.json, metrics.jsonl, refined_labels.csv and flags.csv into RUN_DIR."
        ),
    )
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", metavar="CSV", help="patch label table")
    source.add_argument(
        "--project", metavar="PROJECT_DIR", help="use the patch labels of a PathViewer project"
    )
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="output folder")
    train.add_argument(
        "--classes", nargs="+", metavar="NAME", help="class names in order (default: found)"
    )
    train.add_argument(
        "--epochs", type=int, default=d.max_rounds, help=f"maximum rounds (default {d.max_rounds})"
    )
    train.add_argument(
        "--bins", type=int, default=d.bins, help=f"gradient-density bins (default {d.bins})"
    )
    train.add_argument(
        "--momentum",
        type=float,
        default=d.momentum,
        help=f"EMA momentum of the density counts (default {d.momentum})",
    )
    train.add_argument(
        "--mu", type=float, default=d.mu, help=f"gradient learning centre (default {d.mu})"
    )
    train.add_argument(
        "--gamma", type=float, default=d.gamma, help=f"refinement exponent (default {d.gamma})"
    )
    train.add_argument(
        "--warmup", type=int, default=d.warmup, help=f"warm-up rounds (default {d.warmup})"
    )
    train.add_argument("--device", default=d.device, help="auto, cpu, cuda, mps (default auto)")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/model.pt")
    train.add_argument(
        "--last-round",
        action="store_true",
        help="keep the last round's model (default: the round with the best validation accuracy)",
    )
    train.add_argument(
        "--input-size",
        type=int,
        default=d.input_size,
        help=f"network input side in px (default {d.input_size}; 64 on a CPU)",
    )
    train.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"batch size (default {d.batch_size})"
    )
    train.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    train.add_argument(
        "--oos-folds",
        type=int,
        default=d.oos_folds,
        help="folds for out-of-sample flag probabilities (0: training model's; default 0)",
    )
    train.add_argument(
        "--model",
        choices=("resnet18", "small"),
        default="resnet18",
        help="resnet18 (default) or a small CNN (fast on a CPU)",
    )
    train.add_argument("--weights", metavar="PT", help="ResNet encoder weights (optional)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_run_train)

    labels = groups.labels.add_parser(
        "from-annotations",
        help="turn region annotations into patch labels by area majority",
        description=(
            "Tile every slide of a cohort (tissue patches only), label each patch with the class "
            "covering most of it, or --background-class when no region covers half of it, and "
            "write labels.csv."
        ),
    )
    labels.add_argument("--cohort", required=True, metavar="CSV", help="cohort.csv")
    labels.add_argument("--out", required=True, metavar="CSV", help="labels.csv to write")
    labels.add_argument(
        "--patch-size", type=int, default=256, help="patch side in level-0 px (default 256)"
    )
    labels.add_argument(
        "--background-class", default="Normal", help="label of tissue outside every region"
    )
    labels.add_argument(
        "--annotations",
        metavar="GEOJSON",
        nargs="*",
        help="GeoJSON files (QuPath) in cohort order, instead of the cohort's annotations column",
    )
    labels.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    labels.set_defaults(func=_run_from_annotations)


def _run_train(args: argparse.Namespace) -> int:
    import numpy as np

    from pathviewer.core.progress import drive
    from pathviewer.ml.patch_data import (
        PatchDataset,
        read_labels_csv,
        write_refinement_outputs,
    )
    from pathviewer.ml.refine import RefineConfig, iter_train_refine

    out = Path(args.out)
    search_dirs: list[Path] = []
    if args.project:
        labels_csv = export_project_labels(Path(args.project), out)
        search_dirs.append(Path(args.project))
    else:
        labels_csv = Path(args.labels)
    rows, classes = read_labels_csv(labels_csv, args.classes, search_dirs=search_dirs)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[r.label] for r in rows])
    trusted = np.array([r.trusted for r in rows])
    config = RefineConfig(
        max_rounds=args.epochs,
        warmup=args.warmup,
        bins=args.bins,
        momentum=args.momentum,
        mu=args.mu,
        gamma=args.gamma,
        device=args.device,
        input_size=args.input_size,
        batch_size=args.batch_size,
        lr=args.lr,
        oos_folds=args.oos_folds,
        seed=args.seed,
        select_best=not args.last_round,
    )
    n_classes = len(classes)
    if args.model == "small":
        from pathviewer.ml.small_cnn import SmallCNN

        def factory():  # type: ignore[no-untyped-def]
            return SmallCNN(n_classes, 3)
    else:
        from pathviewer.ml.models import build_classifier

        def factory():  # type: ignore[no-untyped-def]
            return build_classifier(n_classes, "resnet18", args.weights, args.input_size)

    dataset = PatchDataset(rows, args.input_size, cache=len(rows) * args.input_size**2 < 2**28)
    try:
        result = drive(
            iter_train_refine(
                dataset,
                labels,
                n_classes,
                factory,
                config,
                trusted,
                out_dir=out,
                resume=args.resume,
                classes=classes,
            ),
            quiet=args.quiet,
        )
    finally:
        dataset.close()
    with open(out / "config.json", encoding="utf-8") as handle:
        saved = json.load(handle)
    saved.update({"labels": str(labels_csv.resolve()), "model": args.model})
    from pathviewer.core.atomic import atomic_write

    with atomic_write(out / "config.json") as handle:
        json.dump(saved, handle, indent=2)
    write_refinement_outputs(
        out,
        rows,
        classes,
        result.refined,
        [(f.index, f.given, f.suggested, f.confidence, f.g) for f in result.flags],
    )
    kept = (
        result.history[result.selected_round - 1]
        if 0 < result.selected_round <= len(result.history)
        else {}
    )
    print(
        f"{out}: {result.rounds} rounds, model.pt = round {result.selected_round} "
        f"(val accuracy {kept.get('val_accuracy', float('nan')):.3f}), "
        f"{len(result.flags)} of {len(rows)} labels flagged (flags.csv)"
    )
    return 0


def export_project_labels(project_dir: Path, out: Path) -> Path:
    """Export a project's patch labels to ``RUN_DIR/project_labels.csv``."""
    from pathviewer.core.errors import TrainingError

    if importlib.util.find_spec("pathviewer.core.store") is None:
        raise TrainingError("--project needs the project store, which this build lacks")
    from pathviewer.core.store import Project

    project = Project.open(project_dir)
    try:
        path = out / "project_labels.csv"
        count = project.export_trusted_labels_csv(path)
    finally:
        project.close()
    if count == 0:
        raise TrainingError(f"{project_dir}: the project has no patch labels to train on")
    return path


def _run_from_annotations(args: argparse.Namespace) -> int:
    import csv

    from pathviewer.core.annotations import read_geojson
    from pathviewer.core.atomic import atomic_write
    from pathviewer.core.cohort import read_cohort
    from pathviewer.core.errors import CohortError
    from pathviewer.core.geometry import patch_labels_from_regions
    from pathviewer.core.progress import drive
    from pathviewer.core.slide import open_slide
    from pathviewer.core.tiling import iter_tile_slide

    entries = read_cohort(args.cohort)
    geojsons = args.annotations
    if geojsons and len(geojsons) != len(entries):
        raise CohortError(
            f"{args.cohort}: {len(entries)} slides but {len(geojsons)} --annotations files"
        )
    out = Path(args.out)
    if args.patch_size <= 0:
        raise CohortError(f"--patch-size must be positive, got {args.patch_size}")
    rows: list[list[object]] = []
    for i, entry in enumerate(entries):
        source = Path(geojsons[i]) if geojsons else entry.annotations
        annotations = read_geojson(source) if source is not None else []
        slide = open_slide(entry.path)
        try:
            # Score tissue at a coarse read downsample: the edge filter needs ~64 px per patch.
            downsample = max(1.0, args.patch_size / 64)
            index = drive(iter_tile_slide(slide, args.patch_size, downsample), quiet=args.quiet)
        finally:
            slide.close()
        boxes = [tuple(int(v) for v in b) for b in index.boxes()]
        names = patch_labels_from_regions(annotations, boxes, args.background_class)  # type: ignore[arg-type]
        rel = _relative(entry.path, out)
        for (x, y, w, h), name in zip(boxes, names, strict=True):
            rows.append([rel, x, y, w, h, name])
    if not rows:
        raise CohortError(f"{args.cohort}: no tissue patches found on any slide")
    with atomic_write(out) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["slide", "x", "y", "width", "height", "label"])
        writer.writerows(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row[5])] = counts.get(str(row[5]), 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"{out}: {len(rows)} patches ({summary})")
    return 0


def _relative(path: Path, out_csv: Path) -> str:
    import os

    try:
        return os.path.relpath(path, out_csv.resolve().parent)
    except ValueError:
        return str(path)
