"""Patch classifiers: a torchvision ResNet18 encoder plus a linear head (NGSD step 4, Networks).

The network takes float images in [0, 1] (``(B, 3, H, W)``) and normalises them itself with the
ImageNet statistics, so that user-supplied ImageNet encoder weights work and callers never have to
remember the normalisation.  No weights are ever downloaded.

:class:`AttentionMIL` (the ``abmil`` baseline's network) lives here too, next to the encoder it
wraps, so that loading a model file needs no trainer module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pathviewer.core.errors import CheckpointError

#: Architectures :func:`build_classifier` knows, with their feature dimension.
ARCHITECTURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class PatchClassifier(nn.Module):
    """Encoder (ResNet without its ``fc``) + linear head.

    Attributes
    ----------
    encoder
        Maps ``(B, 3, H, W)`` normalised images to ``(B, feature_dim)`` features.
    head
        Linear layer ``feature_dim -> num_classes``.
    feature_dim
        Encoder output size (512 for ResNet18).
    input_size
        Side in pixels the network is trained on (informative; any size works).
    arch
        Architecture name.
    """

    def __init__(
        self, encoder: nn.Module, feature_dim: int, num_classes: int, input_size: int, arch: str
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.input_size = input_size
        self.arch = arch
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Encoder features of images in [0, 1]."""
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        return self.encoder((images - mean) / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, num_classes)`` of images in [0, 1]."""
        return self.head(self.features(images))


def build_encoder(arch: str = "resnet18") -> tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet without its classifier, and its feature size."""
    import torchvision

    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r} (use {', '.join(ARCHITECTURES)})")
    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    return model, ARCHITECTURES[arch]


def load_encoder_weights(encoder: nn.Module, weights_path: str | os.PathLike[str]) -> None:
    """Load a user weights file into ``encoder``.

    Accepts a torchvision ResNet ``state_dict`` (its ``fc.*`` keys are ignored), an encoder-only
    state dict, or a dict holding one under ``state_dict``/``model``/``encoder``; keys prefixed
    ``encoder.``/``module.``/``backbone.`` are understood.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file (names the file and the cause).
    """
    path = Path(weights_path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: not a PyTorch weights file ({type(error).__name__}: {error})"
        ) from None
    if isinstance(data, dict):
        for key in ("encoder", "state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        for prefix in ("module.", "encoder.", "backbone."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if not key.startswith("fc."):
            cleaned[key] = value
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in cleaned]
    if missing:
        raise CheckpointError(
            f"{path}: not weights for this encoder ({len(missing)} missing keys, e.g. {missing[0]!r})"
        )
    for key, tensor in expected.items():
        if tuple(cleaned[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(cleaned[key].shape)}, expected {tuple(tensor.shape)}"
            )
    encoder.load_state_dict({k: cleaned[k] for k in expected})


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
        ``resnet18`` (paper), ``resnet34`` or ``resnet50``.
    weights_path
        Optional encoder weights file (loaded with ``weights_only=True``; never downloaded).
    input_size
        Side of the network input in pixels (recorded on the model).

    Raises
    ------
    CheckpointError
        Unknown architecture, or a weights file that is missing, corrupt or foreign.
    """
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
