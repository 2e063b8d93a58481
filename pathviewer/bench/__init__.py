"""Benchmarks: ``python -m pathviewer.bench NAME [options]`` (see :mod:`pathviewer.bench.__main__`)."""

from __future__ import annotations

import json
import os
from typing import Any


def emit_report(results: dict[str, Any], json_path: str | os.PathLike[str] | None) -> None:
    """Print a benchmark's figures as JSON and, when asked, write them (atomically) to a file."""
    from pathviewer.core.atomic import atomic_write

    text = json.dumps(results, indent=2)
    print(text)
    if json_path:
        with atomic_write(json_path) as handle:
            handle.write(text + "\n")
