"""Inference (NGSD step 8): the student scores every kept patch; heatmaps; slide pooling.

``pathviewer infer`` writes a predictions folder (patch and slide tables, one heatmap per
slide, ``prediction.json``; layout, writer and reader in :mod:`pathviewer.core.predictions`).
It is written only after all slides are scored, and replaces an existing folder as a whole, so a
cancelled, failed or killed run leaves the old folder or the new one, never a mix.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathviewer.core.cohort import CohortEntry, read_cohort, select
from pathviewer.core.errors import CohortError
from pathviewer.core.heatmap import Heatmap
from pathviewer.core.operating_point import OperatingPoint, read_operating_point
from pathviewer.core.predictions import PRED_THRESHOLD, SlideOutput, check_output_folder
from pathviewer.core.predictions import write_predictions as write_folder
from pathviewer.core.progress import Progress
from pathviewer.core.stain import StainNormalizer
from pathviewer.ml.data import PatchStore, TiledSlide, cache_dir_for, tile_cohort, to_input
from pathviewer.ml.device import pick_device
from pathviewer.ml.model_file import ModelFile, PatchScorer, Scorer
from pathviewer.ml.model_file import pool_scores as pool_scores  # re-exported: slide pooling


def _prefetched_batches(
    store: PatchStore, input_size: int, batch_size: int, depth: int = 2
) -> Iterator[torch.Tensor]:
    """Batches of patches prepared by one background thread, ``depth`` batches ahead.

    OpenSlide decodes and PIL resizes without the GIL, so reading the next batch overlaps the
    model's forward pass at no process start-up cost (one thread: slide handles stay private).
    """

    def prepare(start: int) -> torch.Tensor:
        stop = min(len(store), start + batch_size)
        return torch.stack([to_input(store.get(i), input_size) for i in range(start, stop)])

    starts = list(range(0, len(store), batch_size))
    with ThreadPoolExecutor(1, thread_name_prefix="patch-reader") as pool:
        pending: deque[Future[torch.Tensor]] = deque()
        for start in starts[:depth]:
            pending.append(pool.submit(prepare, start))
        queue = starts[depth:]
        while pending:
            batch = pending.popleft().result()
            if queue:
                pending.append(pool.submit(prepare, queue.pop(0)))
            yield batch


class _PatchDataset(torch.utils.data.Dataset):
    def __init__(self, store: PatchStore, input_size: int) -> None:
        self.store = store
        self.input_size = input_size

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> torch.Tensor:
        return to_input(self.store.get(i), self.input_size)


@dataclass
class SlidePrediction:
    """Scores of one slide."""

    tiled: TiledSlide
    probs: np.ndarray
    score: float
    warnings: tuple[str, ...] = ()


def model_normalizer(data: dict[str, Any]) -> StainNormalizer | None:
    """The stain normaliser a model was trained with (None when it used none)."""
    record = (data.get("provenance") or {}).get("stain_norm")
    return StainNormalizer.from_dict(record) if record else None


def describe_model(model_path: str | Path, data: dict[str, Any]) -> str:
    """One line naming a model: method, run folder, resolution, patch size, stain handling."""
    prov = data.get("provenance") or {}
    parts = [f"{data.get('method', 'model')} · run {Path(model_path).resolve().parent.name}"]
    if prov.get("magnification"):
        parts.append(f"{prov['magnification']:.3g}x ({prov['mpp']:.2f} um/px)")
    parts.append(f"{data.get('patch_size', '?')} px patches")
    parts.append(f"stain norm {'macenko' if prov.get('stain_norm') else 'none'}")
    prior = data.get("stain_prior")
    if prior:
        parts.append(f"stain prior {float(prior.get('weight', 0.0)):.2g}")
    if data.get("degenerate"):
        parts.append("DEGENERATE")
    return " · ".join(parts)


def slide_checks(data: dict[str, Any], tiled: Sequence[TiledSlide]) -> list[tuple[str, ...]]:
    """Per slide, the reasons to distrust the model on it (see :mod:`pathviewer.ml.provenance`).

    Compares each slide's MPP and stain statistics (of raw, un-normalised patches) with the
    model's training record; a model the degeneration guard flagged is distrusted everywhere.
    """
    from pathviewer.core.slide import open_slide
    from pathviewer.ml.provenance import sample_patches, slide_stain_summary, slide_warnings

    provenance = data.get("provenance")
    general = []
    if data.get("degenerate"):
        general.append(
            "the model was flagged as degenerate during training: "
            + "; ".join(str(r) for r in data.get("guard", [])[:2])
        )
    raw = PatchStore(tiled)
    out: list[tuple[str, ...]] = []
    try:
        for number, tiled_slide in enumerate(tiled):
            slide = open_slide(tiled_slide.entry.path)
            try:
                mpp = slide.mpp
            finally:
                slide.close()
            stain = (
                slide_stain_summary(sample_patches(raw, number)) if len(tiled_slide.index) else None
            )
            out.append(
                tuple(
                    general
                    + slide_warnings(
                        provenance, tiled_slide.entry.slide, mpp[0] if mpp else None, stain
                    )
                )
            )
    finally:
        raw.close()
    return out


def _batches(
    store: PatchStore, input_size: int, device: torch.device, batch_size: int, workers: int
) -> Iterator[torch.Tensor]:
    """The store's patches in order, in uint8 batches at ``input_size``."""
    if workers > 0:
        return iter(
            torch.utils.data.DataLoader(
                _PatchDataset(store, input_size),
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                pin_memory=device.type == "cuda",
            )
        )
    return _prefetched_batches(store, input_size, batch_size)


