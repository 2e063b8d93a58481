"""Patch classifiers: an encoder (torchvision ResNet or timm) plus a linear head (NGSD step 4).

The network takes float images in [0, 1] (``(B, 3, H, W)``) and normalises them itself with its
encoder's statistics (ImageNet for the ResNets, the pretrained configuration of a timm encoder),
so that user-supplied encoder weights work and callers never have to remember the normalisation.
No weights are ever downloaded.

:class:`AttentionMIL` (the ``abmil`` baseline's network) lives here too, next to the encoder it
wraps, so that loading a model file needs no trainer module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator

import numpy as np
import torch
from torch import nn

from pathviewer.core.errors import CheckpointError
from pathviewer.core.progress import Progress
from pathviewer.ml.encoder_name import is_timm
from pathviewer.ml.encoders import EncoderInfo, fit_weights, read_weights_file

#: Architectures :func:`build_classifier` knows, with their feature dimension (and ``timm:NAME``).
ARCHITECTURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class PatchClassifier(nn.Module):
    """Encoder (without its classifier) + linear head.

    Attributes
    ----------
    encoder
        Maps ``(B, 3, H, W)`` normalised images to ``(B, feature_dim)`` features.
    head
        Linear layer ``feature_dim -> num_classes``.
    feature_dim
        Encoder output size (512 for ResNet18).
    input_size
        Side in pixels the network is trained on.
    arch
        Architecture name (``resnet18``, ``timm:NAME``).
    mean, std
        The encoder's input normalisation (buffers, not saved: they follow from ``arch``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        input_size: int,
        arch: str,
        mean: tuple[float, float, float] = _MEAN,
        std: tuple[float, float, float] = _STD,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.input_size = input_size
        self.arch = arch
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features of images in [0, 1]."""
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        return self.encoder((images - mean) / std)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)``.

        ``inputs`` are images in [0, 1] ``(B, 3, H, W)``, or their encoder features
        ``(B, feature_dim)`` (frozen-encoder training feeds features computed once).
        """
        if inputs.ndim == 2:
            return self.head(inputs)
        return self.head(self.features(inputs))

    def freeze_encoder(self) -> None:
        """Stop the encoder's parameters from training (only the head learns)."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)


def encode_patches(
    network: PatchClassifier,
    count: int,
    image: Callable[[int], torch.Tensor],
    device: torch.device,
    batch_size: int = 64,
) -> Generator[Progress, None, np.ndarray]:
    """Encoder features of ``count`` patches, once each (frozen-encoder training).

    Parameters
    ----------
    network
        Its encoder runs in eval mode (running statistics as loaded), without gradients.
    image
        ``image(i)``: patch ``i`` as a ``(3, s, s)`` uint8 tensor or a float tensor in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(count, feature_dim)`` float32.
    """
    was_training = network.training
    network.eval()
    out = np.zeros((count, network.feature_dim), np.float32)
    try:
        with torch.inference_mode():
            for start in range(0, count, batch_size):
                stop = min(count, start + batch_size)
                batch = torch.stack([image(i) for i in range(start, stop)]).to(device)
                x = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
                out[start:stop] = network.features(x).float().cpu().numpy()
                yield Progress("encoding patches", stop, count, "frozen encoder: features once")
    finally:
        network.train(was_training)
    return out


def build_encoder(arch: str = "resnet18") -> tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet without its classifier, and its feature size."""
    import torchvision

    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown architecture {arch!r} (use {', '.join(ARCHITECTURES)} or timm:NAME)"
        )
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model, ARCHITECTURES[arch]


def load_encoder_weights(encoder: nn.Module, weights_path: str | os.PathLike[str]) -> None:
    """Load a user weights file into a torchvision ``encoder``.

    Accepts a torchvision ResNet ``state_dict`` (its ``fc.*`` keys are ignored), an encoder-only
    state dict, or a dict holding one under ``state_dict``/``model``/``encoder``; wrapper
    prefixes such as ``module.``/``encoder.``/``backbone.`` are understood; ``.safetensors``
    files work too (:func:`pathviewer.ml.encoders.read_weights_file`).

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file (names the file and the cause).
    """
    fit_weights(encoder, read_weights_file(weights_path), weights_path, ("fc.",), "this ResNet")


