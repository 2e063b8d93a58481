"""The system libraries Qt's window plugin (xcb) needs on Linux, found and installed for ``make run``.

PySide6 wheels bundle Qt but not the X11/xcb libraries its ``xcb`` platform plugin links
against; on a fresh Debian or Ubuntu desktop some are missing, and the app then stops with Qt's
"could not load the Qt platform plugin" after minutes of set-up.  ``python -m
pathviewer.system_deps --install`` asks ``ldd`` what the plugin cannot find, maps each library
to its Debian package and installs them with apt (as root, or with ``sudo`` when that needs no
password); otherwise it prints the exact command and exits 1, before any long work.

Standard library only, and it never imports Qt: it must run where Qt cannot load.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

#: Shared library -> Debian/Ubuntu package, for everything Qt's xcb plugin links outside Qt.
SONAME_PACKAGES = {
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libGLdispatch.so.0": "libglvnd0",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb.so.1": "libxcb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
}


def plugin_libraries() -> list[Path]:
    """Qt's xcb platform plugin and the Qt library it loads, inside the installed PySide6."""
    spec = importlib.util.find_spec("PySide6")  # locates the package without loading Qt
    if spec is None or not spec.submodule_search_locations:
        return []
    qt = Path(next(iter(spec.submodule_search_locations))) / "Qt"
    candidates = [
        qt / "plugins" / "platforms" / "libqxcb.so",
        *sorted(qt.glob("lib/libQt6XcbQpa.so*")),
    ]
    return [path for path in candidates if path.is_file()]


def linked_libraries(ldd_output: str) -> dict[str, bool]:
    """``{soname: found}`` from ``ldd`` output."""
    libraries: dict[str, bool] = {}
    for line in ldd_output.splitlines():
        name, arrow, target = line.strip().partition("=>")
        if arrow:
            soname = name.strip()
            libraries[soname] = libraries.get(soname, True) and "not found" not in target
    return libraries


def missing_libraries(
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
) -> list[str]:
    """Shared libraries the xcb plugin links against that this system does not have."""
    paths = plugin_libraries()
    if not paths or shutil.which("ldd") is None:
        return []
    result = run(["ldd", *map(str, paths)], capture_output=True, text=True, check=False)
    return sorted(name for name, found in linked_libraries(result.stdout).items() if not found)


def packages_for(sonames: Sequence[str]) -> tuple[list[str], list[str]]:
    """(Debian packages to install, libraries no package is known for)."""
    packages = sorted({SONAME_PACKAGES[s] for s in sonames if s in SONAME_PACKAGES})
    unknown = [s for s in sonames if s not in SONAME_PACKAGES]
    return packages, unknown


def install_command(packages: Sequence[str]) -> list[str] | None:
    """The apt command that installs ``packages`` here without asking, or None when none can.

    As root: ``apt-get``; otherwise ``sudo -n`` when sudo works without a password.
    """
    if shutil.which("apt-get") is None:
        return None
    apt = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if os.geteuid() == 0:
        return apt
    sudo = shutil.which("sudo")
    if (
        sudo
        and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return [sudo, "-n", *apt]
    return None


def main(argv: list[str] | None = None) -> int:
    """Check (and with ``--install`` install) Qt's system libraries; exit 1 when some are missing."""
    parser = argparse.ArgumentParser(prog="python -m pathviewer.system_deps")
    parser.add_argument("--install", action="store_true", help="install missing packages with apt")
    args = parser.parse_args(argv)
    if not sys.platform.startswith("linux"):
        return 0
    missing = missing_libraries()
    if not missing:
        return 0
    packages, unknown = packages_for(missing)
    manual = f"sudo apt-get install -y {' '.join(packages)}"
    if unknown:
        print(
            f"pathviewer: Qt's window plugin needs {', '.join(unknown)}: install them",
            file=sys.stderr,
        )
    if packages and args.install:
        command = install_command(packages)
        if command is not None:
            print(
                f"pathviewer: installing Qt's system libraries: {' '.join(packages)}",
                file=sys.stderr,
            )
            if subprocess.run(command, check=False).returncode == 0 and not missing_libraries():
                return 0
    if packages:
        print(
            f"pathviewer: Qt's window plugin (xcb) needs system libraries this machine lacks "
            f"({', '.join(missing)}). Run:\n  {manual}\nthen `make run` again.",
            file=sys.stderr,
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
