"""Stain augmentation and normalisation as torchvision v2 transforms on uint8 image tensors.

:class:`HEDJitter` is the H&E stain augmentation of Tellez et al. 2018 ("Whole-slide mitosis
detection in H&E breast histology using PHH3 as a reference to train distilled
stain-invariant convolutional networks"): colour deconvolution into haematoxylin, eosin and
DAB concentrations (Ruifrok & Johnston), a random scale and shift of each, and back to RGB.
:class:`StainNormalize` applies a fitted :class:`~pathviewer.core.stain.StainNormalizer`, the
same way in training and inference.

Both accept a ``(3, H, W)`` image or an ``(N, 3, H, W)`` batch, alone or inside a sample that
v2 transforms understand (tuples, dicts with labels or masks, which pass through).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pathviewer.core.stain import HED_VECTORS, StainNormalizer, complete_stain_matrix

#: (sigma, bias) of the named strengths.  "light" is Tellez et al.'s HED-light.  "strong" scales
#: each stain by up to +-25 % but keeps the bias: the bias also lands on empty glass, and 0.1 OD
#: on every stain already turns white glass grey (green 255 -> ~150).
HED_PRESETS: dict[str, tuple[float, float]] = {"light": (0.05, 0.05), "strong": (0.25, 0.05)}

#: Optical densities are computed in base 2 here: exp2 is several times cheaper than exp or
#: pow(10, .) on CPUs, and OD is linear in the log base, so only the bias needs the factor.
_LOG2_10 = math.log2(10.0)


def _is_plain_tensor(inpt: Any) -> bool:
    """A torch.Tensor that is not a tv_tensor (bounding boxes, masks and the like)."""
    return type(inpt) is torch.Tensor


def _images_of(inpt: Any, name: str) -> tuple[torch.Tensor, bool]:
    """The ``(N, 3, H, W)`` view of an image or batch, and whether it was a batch."""
    if isinstance(inpt, PIL.Image.Image):
        raise TypeError(f"{name} works on tensors: put v2.PILToTensor() before it")
    x = inpt.as_subclass(torch.Tensor)
    if x.ndim not in (3, 4) or x.shape[-3] != 3:
        raise ValueError(f"{name} expects (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")
    return (x if x.ndim == 4 else x.unsqueeze(0)), x.ndim == 4


def _rewrap(output: torch.Tensor, like: Any) -> Any:
    """``output`` as the same tv_tensor type as ``like`` (plain tensors stay plain)."""
    if isinstance(like, tv_tensors.TVTensor):
        return tv_tensors.wrap(output, like=like)
    return output


class HEDJitter(v2.Transform):
    """Random H&E stain augmentation in HED space (Tellez et al. 2018).

    Each image's H, E and DAB concentrations ``c`` become ``alpha * c + beta`` with
    ``alpha ~ U(1 - sigma, 1 + sigma)`` and ``beta ~ U(-bias, bias)`` drawn per image and
    channel from torch's global generator (seed it per item, e.g. inside
    ``torch.random.fork_rng``), clipped at 0 and recombined into RGB.  Empty glass (OD 0)
    stays near white: it can only gain the bias.  A concentration that deconvolution already
    makes negative is clipped at its own value instead of 0, so that ``sigma = bias = 0`` is
    the identity (up to rounding) on real images too.

    Parameters
    ----------
    sigma
        Half-width of the multiplicative jitter; 0.05 is the paper's "HED-light", 0.2-0.3 a
        strong augmentation.
    bias
        Half-width of the additive jitter, in optical density (log10) per unit-length stain
        vector.  Implementations that deconvolve with another logarithm or scale (versions of
        scikit-image's ``rgb2hed`` differ) measure concentrations in other units, so their bias
        values do not carry over as they are.
    matrix
        Stain vectors ``(2, 3)`` or ``(3, 3)`` to deconvolve with; Ruifrok's HED by default.

    Notes
    -----
    Takes uint8 tensors (0-255) or floating tensors (0-1) of shape ``(3, H, W)`` or
    ``(N, 3, H, W)`` on any device and returns the same dtype, shape and device.
    """

    _transformed_types = (tv_tensors.Image, _is_plain_tensor, PIL.Image.Image)

    def __init__(
        self, sigma: float = 0.05, bias: float = 0.05, matrix: np.ndarray | None = None
    ) -> None:
        super().__init__()
        if sigma < 0 or bias < 0:
            raise ValueError(f"sigma and bias must be >= 0, got {sigma} and {bias}")
        self.sigma = float(sigma)
        self.bias = float(bias)
        stains = HED_VECTORS if matrix is None else complete_stain_matrix(matrix)
        # Column-vector form: concentrations = to_hed @ od, od = to_od @ concentrations, for
        # od laid out (N, 3, pixels) as the image tensors are.
        self.register_buffer(
            "to_hed", torch.tensor(np.linalg.inv(stains).T, dtype=torch.float32), persistent=False
        )
        self.register_buffer("to_od", torch.tensor(stains.T, dtype=torch.float32), persistent=False)

    @classmethod
    def preset(cls, name: str) -> HEDJitter:
        """A jitter of a named strength, ``"light"`` or ``"strong"`` (:data:`HED_PRESETS`)."""
        if name not in HED_PRESETS:
            raise ValueError(f"unknown HED jitter preset {name!r}; known: {sorted(HED_PRESETS)}")
        sigma, bias = HED_PRESETS[name]
        return cls(sigma=sigma, bias=bias)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Jitter one image or batch (v2 entry point; call the module instead)."""
        images, _ = _images_of(inpt, type(self).__name__)
        return _rewrap(self.jitter(images).reshape(inpt.shape), inpt)

    # torchvision < 0.21 calls the private name.
    _transform = transform

    def jitter(self, images: torch.Tensor) -> torch.Tensor:
        """Jitter an ``(N, 3, H, W)`` uint8 or float batch, drawing fresh random factors."""
        if images.dtype == torch.uint8:
            full_scale = 255.0
        elif images.is_floating_point():
            full_scale = 1.0
        else:
            raise TypeError(f"HEDJitter takes uint8 or floating images, got {images.dtype}")
        n = images.shape[0]
        # Drawn on the CPU generator whatever the device, so a seed fixes them everywhere.
        draws = torch.rand(2, n, 3, 1, dtype=torch.float32)
        alpha = (1.0 + self.sigma * (2.0 * draws[0] - 1.0)).to(images.device)
        beta = (self.bias * _LOG2_10 * (2.0 * draws[1] - 1.0)).to(images.device)

        # copy=True: a float32 input must not be modified in place below.
        flat = images.reshape(n, 3, -1).to(torch.float32, copy=True)
        # OD (base 2) = log2(I0) - log2(I), with I floored at one grey level like core.stain.
        od = flat.clamp_min_(full_scale / 255.0).log2_().neg_().add_(math.log2(full_scale))
        hed = torch.matmul(self.to_hed, od)
        # The jitter may not take a concentration below zero.  Concentrations that are already
        # negative (real colours the three Ruifrok vectors do not fit, common for eosin in pale
        # or bluish pixels) are the floor instead, so that sigma = bias = 0 is the identity
        # rather than a systematic colour shift of up to 20 % of the pixels.
        floor = hed.clamp_max(0.0)
        hed = torch.maximum(hed.mul_(alpha).add_(beta), floor, out=hed)
        log_intensity = torch.matmul(-self.to_od, hed).add_(math.log2(full_scale))
        intensity = log_intensity.exp2_()
        if images.dtype == torch.uint8:
            return intensity.add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).reshape(images.shape)
        return intensity.clamp_(0.0, 1.0).to(images.dtype).reshape(images.shape)


