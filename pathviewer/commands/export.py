"""``pathviewer export heatmap``: a predictions folder's heatmaps for QuPath, ASAP and others."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(groups: Any) -> None:
    """Add ``export heatmap`` to the CLI."""
    export = groups.root.add_parser("export", help="export results for other tools").add_subparsers(
        dest="what", metavar="WHAT", required=True
    )
    heatmap = export.add_parser(
        "heatmap",
        help="a predictions folder's heatmaps as QuPath tiles, ASAP likelihood maps, TIFF or CSV",
        description=(
            "One file per slide in OUT, named as each tool expects: qupath -> <slide>.tiles.geojson"
            " (tile objects with a 'Tumor probability' measurement: QuPath's Measure > Show"
            " measurement maps draws them); asap -> <slide>_likelihood_map.tif (float"
            " probabilities, one level per slide level with the slide's downsamples); tiff ->"
            " <slide>_probability.tif (8-bit, for QuPath or OpenSlide); csv -> <slide>.patches.csv"
            " (x,y,width,height,value); contours -> <slide>.tumour.geojson (QuPath annotations of"
            " the tumour regions: patches at or above 0.5 sharing edges, with their max and mean"
            " probability); contours-asap -> <slide>.tumour.xml (the same regions in ASAP XML)."
            " asap and tiff read the slide's pyramid: give the cohort"
            " CSV when slides.csv names slides by relative path."
            " Another tool's heatmap of one slide (QuPath tiles .geojson, x,y,width,height,value"
            " .csv, CLAM .h5, Slideflow .npz) is converted the same way: give the file instead of"
            " the folder and the slide file with --slide."
        ),
    )
    heatmap.add_argument(
        "predictions",
        help="folder written by `pathviewer infer`, or another tool's heatmap file (with --slide)",
    )
    heatmap.add_argument(
        "--format",
        required=True,
        choices=("qupath", "asap", "tiff", "csv", "contours", "contours-asap"),
        dest="fmt",
    )
    heatmap.add_argument("--out", required=True, help="folder for the exported files")
    heatmap.add_argument("--cohort", help="cohort CSV that names the slides (for asap, tiff)")
    heatmap.add_argument(
        "--slide",
        action="append",
        default=[],
        help="only this slide (as slides.csv names it); with a heatmap file: the slide file",
    )
    foreign = heatmap.add_argument_group("another tool's heatmap file")
    foreign.add_argument(
        "--patch-size",
        type=int,
        metavar="PX",
        help="level-0 side of a patch (CLAM) or tile (Slideflow) when the file does not say",
    )
    foreign.add_argument(
        "--dataset", help="CLAM h5 dataset of the scores (default: attention_scores, then A)"
    )
    foreign.add_argument(
        "--class",
        type=int,
        dest="class_index",
        metavar="N",
        help="which class of a Slideflow grid (default: the only one, or the second of two)",
    )
    foreign.add_argument(
        "--stride-div",
        type=int,
        default=None,
        metavar="N",
        help="Slideflow's stride_div: tile size over stride (default 2)",
    )
    heatmap.set_defaults(func=_export_heatmap)


#: Options that only a heatmap file of another tool takes (argparse dest -> flag).
FOREIGN_OPTIONS = {
    "patch_size": "--patch-size",
    "dataset": "--dataset",
    "class_index": "--class",
    "stride_div": "--stride-div",
}


def _export_heatmap(args: argparse.Namespace) -> int:
    from pathviewer.core.errors import PathViewerError
    from pathviewer.jobs import convert_heatmap_file, export_heatmaps

    if Path(args.predictions).is_file():
        if len(args.slide) != 1:
            raise PathViewerError(
                f"{args.predictions}: a heatmap file is for one slide: give its slide file"
                " with --slide SLIDE"
            )
        if args.cohort:
            raise PathViewerError(f"{args.predictions}: --cohort is for a predictions folder")
        path = convert_heatmap_file(
            args.predictions,
            args.slide[0],
            args.fmt,
            args.out,
            patch_size=args.patch_size,
            dataset=args.dataset,
            class_index=args.class_index,
            stride_div=2 if args.stride_div is None else args.stride_div,
        )
        print(path)
        return 0
    given = [flag for dest, flag in FOREIGN_OPTIONS.items() if getattr(args, dest) is not None]
    if given:
        raise PathViewerError(
            f"{args.predictions}: {given[0]} is for another tool's heatmap file, not a"
            " predictions folder"
        )
    written = export_heatmaps(
        args.predictions, args.fmt, args.out, cohort=args.cohort, slides=args.slide or None
    )
    for path in written:
        print(path)
    print(f"{len(written)} {args.fmt} file(s) in {Path(args.out)}")
    return 0
