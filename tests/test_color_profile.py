"""ICC colour profiles: a slide's profile converts its tiles to sRGB for display, when turned on."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from pathviewer.core.color import ColorTransform
from pathviewer.core.slide import open_slide


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ " + bytes(4) + _s15(x) + _s15(y) + _s15(z)


def linear_rgb_profile(description: str = "Linear RGB test profile") -> bytes:
    """An ICC v2 display profile: sRGB primaries with a linear tone curve (gamma 1.0).

    Stored mid grey 128 then means linear 0.5, which sRGB encodes as about 188: a conversion
    that is easy to see and to check.
    """
    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, 256) + bytes(2)
    tags = [
        (b"desc", desc),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"cprt", b"text" + bytes(4) + b"test data\0"),
        (b"rXYZ", _xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    start = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        data += bytes(-(start + len(data)) % 4)
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    body = struct.pack(">I", len(tags)) + table + data
    header = (
        struct.pack(">I", 128 + len(body))
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 12, 2, 0, 0, 0)
        + b"acsp"
        + bytes(28)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + bytes(48)
    )
    assert len(header) == 128
    return header + body


def _profiled_slide(path: Path, profile: bytes | None, value: int = 128) -> Path:
    """A tiled TIFF (OpenSlide's generic-tiff) of one grey value, carrying ``profile``."""
    # Larger than the viewer's 1024 px thumbnail, so that tiles are read.
    rgb = np.full((3072, 3072, 3), value, np.uint8)
    options = {"iccprofile": profile} if profile is not None else {}
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb", compression="zlib", **options)
    return path


def test_profile_is_read_from_the_slide_and_converts_to_srgb(tmp_path: Path) -> None:
    profile = linear_rgb_profile()
    slide = open_slide(_profiled_slide(tmp_path / "icc.tiff", profile))
    assert slide.icc_profile is not None
    transform = ColorTransform.for_slide(slide)
    assert transform is not None and transform.description == "Linear RGB test profile"
    out = transform.apply(slide.read_region((600, 0), 0, (4, 4)))
    # Linear 128/255 in sRGB: 255 * (1.055 * 0.502 ** (1 / 2.4) - 0.055) = 188.
    assert np.all(np.abs(out.astype(int) - 188) <= 1)
    assert (
        ColorTransform.for_slide(open_slide(_profiled_slide(tmp_path / "none.tiff", None))) is None
    )


def test_unusable_profile_is_ignored_not_fatal(tmp_path: Path, caplog) -> None:
    broken = linear_rgb_profile()[:200]  # cut off in its tag table
    slide = open_slide(_profiled_slide(tmp_path / "broken.tiff", broken))
    assert ColorTransform.for_slide(slide) is None
    assert "colour profile" in caplog.text
    with pytest.raises(ValueError, match="ICC"):
        ColorTransform(b"not a profile")


pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

from PySide6.QtCore import QSettings  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from pathviewer.gui.app import create_main_window  # noqa: E402


def _tile_pixel(view) -> tuple[int, int, int]:
    """Colour of the middle of a cached tile of the current slide."""
    keys = [k for k in view.cache.keys() if k[0] == view.pipeline.generation]
    assert keys
    image = view.cache.peek(keys[0]).convertToFormat(QImage.Format.Format_RGB32)
    color = image.pixelColor(image.width() // 2, image.height() // 2)
    return color.red(), color.green(), color.blue()


def test_viewer_shows_tiles_through_the_profile_and_can_turn_it_off(qtbot, tmp_path: Path) -> None:
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    window = create_main_window(settings=settings, threads=2)
    qtbot.addWidget(window)
    window.resize(900, 700)
    window.show()
    path = _profiled_slide(tmp_path / "icc.tiff", linear_rgb_profile())
    assert window.open_slide(str(path))
    view = window.slide_view
    view.set_scale(1.0)
    view.center_on(1536, 1536)
    assert view.wait_until_idle(10)
    action = window.color_profile_action
    assert action.isEnabled() and action.isChecked()
    assert "Linear RGB test profile" in action.toolTip()
    assert all(abs(c - 188) <= 1 for c in _tile_pixel(view))
    reads = view.pipeline.stats.read
    action.setChecked(False)
    assert view.wait_until_idle(10)
    assert _tile_pixel(view) == (128, 128, 128)  # the stored pixels
    assert view.pipeline.stats.read > reads  # read again in the other colours
    assert view.current_slide is not None and view.current_slide.read_region((0, 0), 0, (1, 1)).size
    window.close()
    # Remembered: a new window starts with the profile off.
    second = create_main_window(settings=settings, threads=1)
    qtbot.addWidget(second)
    assert not second.slide_view.use_color_profile
    assert second.open_slide(str(_profiled_slide(tmp_path / "plain.tiff", None)))
    assert not second.color_profile_action.isEnabled()
    second.close()
