"""``pathviewer screenshot SLIDE OUT.png``: render the real main window offscreen to a PNG.

:func:`render_screenshot` is the reusable part: later options (``--heatmap PRED_DIR``...) hook in
through its ``before_grab`` callback, which receives the :class:`~pathviewer.gui.main_window.MainWindow`
after the slide is open and positioned, before the tiles are awaited and the window grabbed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pathviewer.core.errors import PathViewerError, SlideError

if TYPE_CHECKING:
    from pathviewer.cli import CommandGroups
    from pathviewer.gui.main_window import MainWindow


def _parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}") from None
    if not (200 <= width <= 8000 and 150 <= height <= 8000):
        raise argparse.ArgumentTypeError(f"size {text} out of range (200x150 .. 8000x8000)")
    return width, height


def _parse_center(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"center must be X,Y in level-0 px, got {text!r}"
        ) from None
    return x, y


def register(groups: CommandGroups) -> None:
    """Add ``screenshot`` and ``compare`` to the CLI."""
    parser = groups.root.add_parser(
        "screenshot",
        help="render the viewer window on a slide (or cohort CSV) to a PNG, offscreen",
        description="Render the viewer's main window offscreen to a PNG once every visible tile is loaded.",
    )
    parser.add_argument("slide", help="slide file or cohort CSV")
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument(
        "--size", type=_parse_size, default=(1400, 900), help="window size WxH (default 1400x900)"
    )
    parser.add_argument(
        "--center", type=_parse_center, default=None, help="centre X,Y in level-0 pixels"
    )
    parser.add_argument(
        "--mag", type=float, default=None, help="objective magnification (e.g. 10 for 10x)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for tiles")
    parser.add_argument(
        "--figure",
        type=float,
        metavar="SCALE",
        help="only the slide view with its scale bar and colour bar, at SCALE x the window's"
        " resolution (e.g. 2), for a figure",
    )
    parser.add_argument(
        "--heatmap",
        metavar="PRED_DIR",
        default=None,
        help="overlay the heatmap of the slide from a predictions folder (pathviewer infer) or .npz",
    )
    parser.add_argument(
        "--outlines",
        action="store_true",
        help="with --heatmap: draw the tumour annotations of the cohort CSV as outlines",
    )
    parser.set_defaults(func=_run)
    register_compare(groups)


def register_compare(groups: CommandGroups) -> None:
    """Add ``compare`` to the CLI."""
    parser = groups.root.add_parser(
        "compare",
        help="two runs' heatmaps of one slide side by side (and B - A), in the viewer or a PNG",
        description="Open the viewer with run A's heatmap of SLIDE beside run B's, linked, and"
        " their difference B - A (red where B scores higher).",
    )
    parser.add_argument("slide", help="the slide file (or a cohort CSV: its first slide)")
    parser.add_argument("run_a", help="predictions folder (pathviewer infer) or .npz of run A")
    parser.add_argument("run_b", help="predictions folder or .npz of run B")
    parser.add_argument(
        "--no-difference", action="store_true", help="two views only, without B - A"
    )
    parser.add_argument("--screenshot", metavar="OUT.png", help="render to a PNG, offscreen")
    parser.add_argument(
        "--size", type=_parse_size, default=(1600, 800), help="window size WxH (1600x800)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for tiles")
    parser.set_defaults(func=_run_compare)


def _compare_hook(args: argparse.Namespace, timeout: float) -> Callable[[MainWindow], None]:
    def hook(window: MainWindow) -> None:
        for run in (args.run_a, args.run_b):
            if not os.path.exists(run):
                raise PathViewerError(f"{run}: predictions folder or heatmap file not found")
        compare = window.context.compare
        compare.compare_runs(args.run_a, args.run_b, difference=not args.no_difference)
        for pane in compare.panes if timeout > 0 else ():
            if not pane.view.wait_until_idle(timeout):
                raise SlideError(args.slide, f"tiles did not load within {timeout:g} s")

    return hook


def _run_compare(args: argparse.Namespace) -> int:
    if not os.path.exists(args.slide):
        raise SlideError(args.slide, "file not found")
    if args.screenshot:
        render_screenshot(
            [args.slide],
            args.screenshot,
            size=args.size,
            before_grab=_compare_hook(args, args.timeout),
            timeout=args.timeout,
        )
        print(args.screenshot)
        return 0
    from pathviewer.gui.app import run_app

    for run in (args.run_a, args.run_b):
        if not os.path.exists(run):
            raise PathViewerError(f"{run}: predictions folder or heatmap file not found")
    return run_app([args.slide], after_open=_compare_hook(args, 0.0))


def _heatmap_hook(pred_dir: str, outlines: bool) -> Callable[[MainWindow], None]:
    """``before_grab`` that loads a heatmap (and tumour outlines) into the window."""

    def hook(window: MainWindow) -> None:
        if not os.path.exists(pred_dir):
            raise PathViewerError(f"{pred_dir}: heatmap folder or file not found")
        controller = window.context.heatmap
        controller.load_path(pred_dir)
        if controller.heatmap is None:
            raise PathViewerError(f"{pred_dir}: {controller.source or 'no heatmap for this slide'}")
        controller.set_outlines_visible(outlines)

    return hook


def _run(args: argparse.Namespace) -> int:
    render_screenshot(
        [args.slide],
        args.out,
        size=args.size,
        center=args.center,
        mag=args.mag,
        before_grab=_heatmap_hook(args.heatmap, args.outlines) if args.heatmap else None,
        timeout=args.timeout,
        figure_scale=args.figure,
    )
    print(args.out)
    return 0


def render_screenshot(
    paths: Sequence[str],
    out: str | os.PathLike[str],
    size: tuple[int, int] = (1400, 900),
    center: tuple[float, float] | None = None,
    mag: float | None = None,
    before_grab: Callable[[MainWindow], None] | None = None,
    timeout: float = 60.0,
    figure_scale: float | None = None,
) -> Path:
    """Open ``paths`` in a main window of ``size``, position it, wait for the tiles, save a PNG.

    Parameters
    ----------
    paths
        Slides or a cohort CSV (as for :func:`pathviewer.gui.app.run_app`).
    out
        PNG to write (atomically).
    size
        Window size in pixels.
    center, mag
        Level-0 centre and objective magnification (default: fit to window).
    before_grab
        Called with the window after positioning (add overlays here).
    timeout
        Seconds to wait for the visible tiles.
    figure_scale
        Write only the slide view (with its scale bar and colour bar) at this many times the
        screen resolution, for a figure; None writes the whole window.

    Raises
    ------
    SlideError
        A slide cannot be opened, or its tiles did not load in time.
    """
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from pathviewer.core.atomic import atomic_write
    from pathviewer.gui.app import create_main_window

    for path in paths:
        if not os.path.exists(path):
            raise SlideError(path, "file not found")
    window = create_main_window(list(paths), raise_errors=True)
    try:
        window.resize(*size)
        window.show()
        view = window.slide_view
        if view.current_slide is None:
            raise PathViewerError(f"{paths[0]}: nothing to show")
        view.wait_until_idle(min(timeout, 5.0))  # settle the layout and the fit-to-window first
        if mag is not None and not view.set_magnification(mag):
            raise SlideError(paths[0], f"has no objective power or MPP, cannot zoom to {mag:g}x")
        if center is not None:
            view.center_on(*center)
        if before_grab is not None:
            before_grab(window)
        if not view.wait_until_idle(timeout):
            raise SlideError(paths[0], f"tiles did not load within {timeout:g} s")
        from pathviewer.gui.viewer.slide_view import png_bytes

        image = window.figure_image(figure_scale) if figure_scale else window.grab().toImage()
        out = Path(out)
        data = png_bytes(image)
        with atomic_write(out, "wb") as handle:
            handle.write(data)
        return out
    finally:
        window.close()
        window.deleteLater()
