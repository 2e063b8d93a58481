"""Patch encoders: user weights files, and timm architectures built from ``timm:NAME``.

:func:`build_timm_encoder` is the one place a timm encoder is made: ``timm.create_model(NAME,
pretrained=False, num_classes=0)`` plus the user's state dict, read from ``.safetensors``
(``safetensors.torch.load_file``) or ``.pt``/``.pth``/``.bin`` (``torch.load(weights_only=True)``).
Nothing is ever downloaded.  The input size and mean/std the encoder expects come from timm's
pretrained config of the architecture (:func:`timm_encoder_info`, which needs no weights).

:func:`read_weights_file` and :func:`fit_weights` serve the torchvision encoders too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pathviewer.core.errors import CheckpointError, TrainingError
from pathviewer.ml.encoder_name import parse_timm

#: Wrappers that training frameworks put in front of an encoder's keys (DDP, Lightning, DINO).
KEY_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "trunk.", "student.", "teacher.")

#: Dict keys under which checkpoints nest the state dict.
NESTED_KEYS = ("state_dict", "model", "encoder", "teacher", "student")

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class EncoderInfo:
    """What a network needs to know about its encoder.

    Attributes
    ----------
    feature_dim
        Size of the pooled features.
    input_size
        Side in pixels the encoder was made for (its pretrained configuration).
    fixed_input_size
        Whether it only accepts ``input_size`` (a ViT with fixed position embeddings).
    mean, std
        Per-channel normalisation of images in [0, 1].
    """

    feature_dim: int
    input_size: int
    fixed_input_size: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def read_weights_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict in a weights file (nested ``state_dict``/``model``/... unwrapped).

    Raises
    ------
    CheckpointError
        Missing file, one neither safetensors nor a safe PyTorch pickle, or one that holds no
        state dict of tensors -- one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    data: Any
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            data = load_file(str(path), device="cpu")
        except Exception as error:  # corrupt header, truncated file, MemoryError
            raise CheckpointError(
                f"{path}: not a safetensors file ({type(error).__name__}: {str(error)[:120]})"
            ) from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            first = str(error).strip().splitlines()[0][:120] if str(error).strip() else ""
            raise CheckpointError(
                f"{path}: not a PyTorch weights file ({type(error).__name__}: {first})"
            ) from None
    for _ in range(3):  # e.g. {"model": {"state_dict": ...}}
        if not isinstance(data, dict):
            break
        nested = next((data[k] for k in NESTED_KEYS if isinstance(data.get(k), dict)), None)
        if nested is None or all(isinstance(v, torch.Tensor) for v in data.values()):
            break
        data = nested
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())
    ):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return data


def _strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes no key of the encoder itself starts with."""
    changed = True
    while changed:
        changed = False
        for prefix in KEY_PREFIXES:
            if any(k.startswith(prefix) for k in expected):
                continue
            if any(k.startswith(prefix) for k in state):
                state = {
                    (k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()
                }
                changed = True
    return state


def _first(keys: list[str]) -> str:
    key = keys[0]
    return repr(key if len(key) <= 60 else key[:57] + "...")


def weights_problem(
    network: nn.Module, weights: Any, ignored_prefixes: tuple[str, ...] = ()
) -> str | None:
    """One short phrase saying why ``weights`` do not fit ``network`` (None when they do).

    ``load_state_dict`` lists every missing and unexpected key, thousands of characters for a
    file of another architecture; a count and the first of each is what a user can act on.
    Keys starting with ``ignored_prefixes`` (a classifier head) may be left over.
    """
    if not isinstance(weights, dict) or not all(
        isinstance(v, torch.Tensor) for v in weights.values()
    ):
        return "the weights are not a state dict of tensors"
    expected = network.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [
        k for k in weights if k not in expected and not str(k).startswith(ignored_prefixes)
    ]
    reshaped = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {_first(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {_first(unexpected)}")
    if reshaped:
        key = reshaped[0]
        problems.append(
            f"{len(reshaped)} of another shape, e.g. {_first(reshaped)}"
            f" {tuple(weights[key].shape)} vs {tuple(expected[key].shape)}"
        )
    return "; ".join(problems) or None


def fit_weights(
    encoder: nn.Module,
    state: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    head_prefixes: tuple[str, ...],
    what: str,
) -> None:
    """Load ``state`` into ``encoder``; only classifier-head keys may be left over.

    Parameters
    ----------
    encoder
        The network (without its head).
    state
        From :func:`read_weights_file`.
    path
        The file, for the message.
    head_prefixes
        Key prefixes of the architecture's classifier head (``fc.``, ``head.``): the only keys
        that may be in the file and not in ``encoder``.
    what
        The encoder's name, for the message.

    Raises
    ------
    CheckpointError
        Missing keys, other unexpected keys or shapes that differ, counted in one line.
    """
    expected = encoder.state_dict()
    state = _strip_prefixes(state, set(expected))
    problem = weights_problem(encoder, state, head_prefixes)
    if problem is not None:
        raise CheckpointError(f"{path}: not weights for {what} ({problem})")
    encoder.load_state_dict({k: state[k] for k in expected})


def _create(text: str) -> nn.Module:
    """``timm.create_model`` of a ``timm:NAME[,key=value...]`` setting, head removed, no weights."""
    import timm

    spec = parse_timm(text)
    if not timm.is_model(spec.name):
        raise CheckpointError(f"{text}: unknown timm model {spec.name!r} (see timm.list_models())")
    try:
        model: nn.Module = timm.create_model(
            spec.name, pretrained=False, num_classes=0, **spec.kwargs
        )
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        raise TrainingError(
            f"{text}: timm cannot build it with these arguments ({type(error).__name__}: {first})"
        ) from None
    return model


def _info(model: nn.Module) -> EncoderInfo:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    size = int(config["input_size"][-1])
    # A ViT built with img_size=... keeps its architecture's pretrained config; the patch
    # embedding holds the size it was built for.
    embed_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(embed_size, tuple | list) and embed_size:
        size = int(embed_size[-1])
    cfg = getattr(model, "pretrained_cfg", None) or {}
    fixed = bool(cfg.get("fixed_input_size", False)) and not getattr(
        model, "dynamic_img_size", False
    )
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    if len(mean) != 3 or len(std) != 3:
        raise TrainingError(f"encoder expects {len(mean)} channels; patches have 3 (RGB)")
    return EncoderInfo(
        int(getattr(model, "num_features")),  # noqa: B009 - timm models have it, nn.Module not
        size,
        fixed,
        (mean[0], mean[1], mean[2]),
        (std[0], std[1], std[2]),
    )


def timm_encoder_info(text: str) -> EncoderInfo:
    """Feature size, input size and normalisation of a timm encoder, without building weights.

    The model is made on the ``meta`` device (no memory, no random init, no download).

    Raises
    ------
    CheckpointError
        Unknown model name.
    TrainingError
        Bad arguments.
    """
    with torch.device("meta"):
        return _info(_create(text))


def build_timm_encoder(
    text: str, weights_path: str | os.PathLike[str] | None = None
) -> tuple[nn.Module, EncoderInfo]:
    """A timm encoder (pooled features, no head) with the user's weights, and its info.

    Parameters
    ----------
    text
        ``timm:NAME[,key=value...]`` (:mod:`pathviewer.ml.encoder_name`).
    weights_path
        ``.safetensors``, ``.pt``, ``.pth`` or ``.bin`` state dict; random weights when None
        (the network is then loaded from a model file).

    Raises
    ------
    CheckpointError
        Unknown model, or a weights file that is missing, unreadable or of another network.
    TrainingError
        Arguments timm refuses.
    """
    model = _create(text)
    if weights_path:
        state = read_weights_file(weights_path)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        heads = cfg.get("classifier") or ("head", "fc", "classifier")
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        prefixes = tuple(f"{h}." for h in (*heads, "head", "fc", "classifier", "head_dist"))
        fit_weights(model, state, weights_path, prefixes, text)
    return model, _info(model)


def encoder_record(
    arch: str,
    input_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    weights_path: str | os.PathLike[str] | None,
    frozen: bool,
) -> dict[str, Any]:
    """What a run's record says about its encoder (plain types, for model.pt and config.json).

    The weights file is named with its size and hash (its trained weights are in model.pt, so
    the file itself is not needed again).
    """
    import hashlib

    record: dict[str, Any] = {
        "arch": arch,
        "input_size": int(input_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "weights_file": None,
        "frozen": bool(frozen),
    }
    if weights_path:
        path = Path(weights_path)
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
            size = path.stat().st_size
        except OSError as error:
            raise CheckpointError(f"{path}: cannot read the weights file ({error})") from None
        record["weights_file"] = {"name": path.name, "bytes": size, "sha256": digest.hexdigest()}
    if frozen:
        record["training"] = (
            "frozen encoder: features computed once per patch (no augmentation), only the"
            " heads trained"
        )
    return record
