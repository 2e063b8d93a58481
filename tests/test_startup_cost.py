"""The window opens without importing torch: about 500 MB and a second saved at every launch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("PySide6")

SCRIPT = """
import sys
from pathviewer.gui.app import create_main_window, ensure_application
app = ensure_application()
window = create_main_window()
window.context.training.device_combo.count()
print("torch" in sys.modules)
window.close()
"""


def test_the_main_window_does_not_import_torch(tmp_path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path))
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"
