"""NGSD: negative-sample guided self-distillation (the patent's method), headless.

Pipeline, each step named where it happens in this module:

1. **Tiling** and 2. **Background filter** -- :func:`pathviewer.ml.data.tile_cohort`
   (DSMIL edge score > threshold, cached patch index).
3. **Sampling** -- balanced batches of positive- and negative-slide patches, two independent
   augmentations per patch: the teacher view and the student view.
4. **Networks** -- teacher and student: ResNet18 + linear head, same architecture, separate
   parameters (the teacher starts as a copy of the student).
5. **Prediction Bank** -- the latest teacher probability of every positive-slide patch; the
   pseudo-labels are re-solved by Sinkhorn-Knopp with marginals (1-K, K) over the patches the
   teacher has scored (:class:`~pathviewer.ml.bank.PredictionBank` says why).
6. **Loss** -- CE(student(view), pseudo-label) on positive-slide patches + CE(student(view), 0) on
   negative-slide patches; Adam on the student.
7. **EMA** -- teacher <- lam * teacher + (1 - lam) * student.
8. **Inference** -- :mod:`pathviewer.ml.inference` (student probabilities -> heatmap -> pooling).

Beyond the seed text: optional H&E stain jitter and stain normalisation (recorded in
``model.pt``), a degeneration guard (:mod:`pathviewer.ml.guard`) and, when the ``val`` split has
annotated slides, keeping the student of the best validation instance AUC.

:func:`train` is a job generator (yields :class:`~pathviewer.core.progress.Progress`, returns a
:class:`RunResult`).  Closing it mid-run leaves the last checkpoint and ``model.pt`` valid;
``resume=True`` continues a killed run from its last checkpoint.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

from pathviewer.core.atomic import atomic_write
from pathviewer.core.cohort import read_cohort, require_both_classes, select
from pathviewer.core.errors import CheckpointError, TrainingError
from pathviewer.core.progress import Progress
from pathviewer.core.stain import StainNormalizer
from pathviewer.ml import checkpoint as ckpt
from pathviewer.ml.bank import PredictionBank, logit, sigmoid
from pathviewer.ml.config import METHODS, NGSDConfig, demo_config  # noqa: F401 - re-exported
from pathviewer.ml.data import (
    BalancedBatchSampler,
    FeatureViews,
    PatchStore,
    TwoViewDataset,
    cache_dir_for,
    make_loader,
    slide_label_mask,
    tile_cohort,
    to_input,
)
from pathviewer.ml.device import autocast, default_workers, pick_device, seed_everything
from pathviewer.ml.encoders import encoder_record
from pathviewer.ml.guard import DegenerationGuard, GuardReport
from pathviewer.ml.losses import soft_cross_entropy
from pathviewer.ml.metrics import roc_auc
from pathviewer.ml.models import (
    PatchClassifier,
    build_classifier,
    encode_patches,
    network_input_size,
)
from pathviewer.ml.provenance import sample_patches, training_provenance
from pathviewer.ml.stain_prior import StainPrior, compute_features, fit_stain_prior

if TYPE_CHECKING:
    from pathviewer.ml.distributed import DistContext

#: Steps between the bank snapshots that mining samples from.  Batches are made ahead of
#: training (DataLoader prefetch, at most 4 batches per worker), so a batch of block ``b`` uses
#: the snapshot taken at the start of block ``b - 1``: always ready, and the same on a resume.
MINING_BLOCK = 40
#: Most bank entries the degeneration guard reads per check.
GUARD_SAMPLE = 100_000
_log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished (or cancelled) run leaves behind."""

    out_dir: Path
    model_path: Path
    steps: int
    metrics: dict[str, float]
    seconds: float
    completed: bool
    degenerate: bool = False
    guard: list[str] = field(default_factory=list)


def _resolve_downsample(cfg: NGSDConfig, entries: list[Any]) -> float:
    """Read downsample: from ``magnification`` (first slide's objective power) or as set."""
    if cfg.magnification > 0:
        from pathviewer.core.slide import open_slide
        from pathviewer.core.tiling import downsample_for_magnification

        slide = open_slide(entries[0].path)
        try:
            return downsample_for_magnification(slide, cfg.magnification)
        finally:
            slide.close()
    return float(cfg.read_downsample)


