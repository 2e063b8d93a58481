"""PyInstaller hook for ``openslide-bin``: collect ``libopenslide.so.1`` (or .dylib / .dll).

openslide-bin ships the OpenSlide shared library as a file *inside* its Python package and loads
it with ``importlib.resources``.  PyInstaller's default binary patterns do not match a versioned
``libopenslide.so.1`` sitting in a package folder, so without this hook the bundle starts and
then fails with "Couldn't locate OpenSlide shared library" on the first slide.

The helper :func:`openslide_binaries` does not import PyInstaller, so the test suite can check
the hook against the installed openslide-bin without PyInstaller being installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: File-name patterns of the OpenSlide library on Linux, macOS and Windows.
LIBRARY_PATTERNS = ("libopenslide.so*", "libopenslide*.dylib", "libopenslide*.dll", "*.dll")


def openslide_binaries(package: str = "openslide_bin") -> list[tuple[str, str]]:
    """``(source, destination folder)`` pairs for the shared libraries of ``package``.

    The destination is the package folder itself, because openslide-bin looks the library up
    next to its ``__init__.py`` (``importlib.resources.files(__name__)``).

    Returns an empty list when the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    found: dict[str, tuple[str, str]] = {}
    for pattern in LIBRARY_PATTERNS:
        for path in sorted(package_dir.glob(pattern)):
            if path.is_file():
                found[path.name] = (str(path), package)
    return list(found.values())


# What PyInstaller reads from a hook module.
binaries = openslide_binaries()
