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
        ),
    )
    heatmap.add_argument("predictions", help="folder written by `pathviewer infer`")
    heatmap.add_argument(
        "--format",
        required=True,
        choices=("qupath", "asap", "tiff", "csv", "contours", "contours-asap"),
        dest="fmt",
    )
    heatmap.add_argument("--out", required=True, help="folder for the exported files")
    heatmap.add_argument("--cohort", help="cohort CSV that names the slides (for asap, tiff)")
    heatmap.add_argument(
        "--slide", action="append", default=[], help="only this slide (as slides.csv names it)"
    )
    heatmap.set_defaults(func=_export_heatmap)


def _export_heatmap(args: argparse.Namespace) -> int:
    from pathviewer.jobs import export_heatmaps

    written = export_heatmaps(
        args.predictions, args.fmt, args.out, cohort=args.cohort, slides=args.slide or None
    )
    for path in written:
        print(path)
    print(f"{len(written)} {args.fmt} file(s) in {Path(args.out)}")
    return 0