@dataclass
class TrainData:
    """Tiled training slides and their patch store."""

    store: PatchStore
    positives: np.ndarray
    negatives: np.ndarray
    read_downsample: float
    normalizer: StainNormalizer | None = None
    provenance: dict[str, Any] | None = None


def prepare_training_data(
    cohort_csv: str | Path, cfg: NGSDConfig, out_dir: Path, splits: tuple[str, ...] = ("train",)
) -> Generator[Progress, None, TrainData]:
    """Steps 1-2 (Tiling, Background filter) for the training split, then optional preloading.

    Raises
    ------
    CohortError
        Bad CSV, or the training split lacks a positive or a negative slide.
    TrainingError
        A training slide has no tissue.
    """
    entries = read_cohort(cohort_csv)
    train_entries = [e for s in splits for e in select(entries, s)]
    if not train_entries:
        raise TrainingError(f"{cohort_csv}: no slides with split {'/'.join(splits)}")
    unlabelled = [e for e in train_entries if e.label is None]
    if unlabelled:
        raise TrainingError(
            f"{cohort_csv} row {unlabelled[0].row}: training slide {unlabelled[0].slide!r} has no label"
        )
    require_both_classes(train_entries, f"{cohort_csv} ({'/'.join(splits)} split)")
    read_ds = _resolve_downsample(cfg, train_entries)
    tiled = yield from tile_cohort(
        train_entries, cfg.patch_size, read_ds, cfg.threshold, cache_dir_for(out_dir)
    )
    raw = PatchStore(tiled)
    normalizer: StainNormalizer | None = None
    if cfg.stain_norm in ("macenko", "macenko-slide"):
        yield Progress("stain normalisation", 0, 1, "fitting Macenko stains on training patches")
        sample = [p for i in range(len(raw.slides)) for p in sample_patches(raw, i, seed=cfg.seed)]
        try:
            scope = "slide" if cfg.stain_norm == "macenko-slide" else "patch"
            normalizer = StainNormalizer(seed=cfg.seed, scope=scope).fit(sample)
        except ValueError as error:  # too little tissue, or a single colour
            raise TrainingError(
                f"{cohort_csv}: cannot fit Macenko stain normalisation on the training patches "
                f"({error}); train with stain_norm none"
            ) from None
        yield Progress("stain normalisation", 1, 1, "fitted")
    provenance = training_provenance(
        raw,
        _level0_mpp(train_entries),
        read_ds,
        cfg.patch_size,
        cfg.input_size,
        normalizer.to_dict() if normalizer is not None else None,
        cfg.seed,
    )
    raw.close()
    store = PatchStore(tiled, normalizer)
    if store.nbytes() <= cfg.preload_mb * 1024 * 1024:
        yield from store.preload()
    return TrainData(
        store,
        slide_label_mask(store, 1),
        slide_label_mask(store, 0),
        read_ds,
        normalizer,
        provenance,
    )


def _level0_mpp(entries: list[Any]) -> float | None:
    """Level-0 microns per pixel of the first training slide (None when it states none)."""
    from pathviewer.core.slide import open_slide

    slide = open_slide(entries[0].path)
    try:
        mpp = slide.mpp
    finally:
        slide.close()
    return float(mpp[0]) if mpp else None


