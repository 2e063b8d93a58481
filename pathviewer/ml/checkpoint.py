"""Model files and training checkpoints, saved atomically and loaded with ``weights_only=True``.

A file holds only tensors, containers and plain numbers/strings, so ``torch.load(weights_only=True)``
reads it without unpickling arbitrary objects.  Every file carries ``format`` and ``version``
keys; anything else is rejected as foreign with a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import os
import re
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
        raise CheckpointError(f"{path}: {_load_failure(error)}") from None
    if not isinstance(data, dict) or data.get("format") != kind:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a PathViewer {kind} file (found {found!r})")
    if int(data.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: written by a newer PathViewer (version {data['version']})")
    return data


def _load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in one short clause.

    torch's own message opens with advice to load the file with ``weights_only=False`` (which
    runs whatever code the file holds) and names the refused code only further down: a file
    that asks for a function to be called is said to be refused, with the function's name.
    """
    text = str(error)
    code = re.search(r"GLOBAL ([\w.]+)", text)
    if code:
        return (
            f"refused: it asks to run {code.group(1)}, which no model file does "
            "(use only model files PathViewer wrote)"
        )
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.startswith(("Weights only load failed", "Check the documentation"))
    ]
    # The first sentence: what follows is torch's advice, not the cause.
    detail = re.split(r"(?<=[a-z])\. ", lines[0])[0].rstrip(".") if lines else ""
    return f"corrupt or not a PyTorch file ({type(error).__name__}: {detail[:160]})"


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