def run_scorer(
    scorer: Scorer, store: PatchStore, batch_size: int = 128, workers: int = 0
) -> Generator[Progress, None, None]:
    """Feed every patch of a store to ``scorer``, batch by batch (then call ``scorer.finish``).

    Every event's ``payload`` is ``(start, probs)`` when the scorer has probabilities to show
    now: those of patches ``start`` to ``start + len(probs) - 1``, so a viewer can fill a heatmap
    progressively; it is None when they only exist at the end (attention MIL).
    """
    done = 0
    for batch in _batches(store, scorer.input_size, scorer.device, batch_size, workers):
        live = scorer.batch(batch)
        start = done
        done += len(batch)
        yield Progress(
            "inference", done, len(store), payload=(start, live) if live is not None else None
        )


def score_patches(
    model: torch.nn.Module,
    store: PatchStore,
    input_size: int,
    device: torch.device,
    batch_size: int = 128,
    workers: int = 0,
    amp: bool = True,
) -> Generator[Progress, None, np.ndarray]:
    """Positive-class probability of every patch of a store, by a two-class patch classifier.

    What validation during training and the benchmarks run; a model file is scored with its own
    scorer (:meth:`~pathviewer.ml.model_file.ModelFile.scorer`, :func:`run_scorer`).  Events as
    :func:`run_scorer`'s.
    """
    scorer = PatchScorer(model, device, input_size, amp)
    yield from run_scorer(scorer, store, batch_size, workers)
    return scorer.finish()[0]


