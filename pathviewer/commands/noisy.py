"""``pathviewer train noisy`` (label refinement) and ``pathviewer labels from-annotations``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pathviewer.cli import CommandGroups


def register(groups: CommandGroups) -> None:
    """Add ``train noisy`` and ``labels from-annotations``."""
    from pathviewer.ml.refine import (
        CLASS_BALANCE,
        RANKINGS,
        REFINE_MODELS,
        REFINE_TOWARD,
        RefineConfig,
    )

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
        "--class-balance",
        choices=CLASS_BALANCE,
        default=d.class_balance,
        help=f"imbalanced labels: {', '.join(CLASS_BALANCE)} (default {d.class_balance})",
    )
    train.add_argument(
        "--refine-toward",
        choices=list(REFINE_TOWARD),
        default=d.refine_toward,
        help=f"with class balance, what labels are refined towards (default {d.refine_toward}: "
        "the balanced predictions with the decision offsets fitted on held-out labels)",
    )
    train.add_argument(
        "--rank-by",
        choices=list(RANKINGS),
        default=d.rank_by,
        help=f"order of flags.csv, the review queue (default {d.rank_by}: {RANKINGS[d.rank_by]})",
    )
    train.add_argument(
        "--oos-folds",
        type=int,
        default=d.oos_folds,
        help="folds for out-of-sample flag probabilities (0: training model's; default 0)",
    )
    train.add_argument(
        "--model",
        "--encoder",
        default=d.model,
        metavar="MODEL",
        help="; ".join(f"{k}: {v}" for k, v in REFINE_MODELS.items())
        + "; timm:NAME[,key=value...]: a timm encoder with a linear head (its weights from"
        f" --weights, never downloaded) (default {d.model})",
    )
    train.add_argument(
        "--weights",
        metavar="FILE",
        default="",
        help="encoder weights of resnet18 or timm:NAME (.safetensors, .pt, .pth, .bin)",
    )
    train.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="compute each patch's encoder features once and train only the head (fast on a CPU)",
    )
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

    audit = groups.labels.add_parser(
        "audit",
        help="who changed which label, annotation or slide decision when (CSV)",
        description="Write a project's history (slides, annotations, patch labels, flags,"
        " review and triage decisions) as CSV, oldest first.",
    )
    audit.add_argument("--project", required=True, metavar="DIR", help="project folder")
    audit.add_argument("--out", required=True, metavar="CSV", help="audit.csv to write")
    audit.set_defaults(func=_run_audit)

    report = groups.labels.add_parser(
        "review-report",
        help="how often review decisions followed the model's suggestion, seen and blind",
        description="Automation bias: the share of review decisions that match the suggestion"
        " when it was shown and in blind review, with the median seconds per decision (JSON).",
    )
    report.add_argument("--project", required=True, metavar="DIR", help="project folder")
    report.set_defaults(func=_run_review_report)

    agreement = groups.labels.add_parser(
        "agreement",
        help="agreement between reviewers (Cohen's and Fleiss' kappa) and the disputed patches",
        description="Kappa between every pair of reviewers over the patches both reviewed, per"
        " class (one against the rest) and, with three or more, Fleiss' kappa (JSON). Patches"
        " on which reviewers disagree stay untrusted until adjudicated.",
    )
    agreement.add_argument("--project", required=True, metavar="DIR", help="project folder")
    agreement.add_argument("--disputed", metavar="CSV", help="write the adjudication queue here")
    agreement.set_defaults(func=_run_agreement)

    adjudicate = groups.labels.add_parser(
        "adjudicate",
        help="settle a disputed patch: its label becomes the trusted one",
    )
    adjudicate.add_argument("--project", required=True, metavar="DIR", help="project folder")
    adjudicate.add_argument("--patch", required=True, type=int, help="patch_label_id")
    adjudicate.add_argument("--label", required=True, help="the label decided")
    adjudicate.add_argument("--author", help="who adjudicates (default: the user name)")
    adjudicate.add_argument("--note", default="", help="why")
    adjudicate.set_defaults(func=_run_adjudicate)

    flags = groups.labels.add_parser(
        "import-flags",
        help="put a run's flags.csv into a project's review queue (with the run's labels)",
        description="Import the flags of a refinement run into a project's review queue, all or"
        " nothing, mapping slide names onto the project's slides. The run's training labels"
        " (named in its config.json) come along so that each flag has the label it questions.",
    )
    flags.add_argument("flags", metavar="FLAGS_CSV", help="flags.csv of a train noisy run")
    flags.add_argument("--project", required=True, metavar="DIR", help="project folder")
    flags.add_argument(
        "--keep-queue", action="store_true", help="add to the current queue instead of replacing it"
    )
    flags.add_argument(
        "--no-labels", action="store_true", help="do not import the run's training labels"
    )
    flags.set_defaults(func=_run_import_flags)

    effect = groups.labels.add_parser(
        "effect",
        help="what the reviewed labels changed between two refinement runs",
        description="Flags that disappeared, new flags, refined labels that changed, and each"
        " run's agreement with the project's trusted (reviewed) labels (JSON).",
    )
    effect.add_argument("before", help="the earlier run folder (train noisy --out)")
    effect.add_argument("after", help="the later run folder, trained on the reviewed labels")
    effect.add_argument(
        "--project", metavar="DIR", help="score both on this project's trusted labels"
    )
    effect.set_defaults(func=_run_effect)


def _run_import_flags(args: argparse.Namespace) -> int:
    from pathviewer.core.store import Project
    from pathviewer.jobs import import_run_flags

    with Project.open(args.project) as project:
        count = import_run_flags(
            project, Path(args.flags), replace=not args.keep_queue, with_labels=not args.no_labels
        )
    print(f"{count} flags -> {args.project}")
    return 0


def _run_effect(args: argparse.Namespace) -> int:
    from pathviewer.core.run_effect import compare_refinement_runs
    from pathviewer.core.store import Project

    trusted = None
    if args.project:
        with Project.open(args.project) as project:
            trusted = {
                (str(Path(r.slide_path)), r.x, r.y, r.width, r.height): r.label
                for r in project.patch_labels(trusted=True)
            }
    print(json.dumps(compare_refinement_runs(args.before, args.after, trusted), indent=2))
    return 0


def _run_agreement(args: argparse.Namespace) -> int:
    from pathviewer.core.agreement import reviewer_agreement
    from pathviewer.core.store import Project

    with Project.open(args.project) as project:
        report = reviewer_agreement(project.reviewer_labels())
        if args.disputed:
            report["disputed_csv"] = str(args.disputed)
            project.export_disputed_csv(args.disputed)
    print(json.dumps(report, indent=2))
    return 0


def _run_adjudicate(args: argparse.Namespace) -> int:
    import getpass

    from pathviewer.core.store import Project

    with Project.open(args.project) as project:
        project.adjudicate(args.patch, args.label, args.author or getpass.getuser(), args.note)
    print(f"patch label {args.patch}: {args.label} (adjudicated)")
    return 0


def _run_audit(args: argparse.Namespace) -> int:
    from pathviewer.core.store import Project

    with Project.open(args.project) as project:
        count = project.export_audit_csv(args.out)
    print(f"{count} events -> {args.out}")
    return 0


def _run_review_report(args: argparse.Namespace) -> int:
    from pathviewer.core.store import Project

    with Project.open(args.project) as project:
        report = project.suggestion_agreement()
    print(json.dumps(report, indent=2))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from pathviewer.core.progress import drive
    from pathviewer.jobs import refine_run
    from pathviewer.ml.refine import RANKINGS, RefineConfig

    out = Path(args.out)
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
        class_balance=args.class_balance,
        rank_by=args.rank_by,
        refine_toward=args.refine_toward,
        seed=args.seed,
        select_best=not args.last_round,
        model=args.model,
        weights=args.weights,
        freeze_encoder=args.freeze_encoder,
    )
    result = drive(
        refine_run(
            out,
            config,
            labels_csv=None if args.project else Path(args.labels),
            project_dir=Path(args.project) if args.project else None,
            classes=args.classes,
            resume=args.resume,
        ),
        quiet=args.quiet,
    )
    kept = (
        result.history[result.selected_round - 1]
        if 0 < result.selected_round <= len(result.history)
        else {}
    )
    print(
        f"{out}: {result.rounds} rounds, model.pt = round {result.selected_round} "
        f"(val accuracy {kept.get('val_accuracy', float('nan')):.3f}, balanced "
        f"{kept.get('val_balanced_accuracy', float('nan')):.3f}), "
        f"{len(result.flags)} of {len(result.refined)} labels flagged (flags.csv, "
        f"{RANKINGS[config.rank_by]})"
    )
    if result.collapsed:
        # Exit 3 (as a degenerate NGSD run): the run finished but its model is not usable.
        print(
            f"pathviewer: error: {out}: the model collapsed: it predicts almost no "
            f"{', '.join(result.lost_classes)}; no labels were flagged",
            file=sys.stderr,
        )
        return 3
    return 0


def _run_from_annotations(args: argparse.Namespace) -> int:
    import csv

    from pathviewer.core.annotations import read_geojson
    from pathviewer.core.atomic import atomic_write
    from pathviewer.core.cohort import read_cohort
    from pathviewer.core.errors import CohortError
    from pathviewer.core.geometry import patch_labels_from_regions
    from pathviewer.core.progress import drive
    from pathviewer.core.slide import open_slide
    from pathviewer.core.tiling import iter_tissue_boxes

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
            boxes = drive(iter_tissue_boxes(slide, args.patch_size), quiet=args.quiet)
        finally:
            slide.close()
        names = patch_labels_from_regions(annotations, boxes, args.background_class)
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
