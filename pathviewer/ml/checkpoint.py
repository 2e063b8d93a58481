"""Model files and training checkpoints, saved atomically and loaded with ``weights_only=True``.

A file holds only tensors, containers and plain numbers/strings, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects.  Every file carries ``format`` and ``version``
keys; anything else is rejected as foreign with a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import CheckpointError

MODEL_FORMAT = "pathviewer-model"
CHECKPOINT_FORMAT = "pathviewer-checkpoint"
VERSION = 1


def save_file(path: str | os.PathLike[str], payload: dict[str, Any], kind: str) -> None:
    """Write ``payload`` (tensors, dicts, lists, numbers, strings) with its format tag, atomically."""
    data = {"format": kind, "version": VERSION, **payload}
    with atomic_write(path, "wb") as handle:
        torch.save(data, handle)


def load_file(path: str | os.PathLike[str], kind: str) -> dict[str, Any]:
    """Load a file written by :func:`save_file` with ``weights_only=True``.

    Raises
    ------
    CheckpointError
        Missing, corrupt, foreign (no/other ``format`` tag) or newer-version file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: corrupt or not a PyTorch file ({type(error).__name__}: {str(error)[:200]})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != kind:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a PathViewer {kind} file (found {found!r})")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer PathViewer (version {data['version']})")
    return data


def save_model(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a trained model file (``model.pt``)."""
    save_file(path, payload, MODEL_FORMAT)


def load_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``model.pt`` (see :func:`load_file`)."""
    data = load_file(path, MODEL_FORMAT)
    for key in ("method", "config", "student"):
        if key not in data:
            raise CheckpointError(f"{path}: model file lacks {key!r}")
    return data


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write a resumable training checkpoint."""
    save_file(path, payload, CHECKPOINT_FORMAT)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint (see :func:`load_file`)."""
    return load_file(path, CHECKPOINT_FORMAT)
