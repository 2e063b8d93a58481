"""Desktop distribution files: .desktop, MIME, AppStream, icons, PyInstaller spec and hook."""

from __future__ import annotations

import ast
import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from pathviewer._version import __version__
from pathviewer.resources import ResourceNotFoundError, resource_path

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
ICONS = REPO / "resources" / "icons"
APP_ID = "io.github.pathviewer.PathViewer"
ICON_SIZES = (16, 24, 32, 48, 64, 128, 256)
#: Slide extensions the launcher must claim, and the MIME types shared-mime-info already knows.
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".tif", ".tiff", ".dcm")
STANDARD_MIME = {".tif": "image/tiff", ".tiff": "image/tiff", ".dcm": "application/dicom"}
MIME_NS = "{http://www.freedesktop.org/standards/shared-mime-info}"


def _desktop_entry() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(PACKAGING / "pathviewer.desktop", encoding="utf-8")
    return parser["Desktop Entry"]


def _split(value: str) -> list[str]:
    return [item for item in value.split(";") if item]


def _custom_mime_globs() -> dict[str, str]:
    """``{".svs": "image/x-aperio-svs", ...}`` from packaging/pathviewer-mime.xml."""
    root = ET.parse(PACKAGING / "pathviewer-mime.xml").getroot()
    assert root.tag == f"{MIME_NS}mime-info"
    globs = {}
    for mime_type in root.iter(f"{MIME_NS}mime-type"):
        for glob in mime_type.iter(f"{MIME_NS}glob"):
            pattern = glob.attrib["pattern"]
            assert pattern.startswith("*.")
            globs[pattern[1:]] = mime_type.attrib["type"]
    return globs