class StainNormalize(v2.Transform):
    """Macenko stain normalisation of uint8 image tensors with a fitted normaliser.

    Parameters
    ----------
    normalizer
        A fitted :class:`~pathviewer.core.stain.StainNormalizer`, or its ``to_dict()``.

    Notes
    -----
    Each image of an ``(N, 3, H, W)`` batch is normalised on its own (its own source stain
    estimate), on the CPU with numpy; the result comes back on the input's device.  Images
    with too little tissue pass unchanged.
    """

    _transformed_types = (tv_tensors.Image, _is_plain_tensor, PIL.Image.Image)

    def __init__(self, normalizer: StainNormalizer | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(normalizer, StainNormalizer):
            normalizer = StainNormalizer.from_dict(normalizer)
        if not normalizer.fitted:
            raise ValueError("StainNormalize needs a fitted StainNormalizer")
        self.normalizer = normalizer

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Normalise one image or batch (v2 entry point; call the module instead)."""
        images, _ = _images_of(inpt, type(self).__name__)
        if images.dtype != torch.uint8:
            raise TypeError(f"StainNormalize takes uint8 images, got {images.dtype}")
        pixels = images.detach().cpu().permute(0, 2, 3, 1).numpy()
        normalised = np.stack([self.normalizer.transform(image) for image in pixels])
        output = torch.from_numpy(normalised).permute(0, 3, 1, 2).contiguous()
        return _rewrap(output.to(images.device).reshape(inpt.shape), inpt)

    # torchvision < 0.21 calls the private name.
    _transform = transform

    def extra_repr(self) -> str:
        return f"method={self.normalizer.method!r}"
