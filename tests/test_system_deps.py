"""Qt's system libraries for `make run`: the package list matches what the xcb plugin links."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pathviewer import system_deps
from pathviewer.system_deps import (
    SONAME_PACKAGES,
    linked_libraries,
    packages_for,
    plugin_libraries,
)

README = Path(__file__).resolve().parents[1] / "README.md"
LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6Gui.so.6 => /venv/PySide6/Qt/lib/libQt6Gui.so.6 (0x00007f)
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f)
\tlibfoo-new.so.9 => not found
"""


def test_every_system_library_of_the_xcb_plugin_has_a_package() -> None:
    paths = plugin_libraries()
    if not paths or shutil.which("ldd") is None:
        pytest.skip("no PySide6 xcb plugin or no ldd here")
    out = subprocess.run(["ldd", *map(str, paths)], capture_output=True, text=True).stdout
    outside_qt = {
        name
        for name, _ in linked_libraries(out).items()
        if not name.startswith("libQt6") and not name.startswith("libpyside")
    }
    base = {"libc.so.6", "libm.so.6", "libstdc++.so.6", "libgcc_s.so.1", "libpthread.so.0"}
    base |= {"libdl.so.2", "librt.so.1", "ld-linux-x86-64.so.2", "libz.so.1", "libpcre2-8.so.0"}
    # Everything X11, xcb, xkb, GL, fonts and D-Bus must be in the table `make run` installs from.
    display = {
        n for n in outside_qt - base if re.match(r"lib(xcb|X11|xkb|E?GL|font|free|dbus|glib)", n)
    }
    assert display <= set(SONAME_PACKAGES), sorted(display - set(SONAME_PACKAGES))


def test_readme_lists_every_package() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [p for p in sorted(set(SONAME_PACKAGES.values())) if p not in text]
    assert not missing, missing


def test_ldd_output_gives_missing_packages_and_unknown_libraries() -> None:
    libraries = linked_libraries(LDD)
    assert libraries["libxcb-icccm.so.4"] is False and libraries["libxcb.so.1"] is True
    missing = sorted(n for n, found in libraries.items() if not found)
    assert packages_for(missing) == (["libxcb-icccm4"], ["libfoo-new.so.9"])


def test_without_root_or_sudo_it_stops_with_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(system_deps.sys, "platform", "linux")
    monkeypatch.setattr(system_deps, "missing_libraries", lambda: ["libxcb-keysyms.so.1"])
    monkeypatch.setattr(system_deps, "install_command", lambda packages: None)
    assert system_deps.main(["--install"]) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install -y libxcb-keysyms1" in err and "make run" in err


def test_as_root_it_installs_with_apt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_deps.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(system_deps.os, "geteuid", lambda: 0)
    assert system_deps.install_command(["libxcb-icccm4"]) == [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "libxcb-icccm4",
    ]
    monkeypatch.setattr(system_deps.shutil, "which", lambda name: None)
    assert system_deps.install_command(["libxcb-icccm4"]) is None  # not Debian: no apt-get
