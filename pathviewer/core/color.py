"""A slide's ICC colour profile applied for display: scanner RGB to sRGB through LittleCMS.

Scanners record colour in their own RGB; the ICC profile in the file (OpenSlide 4 exposes it)
says what those numbers mean.  Converting to sRGB, what monitors assume, shows the tissue in the
colours the scanner measured.  Only the viewer converts: training and inference read the pixels
as stored, so a model sees the same numbers whatever the display does.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageCms

if TYPE_CHECKING:
    from pathviewer.core.slide import SlideSource

log = logging.getLogger(__name__)


class ColorTransform:
    """Converts RGB pixels from an ICC profile to sRGB.

    Parameters
    ----------
    profile
        The source ICC profile (bytes of an ``.icc`` file).

    Raises
    ------
    ValueError
        The bytes are not an RGB ICC profile LittleCMS can use.

    Notes
    -----
    The transform is built without LittleCMS's one-pixel cache, which is the only state a
    transform shares between calls, so tile threads can use it at the same time.
    """

    def __init__(self, profile: bytes) -> None:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
            if source.profile.xcolor_space.strip() != "RGB":
                raise ValueError(f"a {source.profile.xcolor_space.strip()} profile, not RGB")
            self._transform = ImageCms.buildTransform(
                source,
                ImageCms.createProfile("sRGB"),
                "RGB",
                "RGB",
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                flags=ImageCms.Flags.NOCACHE,
            )
        except (OSError, ImageCms.PyCMSError, TypeError) as error:
            raise ValueError(f"unusable ICC profile ({error})") from None
        self.description = (source.profile.profile_description or "").strip() or "unnamed"

    @classmethod
    def for_slide(cls, slide: SlideSource) -> ColorTransform | None:
        """The transform of ``slide``'s profile; None when it has none or an unusable one."""
        profile = slide.icc_profile
        if not profile:
            return None
        try:
            return cls(profile)
        except ValueError as error:
            # A broken profile must not keep the slide from opening; it is shown unconverted.
            log.warning("%s: colour profile ignored: %s", slide.path, error)
            return None

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``(h, w, 3)`` uint8 sRGB of ``(h, w, 3)`` uint8 pixels in the profile's RGB."""
        pixels = np.ascontiguousarray(rgb, np.uint8)
        if pixels.size == 0:
            return pixels
        image = Image.frombuffer(
            "RGB", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "RGB", 0, 1
        )
        return np.asarray(ImageCms.applyTransform(image, self._transform))
