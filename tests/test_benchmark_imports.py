"""Every import in the benchmarks resolves, including those inside functions.

Benchmarks are not run by the suite, so a module moved in a refactor would only break them
when someone measures; this catches it at once.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("pathviewer/bench/*.py")])


def _pathviewer_imports(path: Path) -> list[tuple[str, str | None, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pathviewer"):
            found += [(node.module or "", alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name, None, node.lineno) for a in node.names if a.name.startswith("pathviewer")
            ]
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_benchmark_imports_resolve(script: Path) -> None:
    for module, name, line in _pathviewer_imports(script):
        where = f"{script.relative_to(ROOT)}:{line}"
        imported = importlib.import_module(module)
        if name is not None and not hasattr(imported, name):
            importlib.import_module(f"{module}.{name}")  # a submodule, or ImportError names it
        assert imported is not None, where
