"""Device selection, mixed precision and seeding (NGSD step 8)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from pathviewer.core.errors import TrainingError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else Apple's MPS, else CPU; ``cpu``/``cuda:N`` as given.

    Raises
    ------
    TrainingError
        CUDA was asked for but is not available.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} asked for, but CUDA is not available here")
    try:
        return torch.device(name)
    except RuntimeError as error:
        raise TrainingError(f"unknown device {name!r} ({error})") from None


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager[None]:
    """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def default_workers() -> int:
    """DataLoader workers: one less than the CPU count, at most 8 (0 on a single core)."""
    count = os.cpu_count() or 1
    return max(0, min(8, count - 1))


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Temporarily limit torch's intra-op threads (None: leave as is)."""
    if not count:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