def _network_input(view: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch as the network takes it: uint8 images to [0, 1], cached features as they are."""
    x = view.to(device, non_blocking=True)
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def _ema_update(teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
    """Step 7, EMA: theta_t <- lam * theta_t + (1 - lam) * theta_s; buffers copied."""
    with torch.no_grad():
        for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
            t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)
        for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
            tb.copy_(sb)


def _bank_labels(store: PatchStore, positives: np.ndarray) -> np.ndarray | None:
    """Ground-truth labels of the bank's patches when the positive slides are annotated."""
    from pathviewer.ml.metrics import instance_labels

    labels = np.full(len(positives), -1, np.int64)
    for number, tiled in enumerate(store.slides):
        if tiled.entry.label != 1 or tiled.entry.annotations is None:
            continue
        lab = instance_labels(tiled.entry, tiled.index.boxes())
        start = int(store.offsets[number])
        rows = np.searchsorted(positives, np.arange(start, start + len(lab)))
        labels[rows] = lab
    return labels if (labels >= 0).any() else None


def _stain_prior(
    store: PatchStore, positives: np.ndarray, input_size: int
) -> Generator[Progress, None, tuple[StainPrior, np.ndarray]]:
    """The fitted stain prior and its logits of the bank's slots.

    Features come from the patch as the network sees it at inference (``to_input``), so the
    heatmap's prior (:class:`~pathviewer.ml.model_file.PatchScorer`) reads the same pixels.
    """
    features = yield from compute_features(len(store), lambda i: to_input(store.get(i), input_size))
    slide_positive = np.array([t.entry.label == 1 for t in store.slides])[store.slide_of]
    try:
        prior = fit_stain_prior(features, store.slide_of, slide_positive)
    except ValueError as error:
        raise TrainingError(f"stain prior: {error}") from None
    return prior, prior.logits(features, store.slide_of)[positives]


def _negative_reference(
    network: torch.nn.Module,
    store: PatchStore,
    negatives: np.ndarray,
    input_size: int,
    device: torch.device,
    sample: int = 512,
) -> float:
    """Median logit of the network on (a spread sample of) the negative-slide patches.

    The heatmap blends the network's logit, taken relative to this, with the stain prior's,
    which is relative to the same patches' median (:class:`~pathviewer.ml.model_file.PatchScorer`).
    """
    if not len(negatives):
        return 0.0
    chosen = negatives[np.linspace(0, len(negatives) - 1, min(sample, len(negatives))).astype(int)]
    was_training = network.training
    network.eval()
    logits: list[np.ndarray] = []
    try:
        with torch.inference_mode():
            for start in range(0, len(chosen), 128):
                batch = torch.stack(
                    [to_input(store.get(int(i)), input_size) for i in chosen[start : start + 128]]
                )
                out = network(batch.to(device).float().div_(255)).float()
                logits.append((out[:, 1] - out[:, 0]).cpu().numpy())
    finally:
        network.train(was_training)
    return float(np.median(np.concatenate(logits)))


def _prior_share(final: float, step: int, total_steps: int) -> float:
    """The stain prior's weight in the bank's scores: 1 at the start, ``final`` from mid-run."""
    fade = max(1, total_steps // 2)
    return final + (1.0 - final) * max(0.0, 1.0 - step / fade)


def _prepare_validation(
    cohort_csv: str | Path,
    cfg: NGSDConfig,
    out: Path,
    read_ds: float,
    normalizer: StainNormalizer | None = None,
) -> Generator[Progress, None, tuple[PatchStore, np.ndarray] | None]:
    """Patches and instance labels of the ``val`` slides that have ground truth (else None)."""
    from pathviewer.ml.metrics import instance_labels

    entries = [
        e
        for e in select(read_cohort(cohort_csv), "val")
        if e.label == 0 or (e.label == 1 and e.annotations is not None)
    ]
    if not entries:
        return None
    tiled = yield from tile_cohort(
        entries, cfg.patch_size, read_ds, cfg.threshold, cache_dir_for(out)
    )
    store = PatchStore(tiled, normalizer)
    if store.nbytes() <= cfg.preload_mb * 1024 * 1024:
        yield from store.preload()
    labels = np.concatenate([instance_labels(t.entry, t.index.boxes()) for t in tiled])
    return store, labels


def _validate(
    student: torch.nn.Module,
    validation: tuple[PatchStore, np.ndarray],
    cfg: NGSDConfig,
    device: torch.device,
) -> float | None:
    """Instance AUC of the student on the validation patches (student back in train mode)."""
    from pathviewer.core.progress import run_job
    from pathviewer.ml.inference import score_patches

    store, labels = validation
    try:
        probs = run_job(
            score_patches(
                student, store, cfg.input_size, device, 128, 0, cfg.amp and device.type == "cuda"
            )
        )
    finally:
        student.train()
    return roc_auc(labels, probs)


def _model_payload(
    cfg: NGSDConfig,
    student: torch.nn.Module,
    teacher: torch.nn.Module | None,
    step: int,
    read_ds: float,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "method": cfg.method,
        "config": cfg.to_dict(),
        "arch": cfg.arch,
        "input_size": cfg.input_size,
        "patch_size": cfg.patch_size,
        "read_downsample": read_ds,
        "num_classes": 2,
        "step": step,
        "student": {k: v.detach().cpu() for k, v in student.state_dict().items()},
    }
    if provenance is not None:
        payload["provenance"] = provenance
    if teacher is not None:
        payload["teacher"] = {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
    return payload


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (they belong to the killed part of a run)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    with atomic_write(path) as handle:
        handle.write("".join(line + "\n" for line in kept))


def train(
    cohort_csv: str | Path,
    out_dir: str | Path,
    config: NGSDConfig | None = None,
    resume: bool = False,
    quiet_workers: bool = False,
    dist: DistContext | None = None,
) -> Generator[Progress, None, RunResult]:
    """Train NGSD (or the naive baseline, ``config.method="naive"``) on the train split.

    Parameters
    ----------
    cohort_csv
        Cohort CSV (``slide,label,split,annotations``).
    out_dir
        Run folder: ``model.pt``, ``config.json``, ``metrics.jsonl``, ``checkpoints/last.pt``.
    config
        Settings (:class:`NGSDConfig`; defaults are the paper's).
    resume
        Continue from ``out_dir/checkpoints/last.pt``.
    dist
        Distributed run (``torchrun``, :mod:`pathviewer.ml.distributed`): DDP student, each rank
        samples its own shard of the patches (``batch_size`` per rank), Prediction Bank updates
        all-gathered before every re-solve (same bank and pseudo-labels on every rank), only
        rank 0 writes ``out_dir``.

    Yields
    ------
    Progress
        ``tiling``, ``loading patches`` then ``training`` events; training events carry
        ``loss``, ``bank_positive_fraction``, ``step``, ``epoch`` and, with annotations,
        ``bank_instance_auc`` (teacher vs ground truth on the bank) in ``metrics``.

    Returns
    -------
    RunResult
    """
    cfg = copy.deepcopy(config) if config is not None else NGSDConfig()
    cfg.validate()
    if cfg.method == "abmil":
        raise TrainingError("attention MIL trains with pathviewer.ml.baselines.train_abmil")
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise CheckpointError(f"{ckpt_path}: no checkpoint to resume from")
        state = ckpt.load_checkpoint(ckpt_path)
        saved = NGSDConfig.from_dict(state["config"])
        # The run's data and model settings come from the checkpoint; only the length may grow.
        saved.steps, saved.epochs = cfg.steps or saved.steps, cfg.epochs
        saved.device, saved.workers, saved.threads = cfg.device, cfg.workers, cfg.threads
        cfg = saved
    # An encoder that takes one input size only (a ViT) gets it; the run records the size used.
    cfg.input_size = network_input_size(cfg.arch, cfg.input_size)
    main = dist is None or dist.is_main  # only rank 0 writes the run folder
    if main:
        out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)  # same on every rank: identical initial weights
    device = dist.device if dist is not None else pick_device(cfg.device)
    world = dist.world_size if dist is not None else 1
    # Step 4, Networks (the student; the teacher follows below).  Built before the slides are
    # read, so that a weights file that does not fit stops the run before any work.
    student = build_classifier(2, cfg.arch, cfg.weights or None, cfg.input_size).to(device)

    data = yield from prepare_training_data(cohort_csv, cfg, out)
    store = data.store
    validation = (
        (
            yield from _prepare_validation(
                cohort_csv, cfg, out, data.read_downsample, data.normalizer
            )
        )
        if main
        else None
    )
    steps_per_epoch = max(1, math.ceil(len(store) / (cfg.batch_size * world)))
    total_steps = cfg.steps or cfg.epochs * steps_per_epoch

    # Step 4, Networks: the teacher has the student's architecture, separate parameters.
    if data.provenance is not None:
        data.provenance["encoder"] = encoder_record(
            cfg.arch,
            cfg.input_size,
            tuple(student.mean.flatten().tolist()),  # type: ignore[operator]
            tuple(student.std.flatten().tolist()),  # type: ignore[operator]
            cfg.weights or None,
            cfg.freeze_encoder,
        )
    features: np.ndarray | None = None
    if cfg.freeze_encoder:
        # Only the heads train: every patch's features once, from the view inference sees.
        student.freeze_encoder()
        features = yield from encode_patches(
            student,
            len(store),
            lambda i: to_input(store.get(i), cfg.input_size),
            device,
            max(cfg.batch_size, 64),
        )
    teacher: PatchClassifier | None = None
    if cfg.method == "ngsd":
        teacher = copy.deepcopy(student)
        for p in teacher.parameters():
            p.requires_grad_(False)
    optimizer = torch.optim.Adam(
        [p for p in student.parameters() if p.requires_grad],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    # Step 5, Prediction Bank: one slot per positive-slide patch (negatives are never stored).
    # Scores older than about two passes over the positive-slide patches leave the marginal.
    per_step = max(1, round(cfg.batch_size * world * cfg.positive_fraction))
    bank = PredictionBank(
        len(data.positives),
        cfg.k,
        cfg.sk_lambda,
        horizon=max(100, 2 * math.ceil(len(data.positives) / per_step)),
        groups=store.slide_of[data.positives] if cfg.bank_marginal == "slide" else None,
        smoothing=cfg.bank_smoothing,
    )
    bank_slot = np.full(len(store), -1, np.int64)
    bank_slot[data.positives] = np.arange(len(data.positives))
    is_positive = np.zeros(len(store), bool)
    is_positive[data.positives] = True
    bank_truth = _bank_labels(store, data.positives) if cfg.method == "ngsd" else None
    prior: np.ndarray | None = None
    stain_prior: StainPrior | None = None
    if cfg.method == "ngsd" and cfg.bank_prior == "stain":
        stain_prior, prior = yield from _stain_prior(store, data.positives, cfg.input_size)
        if state is None:
            # The bank starts from the prior: every slot scored, so K is shared out by it.
            bank.update(np.arange(len(data.positives)), sigmoid(prior))

    step = 0
    if state is not None:
        try:
            student.load_state_dict(state["student"])
            if teacher is not None:
                teacher.load_state_dict(state["teacher"])
            optimizer.load_state_dict(state["optimizer"])
            bank.load_state_dict(
                {k: v.numpy() if hasattr(v, "numpy") else v for k, v in state["bank"].items()}
            )
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(
                f"{ckpt_path}: does not match this cohort/config ({error})"
            ) from None
        step = int(state["step"])
        if main:
            _truncate_metrics(out / "metrics.jsonl", step)
    if main:
        with atomic_write(out / "config.json") as handle:
            json.dump(
                {
                    **cfg.to_dict(),
                    "resolved_read_downsample": data.read_downsample,
                    **(
                        {"encoder": data.provenance["encoder"]}
                        if data.provenance is not None
                        else {}
                    ),
                },
                handle,
                indent=2,
            )
    forward: torch.nn.Module = student
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        # DDP averages the gradients, so the student (and the EMA teacher following it) stays
        # identical on every rank; the teacher is broadcast once in case inits differ.
        forward = DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )
        if teacher is not None:
            dist.broadcast_module(teacher)

    guard = DegenerationGuard(cfg.k, total_steps) if teacher is not None else None
    best: dict[str, Any] = {"auc": -1.0, "student": None, "step": 0}

    def save(final: bool, report: GuardReport | None = None) -> None:
        """Write the resumable checkpoint; ``model.pt`` (student only) at the end or on cancel.

        With ``select_best`` and a validation split, ``model.pt`` holds the student of the
        best validation AUC (the checkpoint keeps the last one, for ``--resume``).
        """
        if not main:
            return
        payload = _model_payload(cfg, student, None, step, data.read_downsample, data.provenance)
        if stain_prior is not None:
            payload["stain_prior"] = {
                **stain_prior.to_dict(),
                "weight": cfg.prior_weight,
                "net_reference": _negative_reference(
                    student, store, data.negatives, cfg.input_size, device
                )
                if final
                else 0.0,
            }
        ckpt.save_checkpoint(
            ckpt_path,
            {
                **payload,
                "teacher": (
                    {k: v.detach().cpu() for k, v in teacher.state_dict().items()}
                    if teacher is not None
                    else {}
                ),
                "optimizer": optimizer.state_dict(),
                "bank": {
                    "probs": torch.from_numpy(bank.probs.copy()),
                    "seen": torch.from_numpy(bank.seen.copy()),
                    "updated_at": torch.from_numpy(bank.updated_at.copy()),
                    "clock": bank.clock,
                },
                "mining": {str(b): torch.from_numpy(w.copy()) for b, w in snapshots.items()},
            },
        )
        if final:
            if cfg.select_best and best["student"] is not None:
                payload["student"] = best["student"]
                payload["selected_step"] = best["step"]
                payload["val_instance_auc"] = best["auc"]
            if report is not None:
                payload["degenerate"] = report.degenerate
                payload["guard"] = report.reasons + report.warnings
            ckpt.save_model(out / "model.pt", payload)

    # Automatic workers: augmentation runs in background processes so the model never waits
    # for data (one worker on a 2-core machine, up to 8 on larger ones).
    workers = cfg.workers if cfg.workers >= 0 else default_workers()
    if features is not None:
        workers = 0  # the views are rows of an array in memory: nothing to wait for
    # Distributed: each rank draws from its own shard of the patches, with its own seed.
    sample_seed = dist.rank_seed(cfg.seed) if dist is not None else cfg.seed
    snapshots: dict[int, np.ndarray] = {}
    if state is not None and "mining" in state:
        snapshots = {int(b): w.numpy() for b, w in state["mining"].items()}

    def mining_weights(batch_step: int) -> np.ndarray | None:
        weights = snapshots.get(batch_step // MINING_BLOCK)
        return None if weights is None else weights[sampler_slots]

    # The positives this rank samples from, as bank slots (for the mining weights).
    sampler_positives = dist.shard(data.positives) if dist is not None else data.positives
    sampler_slots = bank_slot[sampler_positives]
    sampler = BalancedBatchSampler(
        sampler_positives,
        dist.shard(data.negatives) if dist is not None else data.negatives,
        cfg.batch_size,
        cfg.positive_fraction,
        step,
        total_steps,
        sample_seed,
        cfg.mining if teacher is not None else 0.0,
        mining_weights,
    )
    dataset: torch.utils.data.Dataset = (
        FeatureViews(features, views=2 if teacher else 1)
        if features is not None
        else TwoViewDataset(
            store,
            cfg.input_size,
            sample_seed,
            views=2 if teacher else 1,
            stain_sigma=cfg.stain_augment,
            plain_teacher=cfg.teacher_view == "plain",
        )
    )
    loader = make_loader(dataset, sampler, workers, pin_memory=device.type == "cuda")
    metrics: dict[str, float] = {}
    use_amp = cfg.amp and device.type == "cuda"
    student.train()
    if teacher is not None:
        teacher.train()  # batch statistics: the EMA'd running statistics lag early on
    log: TextIO = (
        open(out / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in finally
        if main
        else io.StringIO()
    )
    losses: list[float] = []
    failed = False
    val_auc: float | None = None
    warned = False
    alarms = 0
    message = ""
    final_report: GuardReport | None = None
    try:
        yield Progress("training", step, total_steps, "starting")
        for batch in loader:
            # Step 3, Sampling: two independent augmentations -> teacher view, student view.
            if teacher is not None:
                t_view, s_view, patches = batch
            else:
                s_view, patches = batch
            idx = patches.numpy()
            pos = torch.from_numpy(is_positive[idx]).to(device)
            s_in = _network_input(s_view, device)
            if teacher is not None:
                t_in = _network_input(t_view, device)
                with torch.no_grad(), autocast(device, use_amp):
                    t_prob = F.softmax(teacher(t_in).float(), dim=1)[:, 1]
                # Step 5, Prediction Bank: store the teacher's probabilities, SK re-solve.
                mask = is_positive[idx]
                slots = bank_slot[idx[mask]]
                probs = t_prob[torch.from_numpy(mask).to(device)].float().cpu().numpy()
                if cfg.calibrate_bank and (~mask).any():
                    # The teacher drifts as it trains (towards 0 while most targets are 0), and
                    # the bank mixes scores from many steps: the older, higher scores would take
                    # the positive mass from every fresh one and push it to 0, a feedback loop
                    # to "all negative".  Scored against this batch's negative-slide patches,
                    # the scores of different steps stay comparable.
                    scores = logit(t_prob.float().cpu().numpy())
                    reference = float(np.median(scores[~mask]))
                    probs = sigmoid(scores[mask] - reference).astype(np.float32)
                if prior is not None and len(slots):
                    weight = _prior_share(cfg.prior_weight, step, total_steps)
                    mixed = weight * prior[slots] + (1.0 - weight) * logit(probs)
                    probs = sigmoid(mixed).astype(np.float32)
                if dist is not None:
                    # Every rank applies every rank's updates in rank order, so all ranks
                    # re-solve the same bank and get the same pseudo-labels.
                    rows = dist.all_gather_rows(np.stack([slots, probs], axis=1))
                    slots, probs = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.float32)
                if len(slots):
                    bank.update(slots, probs)
                if guard is not None:
                    all_probs = t_prob.float().cpu().numpy()
                    guard.observe_batch(step + 1, all_probs[mask], all_probs[~mask])
                target = torch.zeros(len(idx), dtype=torch.float32)
                if step < cfg.naive_warmup:
                    target[torch.from_numpy(mask)] = 1.0
                elif mask.any():
                    target[torch.from_numpy(mask)] = torch.from_numpy(
                        bank.pseudo_labels(bank_slot[idx[mask]])
                    )
                target = target.to(device)
            else:
                target = pos.float()  # naive baseline: every patch inherits its slide's label
            # Step 6, Loss: CE(student, pseudo-label) on positives + CE(student, 0) on negatives.
            with autocast(device, use_amp):
                logits = forward(s_in)
            # Two classes, soft targets (1 - q, q).
            per_sample = soft_cross_entropy(logits, torch.stack([1.0 - target, target], dim=1))
            loss = per_sample.mean()
            # Distributed: the mean over ranks, so every rank stops together on a NaN.
            loss_value = float(loss.item()) if dist is None else dist.mean(float(loss.item()))
            if not math.isfinite(loss_value):
                raise TrainingError(f"loss became {loss_value} at step {step}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if dist is not None:
                dist.average_buffers(student)  # same BatchNorm statistics on every rank
            # Step 7, EMA teacher.
            if teacher is not None:
                _ema_update(teacher, student, cfg.ema)
            step += 1
            if teacher is not None and cfg.mining > 0 and step % MINING_BLOCK == 0:
                # Pseudo-labels of scored patches; unscored ones get K (no evidence either way).
                weights = np.where(bank.seen, bank.pseudo_labels(), bank.k).astype(np.float32)
                snapshots[step // MINING_BLOCK + 1] = weights
                snapshots.pop(step // MINING_BLOCK - 1, None)
            losses.append(loss_value)
            if validation is not None and (step % cfg.eval_every == 0 or step == total_steps):
                val_auc = _validate(student, validation, cfg, device)
                if guard is not None:
                    guard.observe_validation(val_auc)
                if val_auc is not None and val_auc > best["auc"]:
                    best.update(
                        auc=val_auc,
                        step=step,
                        student={
                            k: v.detach().cpu().clone() for k, v in student.state_dict().items()
                        },
                    )
            if step % cfg.log_every == 0 or step == total_steps:
                metrics = {
                    "step": float(step),
                    "epoch": step / steps_per_epoch,
                    "loss": float(np.mean(losses)),
                    "seconds": time.perf_counter() - started,
                }
                losses = []
                if val_auc is not None:
                    metrics["val_instance_auc"] = val_auc
                if teacher is not None:
                    metrics["bank_positive_fraction"] = bank.positive_fraction()
                    if guard is not None:
                        scored = np.flatnonzero(bank.seen)
                        # A strided sample keeps this O(100k) on million-patch banks (GPU runs).
                        stride = max(1, len(scored) // GUARD_SAMPLE)
                        guard.observe_bank(bank.pseudo_labels(scored[::stride]))
                        metrics.update(guard.signals())
                        report = guard.check()
                        # A slow start looks like a collapse for a while (seen: the bank's
                        # positives came back after step 280 of 400), so the early warning
                        # waits for an alarm that persists past half of the run.
                        alarms = alarms + 1 if report.degenerate else 0
                        metrics["guard_alarm"] = float(report.degenerate)
                        persistent = alarms * cfg.log_every >= max(50, total_steps // 10)
                        if persistent and step >= total_steps // 2 and not warned:
                            warned = True
                            message = f"warning: training may be degenerating: {report.summary()}"
                            _log.warning(message)
                    metrics["bank_seen_fraction"] = float(bank.seen.mean()) if len(bank) else 0.0
                    if bank_truth is not None and prior is not None:
                        known = bank_truth >= 0
                        auc = roc_auc(bank_truth[known], prior[known])
                        if auc is not None:
                            metrics["prior_instance_auc"] = auc
                    if bank_truth is not None:
                        known = (bank_truth >= 0) & bank.seen
                        auc = roc_auc(bank_truth[known], bank.probs[known])
                        if auc is not None:
                            metrics["bank_instance_auc"] = auc
                log.write(json.dumps(metrics) + "\n")
                log.flush()
            if step % cfg.checkpoint_every == 0 and step < total_steps:
                save(final=False)
            yield Progress("training", step, total_steps, message or cfg.method, dict(metrics))
            message = ""
    except GeneratorExit:
        raise  # cancel: the finally block saves the last step
    except BaseException:
        failed = True  # e.g. a NaN loss: keep the last good checkpoint, write nothing broken
        raise
    finally:
        log.close()
        if guard is not None:
            final_report = guard.final()
            if main:
                with atomic_write(out / "guard.json") as handle:
                    json.dump(
                        {
                            "step": step,
                            "degenerate": final_report.degenerate,
                            "reasons": final_report.reasons,
                            "warnings": final_report.warnings,
                            "signals": guard.signals(),
                        },
                        handle,
                        indent=2,
                    )
        if not failed:
            # Cancelled or finished: checkpoint and model.pt both describe the last step done.
            save(final=True, report=final_report)
        store.close()
        if validation is not None:
            validation[0].close()
    if dist is not None:
        from pathviewer.ml.distributed import module_digest

        # With PATHVIEWER_DIST_DEBUG set, every rank dumps its bank and weight digests.
        dist.debug_dump(
            "ngsd",
            bank_probs=bank.probs,
            bank_seen=bank.seen,
            bank_tau=np.array(bank.tau, np.float64),
            student=np.array(module_digest(student)),
            teacher=np.array(module_digest(teacher) if teacher is not None else ""),
            steps=np.array(step, np.int64),
        )
    if final_report is not None and final_report.degenerate:
        _log.warning("training degenerated: %s", final_report.summary())
    return RunResult(
        out,
        out / "model.pt",
        step,
        metrics,
        time.perf_counter() - started,
        step >= total_steps,
        bool(final_report is not None and final_report.degenerate),
        (final_report.reasons + final_report.warnings) if final_report is not None else [],
    )
