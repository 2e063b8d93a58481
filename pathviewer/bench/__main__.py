"""Dispatch ``python -m pathviewer.bench NAME [options]`` to a benchmark module.

Add a benchmark by writing ``pathviewer/bench/<name>.py`` with ``main(argv: list[str]) -> int``
and listing it in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

#: Benchmark name -> module with ``main(argv) -> int``.
BENCHMARKS: dict[str, str] = {
    "viewer": "pathviewer.bench.viewer",
    "ngsd": "pathviewer.bench.ngsd",
    "ngsd-realistic": "pathviewer.bench.ngsd_realistic",
    "refine": "pathviewer.bench.refine",
    "refine-realistic": "pathviewer.bench.refine_realistic",
    "training_ui": "pathviewer.bench.training_ui",
    "big-slide": "pathviewer.bench.big_slide",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark named by the first argument with the remaining arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in BENCHMARKS:
        names = ", ".join(sorted(BENCHMARKS))
        print(
            f"usage: python -m pathviewer.bench NAME [options]   (NAME: {names})", file=sys.stderr
        )
        return 0 if args and args[0] in ("-h", "--help") else 2
    module = importlib.import_module(BENCHMARKS[args[0]])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
