"""The ``pathviewer`` command.

``pathviewer [SLIDE|COHORT.csv ...]`` opens the viewer (on the given slides or cohort);
``pathviewer SUBCOMMAND ...`` does headless work.  Subcommands live in
:mod:`pathviewer.commands` (one module per area); each registers its parsers here.

A :class:`~pathviewer.core.errors.PathViewerError`, and what a user's situation causes (an
OSError such as a full disk or a folder where a file was expected, MemoryError, a sqlite3 error
such as a locked database), end a headless command with exit code 2 and one line on stderr that
names the file and the cause (:func:`~pathviewer.core.errors.user_message`); no traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pathviewer._version import __version__
from pathviewer.core.errors import USER_ERRORS, PathViewerError, user_message

#: Modules of :mod:`pathviewer.commands` and the top-level commands each one adds to, in help
#: order.  Only the modules of the command being run are imported (some import torch, which takes
#: seconds); ``--help`` imports them all.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "synth": ("synth", "demo"),
    "view": ("screenshot", "compare"),
    "ngsd": ("train", "infer", "evaluate"),
    "noisy": ("train", "labels"),
    "annotations": ("annotations",),
    "distributed": ("infer", "infer-merge"),
    "export": ("export",),
}
BUILTIN_COMMANDS = ("gui", "train", "labels", "annotations")


@dataclass
class CommandGroups:
    """Subparser collections that command modules add to.

    Attributes
    ----------
    root
        Top-level subcommands (``synth``, ``infer``...).
    train
        ``pathviewer train METHOD`` subcommands.
    labels
        ``pathviewer labels ACTION`` subcommands.
    annotations
        ``pathviewer annotations ACTION`` subcommands.
    """

    root: argparse._SubParsersAction
    train: argparse._SubParsersAction
    labels: argparse._SubParsersAction
    annotations: argparse._SubParsersAction


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser.

    Parameters
    ----------
    command
        The top-level command about to run: only the modules that add to it are registered.
        None registers every available module (for ``--help``).
    """
    parser = argparse.ArgumentParser(
        prog="pathviewer",
        description="Whole-slide image viewer with embedded AI. Without a subcommand, opens the viewer.",
    )
    parser.add_argument("--version", action="version", version=f"pathviewer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    gui = root.add_parser("gui", help="open the viewer (the default when no subcommand is given)")
    gui.add_argument("paths", nargs="*", help="slides or a cohort CSV to open")
    gui.set_defaults(func=_run_gui)
    train = root.add_parser("train", help="train a model (ngsd, noisy)").add_subparsers(
        dest="method", metavar="METHOD", required=True
    )
    labels = root.add_parser("labels", help="patch label tools").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    annotations = root.add_parser("annotations", help="annotation file tools").add_subparsers(
        dest="action", metavar="ACTION", required=True
    )
    groups = CommandGroups(root, train, labels, annotations)
    for name, commands in COMMAND_MODULES.items():
        if command is not None and command not in commands:
            continue
        try:
            module = importlib.import_module(f"pathviewer.commands.{name}")
        except ModuleNotFoundError as error:
            if error.name == f"pathviewer.commands.{name}":
                continue  # an optional area that is not part of this build
            raise
        module.register(groups)
    return parser


def _run_gui(args: argparse.Namespace) -> int:
    from pathviewer.gui.app import run_app

    return run_app(list(args.paths))


def known_commands() -> set[str]:
    """Every top-level command name."""
    names = set(BUILTIN_COMMANDS)
    for commands in COMMAND_MODULES.values():
        names.update(commands)
    return names


def _first_positional(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _is_gui_invocation(argv: Sequence[str]) -> bool:
    """True when no subcommand is named: ``pathviewer`` or ``pathviewer slide.svs``."""
    first = _first_positional(argv)
    if first is None:
        return not any(a in ("-h", "--help", "--version") for a in argv)
    return first not in known_commands()


def _mistyped_command(argv: Sequence[str]) -> str | None:
    """Why ``argv`` is no viewer invocation: a first word that is neither a command nor a file.

    ``pathviewer exprot ...`` would otherwise open the viewer on a slide called "exprot".
    """
    first = _first_positional(argv)
    if first is None or os.path.exists(first) or Path(first).suffix:
        return None  # a file (or something named like one: the viewer says it is missing)
    close = difflib.get_close_matches(first, sorted(known_commands()), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{first!r} is not a command or a file{hint}; see 'pathviewer --help'"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pathviewer`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # ``infer`` is itself a command with options, so ``infer merge`` cannot be a subcommand of
    # it: route ``pathviewer infer merge ...`` to the internal command ``infer-merge``.
    if argv[:2] == ["infer", "merge"]:
        argv = ["infer-merge", *argv[2:]]
    if _is_gui_invocation(argv):
        mistyped = _mistyped_command(argv)
        if mistyped is not None:
            print(f"pathviewer: error: {mistyped}", file=sys.stderr)
            return 2
        argv = ["gui", *argv]
    first = _first_positional(argv)
    parser = build_parser(first if first in known_commands() else None)
    args = parser.parse_args(argv)
    from pathviewer.logs import setup_logging

    setup_logging(verbose=args.verbose)
    if not hasattr(args, "func"):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as error:
        line = user_message(error)
        # The log keeps the traceback of what is not the project's own error: an OSError or a
        # MemoryError may still point at a bug.
        logging.getLogger("pathviewer").info(
            "command failed: %s", line, exc_info=not isinstance(error, PathViewerError)
        )
        print(f"pathviewer: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pathviewer: interrupted", file=sys.stderr)
        return 130


def main_gui() -> int:
    """Entry point of the ``pathviewer-gui`` launcher (desktop file)."""
    return main(["gui", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