def encoder_info(arch: str) -> EncoderInfo:
    """Feature size, input size and normalisation of an architecture (no weights built)."""
    if is_timm(arch):
        from pathviewer.ml.encoders import timm_encoder_info

        return timm_encoder_info(arch)
    if arch not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown architecture {arch!r} (use {', '.join(ARCHITECTURES)} or timm:NAME)"
        )
    return EncoderInfo(ARCHITECTURES[arch], 224, False, _MEAN, _STD)


def network_input_size(arch: str, requested: int) -> int:
    """The side patches are resized to for ``arch``: the encoder's own when it accepts no other.

    A ResNet or a timm CNN takes any size, so ``requested`` (the setting) stands; a ViT with
    fixed position embeddings takes only the size it was built for.
    """
    info = encoder_info(arch)
    return info.input_size if info.fixed_input_size else requested


def build_classifier(
    num_classes: int = 2,
    arch: str = "resnet18",
    weights_path: str | os.PathLike[str] | None = None,
    input_size: int = 224,
) -> PatchClassifier:
    """Build a :class:`PatchClassifier`.

    Parameters
    ----------
    num_classes
        Output classes (2 for NGSD: negative, positive).
    arch
        ``resnet18`` (paper), ``resnet34``, ``resnet50`` or ``timm:NAME[,key=value...]``
        (:mod:`pathviewer.ml.encoders`).
    weights_path
        Optional encoder weights file (never downloaded).
    input_size
        Side of the network input in pixels (recorded on the model; an encoder with a fixed
        input size records its own, :func:`network_input_size`).

    Raises
    ------
    CheckpointError
        Unknown architecture, or a weights file that is missing, corrupt or foreign.
    TrainingError
        Constructor arguments timm refuses.
    """
    if is_timm(arch):
        from pathviewer.ml.encoders import build_timm_encoder

        timm_encoder, info = build_timm_encoder(arch, weights_path)
        size = info.input_size if info.fixed_input_size else input_size
        return PatchClassifier(
            timm_encoder, info.feature_dim, num_classes, size, arch, info.mean, info.std
        )
    encoder, feature_dim = build_encoder(arch)
    if weights_path:
        load_encoder_weights(encoder, weights_path)
    return PatchClassifier(encoder, feature_dim, num_classes, input_size, arch)


class AttentionMIL(torch.nn.Module):
    """Gated attention MIL head on a :class:`PatchClassifier`'s encoder (Ilse et al. 2018).

    The wrapped classifier's ``head`` is unused; its encoder embeds patches.
    """

    def __init__(self, backbone: PatchClassifier, hidden: int = 128) -> None:
        super().__init__()
        self.backbone = backbone
        dim = backbone.feature_dim
        self.embed = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.ReLU())
        self.att_v = torch.nn.Linear(hidden, hidden)
        self.att_u = torch.nn.Linear(hidden, hidden)
        self.att_w = torch.nn.Linear(hidden, 1)
        self.classifier = torch.nn.Linear(hidden, 1)

    def instance_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, hidden + 1)``: embedded features and the attention logit of each patch."""
        h = self.embed(self.backbone.features(images))
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h)))
        return torch.cat([h, a], dim=1)

    def pool(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bag logit and attention weights of one bag's ``instance_features``."""
        h, a = feats[:, :-1], feats[:, -1]
        weights = torch.softmax(a, dim=0)
        return self.classifier((weights[:, None] * h).sum(0)).squeeze(-1), weights

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        """Bag logits of ``(n_bags, bag_size, 3, H, W)`` images."""
        n, m = bags.shape[:2]
        feats = self.instance_features(bags.flatten(0, 1)).view(n, m, -1)
        return torch.stack([self.pool(f)[0] for f in feats])

    def scores_from_features(self, feats: np.ndarray) -> tuple[np.ndarray, float]:
        """Instance scores and bag probability of a whole slide from its instance features."""
        with torch.no_grad():
            logit, weights = self.pool(
                torch.from_numpy(np.asarray(feats, np.float32)).to(next(self.parameters()).device)
            )
        bag = float(torch.sigmoid(logit))
        w = weights.cpu().numpy().astype(np.float64)
        inst = w / w.max() * bag if w.size and w.max() > 0 else w
        return inst.astype(np.float32), bag