def predict(
    model_path: str | Path,
    cohort_csv: str | Path,
    out_dir: str | Path,
    split: str | None = "test",
    device_name: str = "auto",
    batch_size: int = 128,
    workers: int = 0,
    pooling: str | None = None,
    shard: tuple[int, int] | None = None,
    network_only: bool = False,
) -> Generator[Progress, None, list[SlidePrediction]]:
    """Score the slides of a cohort split with a trained model and write the predictions folder.

    ``shard=(i, n)`` scores only slides ``i::n`` of the split (cohort order), for the jobs of
    an array (a shard past the end of a small cohort writes empty tables);
    :func:`pathviewer.ml.distributed.merge_predictions` joins the shard folders.
    ``network_only`` leaves a model's stain prior out of the probabilities (benchmarks).

    Raises
    ------
    CheckpointError
        Bad model file.
    CohortError
        Bad cohort, or no slide in the split.
    TrainingError
        A slide with no tissue (named).
    PredictionsError
        ``out_dir`` is a file or a folder holding other files (refused before any work).
    """
    check_output_folder(out_dir)
    device = pick_device(device_name)
    model = ModelFile.load(model_path, device)
    cfg, data, method = model.config, model.data, model.method
    entries: Sequence[CohortEntry] = select(read_cohort(cohort_csv), split)
    if not entries:
        raise CohortError(f"{cohort_csv}: no slides with split {split!r}")
    if shard is not None:
        entries = list(entries)[shard[0] :: shard[1]]
    out = Path(out_dir)
    tiled = yield from tile_cohort(
        entries, model.patch_size, model.read_downsample, cfg.threshold, cache_dir_for(out)
    )
    checks = slide_checks(data, tiled)
    for warnings in checks:
        for warning in warnings:
            yield Progress("warning", 0, None, warning)
    use_pool = pooling or cfg.pooling
    scorer = model.scorer(use_pool, network_only)
    # One stream of batches over every slide, so reading overlaps the forward pass throughout.
    store = PatchStore(tiled, model_normalizer(data))
    try:
        yield from run_scorer(scorer, store, batch_size, workers)
    finally:
        store.close()
    results: list[SlidePrediction] = []
    for number, tiled_slide in enumerate(tiled):
        probs, score = scorer.finish(int(store.offsets[number + 1] - store.offsets[number]))
        results.append(SlidePrediction(tiled_slide, probs, score, checks[number]))
    point = read_operating_point(model_path)
    write_predictions(
        out, results, method, model_path, use_pool, describe_model(model_path, data), point
    )
    return results


def write_predictions(
    out: Path,
    results: Sequence[SlidePrediction],
    method: str,
    model_path: Any,
    pooling: str,
    model_info: str = "",
    operating_point: OperatingPoint | None = None,
) -> None:
    """Write the predictions folder of scored slides, replacing any folder at ``out`` as a whole.

    The folder's layout and its all-or-nothing replacement are
    :func:`pathviewer.core.predictions.write_predictions`'s.  ``model_info``
    (:func:`describe_model`) and each slide's warnings go into its heatmap and
    ``prediction.json``, so whoever looks at a heatmap can see which model made it and why it
    might not be trusted on that slide.  With the run's ``operating_point`` the slides are
    called at its threshold (``pred`` of slides.csv) and it is recorded in prediction.json;
    without one at 0.5.
    """
    threshold = operating_point.threshold if operating_point is not None else PRED_THRESHOLD
    slides = []
    for r in results:
        index = r.tiled.index
        coords = np.asarray(index.coords, np.int64).reshape(-1, 2)
        sizes = np.full((len(coords), 2), index.patch_size, np.int64)

        def heatmap(r: SlidePrediction = r, coords: np.ndarray = coords) -> Heatmap:
            index = r.tiled.index
            built = Heatmap.from_patches(
                r.tiled.entry.slide,
                index.dimensions,
                index.patch_size,
                coords,
                r.probs,
                method=method,
            )
            built.model, built.warnings = model_info, tuple(r.warnings)
            return built

        slides.append(
            SlideOutput(
                r.tiled.entry.slide,
                float(r.score),
                np.hstack([coords, sizes]),
                np.asarray(r.probs, np.float64),
                heatmap,
                int(float(r.score) >= threshold),
            )
        )
    write_folder(
        out,
        slides,
        {
            "method": method,
            "model": str(model_path),
            "model_info": model_info,
            "pooling": pooling,
            "warnings": {r.tiled.entry.slide: list(r.warnings) for r in results if r.warnings},
            **(
                {"operating_point": operating_point.to_dict()}
                if operating_point is not None
                else {}
            ),
        },
    )
