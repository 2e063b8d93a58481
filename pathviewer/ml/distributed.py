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

Inference scale-out needs no process group: :func:`parse_shard` reads ``--shard i/N``, and
inference scores the cohort's slides ``i::N`` (deterministic slices, one per job of a Slurm
array).
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
from pathviewer.core.predictions import (
    SHARD_JSON,
    PredictionInfo,
    Predictions,
    SlideOutput,
    read_predictions,
    write_predictions,
)

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
                tdist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
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

    def broadcast_module(self, module: torch.nn.Module, src: int = 0) -> None:
        """Copy rank ``src``'s parameters and buffers into ``module`` on every rank."""
        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                tdist.broadcast(tensor.data, src)

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
            np.savez(handle, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
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


# --- Sharded inference: manifest and merge --------------------------------------------------

#: File that ``pathviewer infer --shard i/N`` adds to its predictions folder.
SHARD_MANIFEST = SHARD_JSON


def write_shard_manifest(
    out_dir: str | os.PathLike[str], index: int, count: int, cohort: str, split: str | None
) -> Path:
    """Record which shard a predictions folder holds (``merge_predictions`` checks it)."""
    import json

    from pathviewer.core.atomic import atomic_write

    path = Path(out_dir) / SHARD_MANIFEST
    with atomic_write(path) as handle:
        json.dump(
            {"shard": index, "count": count, "cohort": str(cohort), "split": split or "all"},
            handle,
            indent=2,
        )
    return path


@dataclass
class _Shard:
    index: int
    count: int
    predictions: Predictions

    @property
    def folder(self) -> Path:
        return self.predictions.folder

    @property
    def info(self) -> PredictionInfo:
        assert self.predictions.info is not None  # read with complete=True
        return self.predictions.info


def _read_shard(folder: Path) -> _Shard:
    import json

    from pathviewer.core.errors import CohortError

    if not folder.is_dir():
        raise CohortError(f"{folder}: shard folder not found")
    manifest = folder / SHARD_MANIFEST
    if not manifest.is_file():
        raise CohortError(
            f"{folder}: not a shard folder (no {SHARD_MANIFEST}; write it with "
            "`pathviewer infer ... --shard INDEX/COUNT`)"
        )
    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
        index, count = int(info["shard"]), int(info["count"])
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise CohortError(f"{manifest}: unreadable ({type(error).__name__}: {error})") from None
    # Everything the merge copies, checked: both tables, prediction.json, every heatmap.
    return _Shard(index, count, read_predictions(folder, complete=True))


def merge_predictions(
    shard_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> dict[str, int]:
    """Join the folders of ``pathviewer infer --shard i/N`` into one predictions folder.

    Slides come out in the order a single ``pathviewer infer`` would write them (shard ``i``
    holds positions ``i, i + N, ...`` of the split), so the merged ``patches.csv`` and
    ``slides.csv`` equal the single-process ones.  Heatmaps are copied; the folder is written
    as a whole (:func:`pathviewer.core.predictions.write_predictions`).

    Raises
    ------
    CohortError
        A folder is missing, incomplete or malformed (:class:`PredictionsError`, naming the
        file and row), shards disagree (count, method, pooling), a shard is missing or given
        twice, or a slide appears in two shards; the message names the folder.

    Returns
    -------
    dict
        ``{"shards": N, "slides": ..., "patches": ...}``.
    """
    from pathviewer.core.errors import CohortError

    if not shard_dirs:
        raise CohortError("infer merge: give at least one shard folder")
    out = Path(out_dir)
    shards = [_read_shard(Path(d)) for d in shard_dirs]
    first = shards[0]
    for shard in shards[1:]:
        if shard.count != first.count:
            raise CohortError(
                f"{shard.folder}: shard of {shard.count}, but {first.folder} is a shard of "
                f"{first.count}"
            )
        for key in ("method", "pooling"):
            if getattr(shard.info, key) != getattr(first.info, key):
                raise CohortError(
                    f"{shard.folder}: {key} {getattr(shard.info, key)!r} differs from "
                    f"{first.folder} ({getattr(first.info, key)!r})"
                )
    by_index: dict[int, _Shard] = {}
    for shard in shards:
        if shard.index in by_index:
            raise CohortError(
                f"{shard.folder}: shard {shard.index}/{shard.count} given twice "
                f"(also {by_index[shard.index].folder})"
            )
        by_index[shard.index] = shard
    missing = [i for i in range(first.count) if i not in by_index]
    if missing:
        raise CohortError(
            f"infer merge: shard(s) {', '.join(f'{i}/{first.count}' for i in missing)} missing "
            f"(given {', '.join(str(s.folder) for s in shards)})"
        )
    if any(out.resolve() == s.folder.resolve() for s in shards):
        raise CohortError(f"{out}: the merged folder must not be one of the shard folders")
    owner: dict[str, Path] = {}
    for shard in shards:
        for row in shard.predictions.slides:
            if row.slide in owner:
                raise CohortError(
                    f"{shard.folder}: slide {row.slide!r} is also in {owner[row.slide]} "
                    "(duplicate slide)"
                )
            owner[row.slide] = shard.folder
    # Interleave: position p of the split is row p // N of shard p % N.
    slides: list[SlideOutput] = []
    warnings: dict[str, list[str]] = {}
    longest = max(len(s.predictions.slides) for s in shards)
    for position in range(longest):
        for index in range(first.count):
            shard = by_index[index]
            if position < len(shard.predictions.slides):
                row = shard.predictions.slides[position]
                patches = shard.predictions.patches[row.slide]
                heatmap = shard.predictions.heatmaps[row.slide]
                slides.append(
                    SlideOutput(
                        row.slide, row.score, patches.boxes, patches.probs, heatmap, row.pred
                    )
                )
                if row.slide in shard.info.warnings:
                    warnings[row.slide] = list(shard.info.warnings[row.slide])
    record = {
        **first.info.record,
        "warnings": warnings,
        "merged_from": [str(s.folder) for s in shards],
    }
    write_predictions(out, slides, record)
    n_patches = sum(len(s.probs) for s in slides)
    return {"shards": first.count, "slides": len(slides), "patches": n_patches}
