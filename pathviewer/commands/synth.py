"""``pathviewer synth`` (synthetic cohort) and ``pathviewer demo`` (demo cohort + viewer)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pathviewer.cli import CommandGroups


def register(groups: CommandGroups) -> None:
    """Add the ``synth`` and ``demo`` subcommands."""
    synth = groups.root.add_parser(
        "synth",
        help="generate a synthetic H&E cohort with tumour ground truth",
        description=(
            "Write pyramidal TIFF slides (0.5 um/px), GeoJSON tumour/stroma polygons and "
            "cohort.csv (half positive, train/test split) into OUT_DIR.  The realistic style "
            "(default) uses real H&E texture with a subtle tumour change and a different stain "
            "on every slide; the stylised style draws cartoon tissue (fast plumbing tests)."
        ),
    )
    synth.add_argument(
        "--style",
        choices=("realistic", "stylised"),
        default="realistic",
        help="realistic (real H&E texture, default) or stylised (cartoon tissue)",
    )
    synth.add_argument(
        "--texture-from",
        metavar="SLIDE",
        help="realistic: take the tissue texture from this slide (default: the shipped H&E scan)",
    )
    synth.add_argument(
        "--strength",
        type=float,
        default=0.5,
        help="realistic: tumour change 0-1 (nuclear size, crowding, hyperchromasia; default 0.5)",
    )
    synth.add_argument(
        "--stain-variation",
        type=float,
        default=1.0,
        help="realistic: scale of the stain differences between slides (default 1)",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    synth.add_argument("--slides", type=int, default=6, help="number of slides (default 6)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--size", type=int, default=3072, help="slide width and height in pixels (default 3072)"
    )
    synth.add_argument(
        "--tumour-fraction",
        default=None,
        help="tumour share of the tissue of positive slides: one value, or LOW,HIGH for a "
        "per-slide range (default 0.25 stylised, 0.02,0.2 realistic)",
    )
    synth.add_argument(
        "--large",
        action="store_true",
        help="write one large positive slide (OUT_DIR/large.tif, --size defaults to 20000) instead",
    )
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    synth.set_defaults(func=_run_synth)

    demo = groups.root.add_parser(
        "demo",
        help="generate the demo cohort (once) and open it in the viewer",
        description="Generate the synthetic demo cohort into the user data folder the first "
        "time, then open it in the viewer.",
    )
    demo.add_argument(
        "--regenerate", action="store_true", help="generate the demo cohort again from scratch"
    )
    demo.add_argument(
        "--no-gui", action="store_true", help="only generate; print the cohort.csv path"
    )
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_run_demo)


def _run_synth(args: argparse.Namespace) -> int:
    from pathviewer.core.progress import drive
    from pathviewer.core.synth import generate_cohort, write_large_slide

    if args.large:
        size = args.size if args.size != 3072 else 20000
        path = drive(
            write_large_slide(Path(args.out_dir) / "large.tif", size=size, seed=args.seed),
            quiet=args.quiet,
        )
        print(path)
        return 0
    fraction = _fraction_bounds(args.tumour_fraction)
    if args.style == "stylised":
        job = generate_cohort(
            args.out_dir,
            n_slides=args.slides,
            seed=args.seed,
            size=args.size,
            tumour_fraction=fraction[1] if fraction else 0.25,
        )
    else:
        from pathviewer.core.realistic import generate_realistic_cohort

        job = generate_realistic_cohort(
            args.out_dir,
            n_slides=args.slides,
            seed=args.seed,
            size=args.size,
            tumour_fraction=fraction or (0.02, 0.2),
            strength=args.strength,
            stain_variation=args.stain_variation,
            texture=args.texture_from,
        )
    csv_path = drive(job, quiet=args.quiet)
    print(csv_path)
    return 0


def _fraction_bounds(text: str | None) -> tuple[float, float] | None:
    """``--tumour-fraction``: ``0.1`` (both bounds) or ``0.02,0.2``."""
    from pathviewer.core.errors import PathViewerError

    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise PathViewerError(f"--tumour-fraction {text!r}: give a fraction (0.1) or LOW,HIGH")
    return (values[0], values[-1])


def ensure_demo_cohort(regenerate: bool = False, quiet: bool = False) -> Path:
    """Generate the demo cohort unless complete, with terminal progress; returns ``cohort.csv``.

    The job is :func:`pathviewer.jobs.prepare_demo_cohort`, which the window runs too.
    """
    from pathviewer.core.progress import drive
    from pathviewer.jobs import demo_cohort_is_complete, prepare_demo_cohort
    from pathviewer.paths import demo_cohort_dir

    target = demo_cohort_dir()
    if not quiet and (regenerate or not demo_cohort_is_complete(target)):
        print(f"Generating the demo cohort in {target} (once) ...", file=sys.stderr)
    return drive(prepare_demo_cohort(regenerate), quiet=quiet)


def _run_demo(args: argparse.Namespace) -> int:
    if args.no_gui:
        print(ensure_demo_cohort(regenerate=args.regenerate, quiet=args.quiet))
        return 0
    # The window opens at once and generates the cohort (first launch) in it, then trains a
    # small model in the background (once) and shows its heatmap.
    from pathviewer.gui.demo import run_demo_app

    return run_demo_app(regenerate=args.regenerate)
