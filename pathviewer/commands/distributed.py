"""``pathviewer infer ... --shard i/N`` and ``pathviewer infer merge SHARD_DIR... --out PRED_DIR``.

``--shard`` is hooked onto the ``infer`` parser of :mod:`pathviewer.commands.ngsd` (registered
before this module): without it ``infer`` runs unchanged; with it, only slides ``i::N`` of the
split are scored and a ``shard.json`` is added to the folder.  ``infer merge`` is routed by
:func:`pathviewer.cli.main` to the internal command ``infer-merge`` (argparse cannot give a
command with options a subcommand of its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pathviewer.cli import CommandGroups


def _infer_shard(args: argparse.Namespace, plain: Callable[[argparse.Namespace], int]) -> int:
    if args.shard is None:
        return plain(args)
    from pathviewer.ml.distributed import parse_shard, write_shard_manifest

    index, count = parse_shard(args.shard)
    args.shard_range = (index, count)
    status = plain(args)
    write_shard_manifest(
        args.out, index, count, args.cohort, None if args.split == "all" else args.split
    )
    print(
        f"shard {index}/{count} written to {args.out}; join the shards"
        " with `pathviewer infer merge SHARD_DIR... --out PRED_DIR`",
        file=sys.stderr,
    )
    return status


def _merge(args: argparse.Namespace) -> int:
    from pathviewer.ml.distributed import merge_predictions

    summary = merge_predictions(args.shard_dirs, args.out)
    print(
        f"merged {summary['shards']} shards: {summary['slides']} slides, "
        f"{summary['patches']} patches -> {args.out}",
        file=sys.stderr,
    )
    return 0


def register(groups: CommandGroups) -> None:
    """Add ``--shard`` to ``infer`` (when registered) and the ``infer merge`` command."""
    infer = groups.root.choices.get("infer")
    if isinstance(infer, argparse.ArgumentParser):
        infer.add_argument(
            "--shard",
            metavar="INDEX/COUNT",
            help="score only slides INDEX::COUNT of the split (e.g. 3/8 for job 3 of an array"
            " of 8); join the folders with `pathviewer infer merge`",
        )
        plain = infer.get_default("func")
        infer.set_defaults(func=lambda a, plain=plain: _infer_shard(a, plain))
        infer.epilog = (
            "pathviewer infer merge SHARD_DIR... --out PRED_DIR joins the folders of --shard jobs."
        )
    merge = groups.root.add_parser(
        "infer-merge",
        prog="pathviewer infer merge",
        description="Join the predictions folders of `pathviewer infer --shard i/N` jobs into one"
        " (patches.csv, slides.csv, heatmaps/) in cohort order.",
    )
    merge.add_argument("shard_dirs", nargs="+", metavar="SHARD_DIR", help="shard folders")
    merge.add_argument("--out", required=True, help="merged predictions folder")
    merge.set_defaults(func=_merge)
