"""``pathviewer annotations ...``: annotation file tools.

``pathviewer annotations convert IN OUT`` converts between QuPath GeoJSON (``.geojson``/``.json``)
and ASAP XML (``.xml``), chosen by extension, with the import validation of both formats; Aperio
ImageScope XML (an ``.xml`` with root ``<Annotations>``) and NDP.view ``.ndpa`` (with ``--slide``)
are read too.
"""

from __future__ import annotations

import argparse
from typing import Any


def register(groups: Any) -> None:
    """Add the ``annotations`` subcommands to the CLI."""
    convert = groups.annotations.add_parser(
        "convert",
        help="convert annotations between QuPath GeoJSON and ASAP XML (Aperio, NDPA read too)",
        description=(
            "Convert an annotation file by extension: .geojson/.json (QuPath GeoJSON) and .xml "
            "(ASAP XML).  Aperio ImageScope XML (.xml, told apart by its root element) and "
            "NDP.view .ndpa are read too; an .ndpa needs --slide (its coordinates are nanometres "
            "from the slide centre).  A malformed input stops with an error naming the feature; "
            "the output is written atomically, so it is either complete or absent."
        ),
    )
    convert.add_argument("input", help="annotation file to read (.geojson, .json, .xml or .ndpa)")
    convert.add_argument("output", help="annotation file to write (.geojson, .json or .xml)")
    convert.add_argument(
        "--slide",
        help="the slide the annotations belong to: when it has bounds (openslide.bounds-x/y,"
        " typical of MRXS), GeoJSON is read and written in QuPath's cropped coordinates and XML"
        " in full ones, so both files land on the same tissue; an .ndpa is placed with the"
        " slide's resolution and offset from the slide centre",
    )
    convert.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from pathviewer.core.annotations import (
        annotation_format,
        read_annotations,
        shift_annotations,
        write_annotations,
    )

    # refuse an output type that cannot be written before reading anything
    annotation_format(args.output, writing=True)
    dx = dy = 0.0
    properties: dict[str, str] | None = None
    if args.slide:
        from pathviewer.core.annotations import qupath_offset
        from pathviewer.core.slide import open_slide

        source = open_slide(args.slide)
        try:
            properties = dict(source.properties)
            dx, dy = qupath_offset(properties)
        finally:
            source.close()
    annotations = read_annotations(args.input, properties)
    if annotation_format(args.input) == "geojson":  # QuPath's coordinates -> full ones
        annotations = shift_annotations(annotations, dx, dy)
    if annotation_format(args.output) == "geojson":  # full coordinates -> QuPath's
        annotations = shift_annotations(annotations, -dx, -dy)
    write_annotations(args.output, annotations)
    print(f"{len(annotations)} annotations: {args.input} -> {args.output}")
    if dx or dy:
        print(f"GeoJSON in QuPath's coordinates: shifted by the slide's bounds ({dx:g}, {dy:g})")
    invalid = [
        a.name or f"#{i + 1}"
        for i, a in enumerate(annotations)
        if a.geometry.geom_type in ("Polygon", "MultiPolygon") and not a.geometry.is_valid
    ]
    if invalid:
        # Reported, not repaired: a converter that changes shapes loses what the annotator drew.
        print(
            f"{len(invalid)} outline(s) cross themselves ({', '.join(invalid[:5])}"
            f"{', ...' if len(invalid) > 5 else ''}): kept as drawn; areas and masks use a"
            " repaired copy"
        )
    return 0
