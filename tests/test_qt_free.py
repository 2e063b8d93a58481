"""core/, ml/, session/, jobs and runs must import with PySide6 (and every Qt binding) made unimportable."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = r"""
import importlib.abc, sys, pkgutil
class BlockQt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'PySide6', 'PyQt5', 'PyQt6', 'PySide2', 'pyqtgraph', 'superqt', 'qtpy', 'shiboken6'}:
            raise ImportError(f'blocked Qt import: {name}')
        return None
sys.meta_path.insert(0, BlockQt())
import pathviewer.core, pathviewer.ml, pathviewer.session, pathviewer.jobs, pathviewer.runs
names = []
for package in (pathviewer.core, pathviewer.ml, pathviewer.session):
    for info in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):
        importlib.import_module(info.name)
        names.append(info.name)
leaked = [m for m in sys.modules if m.split('.')[0] in {'PySide6', 'shiboken6', 'pyqtgraph', 'superqt'}]
assert not leaked, leaked
print(len(names))
"""


def test_core_and_ml_import_without_qt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 3  # every module was imported, not just the packages


def test_blocker_really_blocks() -> None:
    """The same blocker makes a Qt import fail, so the test above could fail."""
    code = BLOCKER.split("import pathviewer.core")[0] + "import PySide6.QtCore\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "blocked Qt import" in result.stderr