def _load_openslide_hook() -> ModuleType:
    path = PACKAGING / "hooks" / "hook-openslide_bin.py"
    spec = importlib.util.spec_from_file_location("hook_openslide_bin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_desktop_file_has_required_keys() -> None:
    entry = _desktop_entry()
    assert entry["Type"] == "Application"
    assert entry["Name"] == "PathViewer"
    assert entry["Exec"] == "pathviewer-gui %F"  # %F: several slides open at once
    assert entry["Icon"] == APP_ID
    assert entry["Terminal"] == "false"
    assert {"Science", "MedicalSoftware"} <= set(_split(entry["Categories"]))


def test_desktop_file_claims_every_slide_format() -> None:
    mime_types = set(_split(_desktop_entry()["MimeType"]))
    by_extension = {**STANDARD_MIME, **_custom_mime_globs()}
    for extension in SLIDE_EXTENSIONS:
        assert extension in by_extension, f"no MIME type defined for {extension}"
        assert by_extension[extension] in mime_types, extension
    # Every claimed type is either standard or defined by our shared-mime-info file.
    assert mime_types == set(by_extension.values())


def test_custom_mime_types_are_tiff_subclasses_where_they_are_tiffs() -> None:
    root = ET.parse(PACKAGING / "pathviewer-mime.xml").getroot()
    parents = {
        m.attrib["type"]: [s.attrib["type"] for s in m.iter(f"{MIME_NS}sub-class-of")]
        for m in root.iter(f"{MIME_NS}mime-type")
    }
    assert parents["image/x-aperio-svs"] == ["image/tiff"]
    assert parents["image/x-hamamatsu-ndpi"] == ["image/tiff"]
    assert parents["image/x-mirax-mrxs"] == []  # MIRAX's index file is not a TIFF


@pytest.mark.skipif(shutil.which("desktop-file-validate") is None, reason="desktop-file-utils")
def test_desktop_file_validates() -> None:
    result = subprocess.run(
        ["desktop-file-validate", str(PACKAGING / "pathviewer.desktop")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout


def test_metainfo_parses_and_names_the_same_app() -> None:
    root = ET.parse(PACKAGING / f"{APP_ID}.metainfo.xml").getroot()
    assert root.tag == "component" and root.attrib["type"] == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert root.findtext("name") == "PathViewer"
    assert root.findtext("launchable") == f"{APP_ID}.desktop"
    assert root.findtext("icon") == APP_ID == _desktop_entry()["Icon"]
    categories = {c.text for c in root.iter("category")}
    assert {"Science", "MedicalSoftware"} <= categories
    media = {m.text for m in root.iter("mediatype")}
    assert media == set(_split(_desktop_entry()["MimeType"]))
    versions = [r.attrib["version"] for r in root.iter("release")]
    assert versions[0] == __version__  # newest release first, and it is this version


@pytest.mark.parametrize("size", ICON_SIZES)
def test_icon_png_renders_exist_and_are_valid(size: int) -> None:
    from PIL import Image

    path = ICONS / f"pathviewer-{size}.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (size, size)
        rgba = image.convert("RGBA")
        # Rounded tile: transparent corner, opaque centre (a drawn icon, not a blank square).
        assert rgba.getpixel((0, 0))[3] == 0
        assert rgba.getpixel((size // 2, size // 2))[3] == 255
        assert len(rgba.getcolors(maxcolors=size * size) or []) > 10


def test_svg_icon_is_well_formed() -> None:
    root = ET.parse(ICONS / "pathviewer.svg").getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.attrib["viewBox"] == "0 0 256 256"


def test_resource_path_finds_the_icon() -> None:
    path = resource_path("icons/pathviewer.svg")
    assert path.is_absolute() and path.is_file()
    assert path == (ICONS / "pathviewer.svg").resolve()


def test_resource_path_prefers_the_bundle_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundled = tmp_path / "resources" / "icons" / "pathviewer.svg"
    bundled.parent.mkdir(parents=True)
    bundled.write_text("<svg/>")
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    assert resource_path("icons/pathviewer.svg") == bundled.resolve()
    # Files the bundle lacks still resolve through the later candidates.
    assert resource_path("icons/pathviewer-16.png") == (ICONS / "pathviewer-16.png").resolve()


def test_resource_path_reports_where_it_looked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ResourceNotFoundError, match="no-such-icon.png") as info:
        resource_path("icons/no-such-icon.png")
    assert str(REPO / "resources") in str(info.value)
    with pytest.raises(ValueError):
        resource_path("../pyproject.toml")


def test_spec_compiles_and_uses_the_openslide_hook() -> None:
    spec_text = (PACKAGING / "pathviewer.spec").read_text(encoding="utf-8")
    compile(spec_text, "pathviewer.spec", "exec")
    assert "hook-openslide_bin.py" in spec_text
    assert "hookspath=[str(HOOKS)]" in spec_text
    assert "pathviewer_entry.py" in spec_text
    assert '(str(REPO / "resources"), "resources")' in spec_text
    assert (PACKAGING / "hooks" / "hook-openslide_bin.py").is_file()


def test_bundle_entry_calls_freeze_support_before_the_cli() -> None:
    tree = ast.parse((PACKAGING / "pathviewer_entry.py").read_text(encoding="utf-8"))
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    calls = [ast.unparse(node.func) for node in ast.walk(main) if isinstance(node, ast.Call)]
    assert calls.index("multiprocessing.freeze_support") < calls.index("cli_main")


def test_openslide_hook_collects_libopenslide() -> None:
    pytest.importorskip("openslide_bin")
    hook = _load_openslide_hook()
    binaries = hook.openslide_binaries()
    assert hook.binaries == binaries
    names = {Path(source).name: dest for source, dest in binaries}
    library = next(name for name in names if name.startswith("libopenslide"))
    assert names[library] == "openslide_bin"  # next to openslide_bin/__init__.py
    source = next(Path(s) for s, _ in binaries if Path(s).name == library)
    if sys.platform.startswith("linux"):
        assert library == "libopenslide.so.1"
        assert source.read_bytes()[:4] == b"\x7fELF"
    assert hook.openslide_binaries("pathviewer_no_such_package") == []


@pytest.mark.skipif(sys.platform != "linux", reason="XDG desktop integration")
def test_install_desktop_script_installs_and_removes(tmp_path: Path) -> None:
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), PATH="/usr/bin:/bin")
    script = str(PACKAGING / "install-desktop.sh")
    subprocess.run(["sh", script, "--exec", "/opt/pathviewer/pathviewer"], env=env, check=True)
    desktop = tmp_path / "applications" / f"{APP_ID}.desktop"
    text = desktop.read_text(encoding="utf-8")
    assert "Exec=/opt/pathviewer/pathviewer %F" in text
    assert "TryExec=/opt/pathviewer/pathviewer" in text
    assert (tmp_path / "mime" / "packages" / f"{APP_ID}.xml").is_file()
    assert (tmp_path / "metainfo" / f"{APP_ID}.metainfo.xml").is_file()
    assert (tmp_path / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg").is_file()
    for size in ICON_SIZES:
        icon = tmp_path / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        assert icon.read_bytes() == (ICONS / f"pathviewer-{size}.png").read_bytes()

    subprocess.run(["sh", script, "--uninstall"], env=env, check=True)
    assert not list(tmp_path.rglob(f"{APP_ID}*"))


def test_torchvision_runtime_hook_skips_registrations_only_without_ops(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec_text = (PACKAGING / "pathviewer.spec").read_text(encoding="utf-8")
    assert "pyi_rth_torchvision_without_ops.py" in spec_text
    path = PACKAGING / "rthooks" / "pyi_rth_torchvision_without_ops.py"
    saved_meta_path = list(sys.meta_path)
    spec = importlib.util.spec_from_file_location("pyi_rth_tv", path)
    assert spec is not None and spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(hook)  # installs its finder
        finder = sys.meta_path[0]
        assert isinstance(finder, hook._SkipRegistrationsWithoutOps)
    finally:
        sys.meta_path[:] = saved_meta_path

    class FakeExtension:
        has_ops = False

        @classmethod
        def _has_ops(cls) -> bool:
            return cls.has_ops

    monkeypatch.setitem(sys.modules, "torchvision.extension", FakeExtension)
    skipped = finder.find_spec("torchvision._meta_registrations")
    assert skipped is not None
    module = importlib.util.module_from_spec(skipped)
    skipped.loader.exec_module(module)
    assert "Skipped" in (module.__doc__ or "")
    assert finder.find_spec("torchvision._autograd_registrations") is not None
    assert finder.find_spec("torchvision.models") is None  # only the two registration modules
    FakeExtension.has_ops = True
    assert finder.find_spec("torchvision._meta_registrations") is None  # real import with ops
