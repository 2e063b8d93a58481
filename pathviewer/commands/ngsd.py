"""``pathviewer train ngsd|naive|abmil``, ``pathviewer infer`` and ``pathviewer evaluate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pathviewer.cli import CommandGroups

if TYPE_CHECKING:
    from pathviewer.ml.config import NGSDConfig


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cohort", required=True, help="cohort CSV (slide,label,split,annotations)"
    )
    parser.add_argument("--out", required=True, help="run folder (model.pt, metrics.jsonl...)")
    parser.add_argument("--demo", action="store_true", help="small CPU configuration (minutes)")
    parser.add_argument("--epochs", type=int, help="passes over the training patches")
    parser.add_argument("--steps", type=int, help="training steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=int, help="patches per batch (paper: 64)")
    parser.add_argument("--k", type=float, help="estimated positive-patch fraction K")
    parser.add_argument("--ema", type=float, help="teacher EMA momentum")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--patch-size", type=int, help="patch side in level-0 px (paper: 512)")
    parser.add_argument("--input-size", type=int, help="network input side in px")
    parser.add_argument(
        "--read-level",
        help="read patches at this downsample factor (e.g. 2) or objective magnification (e.g."
        " 20x); default 20x (demo: downsample 2)",
    )
    parser.add_argument("--threshold", type=float, help="background edge-score threshold (15)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--workers", type=int, help="DataLoader workers (-1 = automatic)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument(
        "--encoder",
        help="resnet18 (default), resnet34, resnet50 or timm:NAME[,key=value...] (a timm"
        " architecture, built without downloading; its weights from --weights)",
    )
    parser.add_argument(
        "--weights",
        help="encoder weights file (.safetensors, .pt, .pth, .bin; optional, never downloaded)",
    )
    parser.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="compute each patch's encoder features once and train only the heads (fast on a CPU)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _config(args: argparse.Namespace, method: str) -> NGSDConfig:
    from pathviewer.core.errors import TrainingError
    from pathviewer.ml.config import NGSDConfig, demo_config

    cfg = demo_config() if args.demo else NGSDConfig()
    cfg.method = method
    mapping = {
        "epochs": "epochs",
        "steps": "steps",
        "batch_size": "batch_size",
        "k": "k",
        "ema": "ema",
        "lr": "lr",
        "patch_size": "patch_size",
        "input_size": "input_size",
        "threshold": "threshold",
        "device": "device",
        "workers": "workers",
        "seed": "seed",
        "weights": "weights",
        "encoder": "arch",
    }
    for arg, name in mapping.items():
        value = getattr(args, arg, None)
        if value is not None:
            setattr(cfg, name, value)
    if args.freeze_encoder:
        cfg.freeze_encoder = True
    if args.epochs is not None and args.steps is None:
        cfg.steps = 0
    if args.read_level:
        text = args.read_level.strip().lower()
        try:
            if text.endswith("x"):
                cfg.magnification = float(text[:-1])
            else:
                cfg.read_downsample = float(text)
                cfg.magnification = 0.0
        except ValueError:
            raise TrainingError(
                f"--read-level {args.read_level!r}: give a downsample (2) or a magnification (20x)"
            ) from None
    return cfg


def _train(args: argparse.Namespace, method: str) -> int:
    from pathviewer.core.progress import drive
    from pathviewer.runs import prepare_run_dir

    cfg = _config(args, method)
    # Before any rank joins the process group (nothing is written until all have): every rank
    # sees the folder as it was.
    prepare_run_dir(args.out, args.resume, args.overwrite)
    # Under torchrun: join the process group (DDP); only rank 0 shows progress and prints.
    from pathviewer.ml.distributed import DistContext, launched_by_torchrun

    if method == "abmil" and launched_by_torchrun():
        from pathviewer.core.errors import TrainingError

        raise TrainingError("train abmil runs in one process; torchrun supports ngsd and naive")
    dist = DistContext.from_env(cfg.device)
    quiet = args.quiet or (dist is not None and not dist.is_main)
    from pathviewer.jobs import train_slide_model

    try:
        result = drive(
            train_slide_model(args.cohort, args.out, cfg, resume=args.resume, dist=dist),
            quiet=quiet,
        )
    finally:
        if dist is not None:
            dist.close()
    if dist is not None and not dist.is_main:
        return 0
    print(
        json.dumps(
            {
                "model": str(result.model_path),
                "steps": result.steps,
                "seconds": round(result.seconds, 1),
                **result.metrics,
            }
        )
    )
    if getattr(result, "degenerate", False):
        # Exit 3 (not 2: the input was fine): the run finished, but its model is not usable.
        print(
            f"pathviewer: training degenerated ({'; '.join(result.guard)}); "
            f"{result.model_path} is marked degenerate: do not use its heatmaps",
            file=sys.stderr,
        )
        return 3
    return 0


def _infer(args: argparse.Namespace) -> int:
    from pathviewer.core.progress import drive
    from pathviewer.jobs import predict_cohort

    split = None if args.split == "all" else args.split
    results = drive(
        predict_cohort(
            args.model,
            args.cohort,
            args.out,
            split,
            args.device,
            args.batch_size,
            args.workers,
            args.pooling,
            # (index, count) set by the --shard hook of pathviewer.commands.distributed
            shard=getattr(args, "shard_range", None),
        ),
        quiet=args.quiet,
    )
    for r in results:
        print(f"{r.tiled.entry.slide}\t{r.score:.4f}\t{len(r.probs)} patches")
    print(f"predictions written to {args.out}", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from pathviewer.core.predictions import EVALUATION_JSON
    from pathviewer.ml.metrics import evaluate_predictions, format_table, write_json

    split = None if args.split == "all" else args.split
    main = evaluate_predictions(args.cohort, args.pred, split)
    results = [main] + [evaluate_predictions(args.cohort, d, split) for d in args.compare or []]
    out = Path(args.json) if args.json else Path(args.pred) / EVALUATION_JSON
    data = main if len(results) == 1 else {"methods": results}
    write_json(out, data)
    print(format_table(results))
    print(json.dumps(data, indent=2))
    return 0


def register(groups: CommandGroups) -> None:
    """Add ``train ngsd``/``train naive``/``train abmil``, ``infer`` and ``evaluate``."""
    for method, help_text in (
        ("ngsd", "negative-sample guided self-distillation (weak slide labels)"),
        ("naive", "baseline: instance classifier, each patch inherits its slide label"),
        ("abmil", "baseline: attention MIL (Ilse et al. 2018) on the same encoder"),
    ):
        parser = groups.train.add_parser(method, help=help_text)
        _add_train_options(parser)
        if method != "abmil":
            parser.add_argument(
                "--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt"
            )
        else:
            parser.set_defaults(resume=False)
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace the run already in --out (without it, or --resume, train refuses)",
        )
        parser.set_defaults(func=lambda a, m=method: _train(a, m))

    infer = groups.root.add_parser("infer", help="score the patches of a cohort split")
    infer.add_argument("--model", required=True, help="RUN_DIR/model.pt")
    infer.add_argument("--cohort", required=True, help="cohort CSV")
    infer.add_argument("--out", required=True, help="predictions folder")
    infer.add_argument("--split", default="test", help="train, val, test or all (default test)")
    infer.add_argument("--device", default="auto")
    infer.add_argument("--batch-size", type=int, default=128)
    infer.add_argument("--workers", type=int, default=0)
    infer.add_argument("--pooling", choices=("max", "topk", "fraction"), help="slide pooling")
    infer.add_argument("--quiet", action="store_true")
    infer.set_defaults(func=_infer)

    evaluate = groups.root.add_parser("evaluate", help="instance AUC, bag AUC, bag accuracy")
    evaluate.add_argument("--cohort", required=True, help="cohort CSV")
    evaluate.add_argument("--pred", required=True, help="predictions folder (from infer)")
    evaluate.add_argument(
        "--compare", nargs="+", metavar="PRED_DIR", help="more predictions folders, side by side"
    )
    evaluate.add_argument("--split", default="test", help="split to evaluate (default test)")
    evaluate.add_argument("--json", help="output JSON (default PRED_DIR/evaluation.json)")
    evaluate.set_defaults(func=_evaluate)
