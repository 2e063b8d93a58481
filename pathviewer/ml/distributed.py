"""Scale-out with :mod:`torch.distributed`: process group context, collectives, shard helpers.

Training under ``torchrun`` (one process per GPU, or several CPU processes):

* :meth:`DistContext.from_env` joins the process group that ``torchrun`` describes with the
  environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``: NCCL when the run uses CUDA, gloo on CPU.  Without those variables (a plain
  ``pathviewer`` command) it returns None and everything runs in one process as before.
* :meth:`DistContext.all_gather_rows` joins variable-length ``(n, c)`` arrays from every rank in
  rank order; NGSD uses it to give every rank the same Prediction Bank updates.
* :meth:`DistContext.average_buffers` averages BatchNorm running statistics so that the EMA
  teacher, which copies the student's buffers, is identical on every rank.

Inference scale-out needs no process group: :func:`parse_shard` and :func:`shard_items` cut a
cohort into ``N`` deterministic slices (items ``i::N``), one per job of a Slurm array.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as tdist

from pathviewer.core.errors import PathViewerError, TrainingError

T = TypeVar("T")

#: Environment variable: a folder where every rank writes ``<name>-rank<R>.npz`` debug dumps
#: (the Prediction Bank and the teacher's weights at the end of training) so a test -- or a user
#: chasing a divergence -- can check that all ranks hold the same state.
DEBUG_ENV = "PATHVIEWER_DIST_DEBUG"

#: Per-rank seed stride: rank ``r`` samples with ``seed + r * SEED_STRIDE``, far from the seeds
#: other runs use for rank 0, so no two ranks of nearby runs draw the same batches.
SEED_STRIDE = 1_000_003


def launched_by_torchrun() -> bool:
    """True when the environment describes a ``torchrun`` process (``WORLD_SIZE`` and ``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def _env_int(name: str, default: int | None = None) -> int:
    text = os.environ.get(name)
    if text is None:
        if default is None:
            raise TrainingError(f"torch.distributed: environment variable {name} is not set")
        return default
    try:
        return int(text)
    except ValueError:
        raise TrainingError(f"torch.distributed: {name}={text!r} is not an integer") from None


@dataclass
class DistContext:
    """This process's place in a distributed run.

    Attributes
    ----------
    rank
        Global rank (0 .. world_size - 1); rank 0 writes files and shows progress.
    world_size
        Number of processes.
    local_rank
        Rank on this machine (selects the GPU).
    backend
        ``nccl`` or ``gloo``.
    device
        Device of this rank (``cuda:LOCAL_RANK`` with NCCL, else CPU); collectives use it.
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @classmethod
    def from_env(cls, device_name: str = "auto", timeout_s: float = 1800.0) -> DistContext | None:
        """Join the ``torchrun`` process group; None when not launched by ``torchrun``.

        Parameters
        ----------
        device_name
            The run's device setting: ``auto``/``cuda`` use NCCL and ``cuda:LOCAL_RANK`` when
            CUDA is available, ``cpu`` (or no CUDA) uses gloo.
        timeout_s
            Collective timeout (tiling a large cohort on one rank can take long).

        Raises
        ------
        TrainingError
            Bad environment, CUDA asked for but absent, or the group cannot be formed.
        """
        if not launched_by_torchrun():
            return None
        rank = _env_int("RANK")
        world = _env_int("WORLD_SIZE")
        local = _env_int("LOCAL_RANK", 0)
        name = (device_name or "auto").lower()
        use_cuda = torch.cuda.is_available() and name != "cpu"
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise TrainingError(f"device {name!r} asked for, but CUDA is not available here")
        if use_cuda:
            # One GPU per process, picked by the local rank (an explicit cuda:N is ignored).
            device = torch.device("cuda", local % torch.cuda.device_count())
            torch.cuda.set_device(device)
            backend = "nccl"
        else:
            device = torch.device("cpu")
            backend = "gloo"
        if not tdist.is_initialized():
            try:
                tdist.init_process_group(
                    backend, timeout=datetime.timedelta(seconds=timeout_s)
                )
            except (RuntimeError, ValueError) as error:
                raise TrainingError(
                    f"torch.distributed: cannot join the process group of rank {rank}/{world} "
                    f"({backend} via {os.environ.get('MASTER_ADDR', '?')}:"
                    f"{os.environ.get('MASTER_PORT', '?')}): {error}"
                ) from None
        return cls(rank, world, local, backend, device)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that writes the run folder and shows progress."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.backend == "nccl":
            tdist.barrier(device_ids=[self.device.index or 0])
        else:
            tdist.barrier()

    def rank_seed(self, seed: int) -> int:
        """This rank's sampling seed: the run seed for rank 0, offset for the others."""
        return int(seed) + self.rank * SEED_STRIDE

    def shard(self, items: np.ndarray) -> np.ndarray:
        """This rank's share ``items[rank::world_size]`` (like ``DistributedSampler``)."""
        return np.asarray(items)[self.rank :: self.world_size]

    def all_gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Concatenate every rank's ``(n_r, c)`` float array in rank order (``n_r`` may differ).

        Values travel as float64, so int64 indices below 2**53 and float32 values are exact.
        """
        rows = np.asarray(rows, np.float64)
        if rows.ndim != 2:
            raise ValueError(f"all_gather_rows needs a 2-D array, got shape {rows.shape}")
        count = torch.tensor([rows.shape[0]], dtype=torch.int64, device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        tdist.all_gather(counts, count)
        sizes = [int(c.item()) for c in counts]
        longest = max(sizes)
        padded = torch.zeros((longest, rows.shape[1]), dtype=torch.float64, device=self.device)
        padded[: rows.shape[0]] = torch.from_numpy(rows).to(self.device)
        gathered = [torch.empty_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(gathered, padded)
        return np.concatenate(
            [g[:n].cpu().numpy() for g, n in zip(gathered, sizes, strict=True)], axis=0
        )

    def mean(self, value: float) -> float:
        """Mean of a number over the ranks (a NaN or inf on any rank makes the result non-finite,
        so every rank takes the same decision on it)."""
        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        return float(tensor.item()) / self.world_size

    def average_buffers(self, module: torch.nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over the ranks.

        DDP keeps parameters identical, but each rank updates the running statistics with its own
        batch; averaging them keeps the EMA teacher (which copies the student's buffers) and the
        saved model identical everywhere.
        """
        with torch.no_grad():
            for buffer in module.buffers():
                if buffer.is_floating_point():
                    tdist.all_reduce(buffer, op=tdist.ReduceOp.SUM)
                    buffer.div_(self.world_size)

    def debug_dump(self, name: str, **arrays: np.ndarray) -> Path | None:
        """Write ``$PATHVIEWER_DIST_DEBUG/<name>-rank<R>.npz`` when that variable is set."""
        folder = os.environ.get(DEBUG_ENV)
        if not folder:
            return None
        from pathviewer.core.atomic import atomic_write

        path = Path(folder) / f"{name}-rank{self.rank}.npz"
        with atomic_write(path, "wb") as handle:
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})
        return path

    def close(self) -> None:
        """Leave the process group."""
        if tdist.is_initialized():
            tdist.destroy_process_group()


def module_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes and bytes), to compare ranks."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        digest.update(key.encode())
        array = value.detach().cpu().contiguous().numpy()
        digest.update(str(array.dtype).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``.

    Raises
    ------
    PathViewerError
        Not of the form ``i/N`` or out of range.
    """
    try:
        left, right = str(text).split("/")
        index, count = int(left), int(right)
    except ValueError:
        raise PathViewerError(
            f"--shard {text!r}: give INDEX/COUNT, e.g. 0/8 (INDEX counts from 0)"
        ) from None
    if count < 1 or not 0 <= index < count:
        raise PathViewerError(f"--shard {text!r}: need 0 <= INDEX < COUNT and COUNT >= 1")
    return index, count


def shard_items(items: Sequence[T], index: int, count: int) -> list[T]:
    """Items ``index::count`` of a sequence (the cohort's order, so every job agrees)."""
    return list(items)[index::count]
