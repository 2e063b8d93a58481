"""Headless subcommands of the ``pathviewer`` CLI, one module per area.

Each module exposes ``register(groups: CommandGroups) -> None`` that adds its parsers and sets
``func`` (called with the parsed ``argparse.Namespace``, returns an exit code).  Heavy imports
(torch, Qt) happen inside ``func`` so that ``pathviewer --help`` stays fast.
"""
