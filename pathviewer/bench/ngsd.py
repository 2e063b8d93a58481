"""NGSD benchmarks (JSON): train-step efficiency, bank re-solve, inference efficiency.

``python -m pathviewer.bench ngsd [--cohort cohort.csv] [--json out.json] [--device auto]``

* **train**: steps/s of the real training loop (data loading, augmentation, teacher forward,
  bank update + SK re-solve, student forward/backward, EMA) over steps/s of a *bare* step
  (teacher forward + student forward/backward + Adam on random tensors of the same shape), same
  process, same settings.  Target >= 0.85.
* **bank**: closed-form SK re-solve of 1,000,000 patches: milliseconds and the constraint error
  ``|sum q - K N| / N``; the same problem through POT's ``ot.sinkhorn`` when POT is installed.
  Then the incremental path of :class:`~pathviewer.ml.bank.PredictionBank`: one ``update`` of a
  batch of 64 on a full 1,000,000-patch bank (median and p99 ms, target <= 5 ms) and the
  constraint error ``|mean_seen q - K|`` of its tau afterwards.
* **inference**: patches/s of :func:`pathviewer.ml.inference.score_patches` (reads the slide
  file, resizes, forwards) over a bare forward of random tensors.  Target >= 0.9.

Without ``--cohort`` a 6-slide synthetic cohort is generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathviewer.bench import emit_report


def bench_bank(
    n: int = 1_000_000,
    k: float = 0.3,
    lam: float = 5.0,
    repeats: int = 5,
    updates: int = 200,
    batch: int = 64,
) -> dict:
    """Closed-form SK vs POT on ``n`` random teacher probabilities; incremental bank updates."""
    from pathviewer.ml.bank import solve_pseudo_labels

    rng = np.random.default_rng(0)
    probs = rng.beta(0.5, 0.5, n).astype(np.float32)
    times = []
    q = np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        q = solve_pseudo_labels(probs, k, lam)
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {
        "patches": n,
        "k": k,
        "lambda": lam,
        "closed_form_ms": 1000 * statistics.median(times),
        "closed_form_constraint_error": abs(float(q.sum()) - k * n) / n,
    }
    result.update(_bench_bank_updates(probs, k, lam, updates, batch, rng))
    for slides in (100, 1000):
        result[f"per_slide_{slides}"] = _bench_bank_updates(
            probs, k, lam, updates, batch, rng, slides
        )
    try:
        import ot
    except ImportError:
        result["pot"] = "not installed"
        return result
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    cost = -np.stack([np.log1p(-p), np.log(p)], axis=1)
    a = np.full(n, 1.0 / n)
    b = np.array([1.0 - k, k])
    start = time.perf_counter()
    plan = ot.sinkhorn(a, b, cost, reg=1.0 / lam, numItermax=10000, stopThr=1e-9, method="sinkhorn")
    pot_s = time.perf_counter() - start
    q_pot = plan[:, 1] / plan.sum(axis=1)
    result.update(
        pot_method="sinkhorn",
        pot_ms=1000 * pot_s,
        pot_constraint_error=abs(float(q_pot.sum()) - k * n) / n,
        max_abs_difference_closed_form_vs_pot=float(np.abs(q_pot - q).max()),
    )
    return result


def _bench_bank_updates(
    probs: np.ndarray,
    k: float,
    lam: float,
    updates: int,
    batch: int,
    rng: np.random.Generator,
    slides: int = 0,
) -> dict[str, Any]:
    """Time ``update`` on a bank whose every patch is seen (the worst case for a full pass).

    With ``slides`` > 0 the bank has per-slide marginals over that many equal slides
    (``bank_marginal slide``), whose cost grows with the size of the slides a batch touches.
    """
    from pathviewer.ml.bank import PredictionBank

    groups = np.arange(probs.size) * slides // probs.size if slides else None
    bank = PredictionBank(probs.size, k, lam, groups=groups)
    bank.probs[:] = probs
    bank.seen[:] = True
    bank.resolve()  # exact tau and a fresh histogram
    # Batches drawn up front so the timings hold the update alone.
    indices = rng.integers(0, probs.size, (updates, batch))
    new = rng.beta(0.5, 0.5, (updates, batch)).astype(np.float32)
    times = []
    for idx, p in zip(indices, new, strict=True):
        start = time.perf_counter()
        bank.update(idx, p)
        times.append(time.perf_counter() - start)
    # The exact mean over the seen patches, with the tau the incremental solver left.
    x = np.clip(bank.probs[bank.seen].astype(np.float64), 1e-6, 1.0 - 1e-6)
    tau = bank.tau if groups is None else bank.group_tau[groups[bank.seen]]
    q = 0.5 * (1.0 + np.tanh(0.5 * (lam * (np.log(x) - np.log1p(-x)) + tau)))
    ms = 1000 * np.asarray(times)
    if groups is not None:  # the worst slide's constraint error
        sums = np.bincount(groups[bank.seen], q, slides)
        counts = np.bincount(groups[bank.seen], minlength=slides)
        error = float(np.max(np.abs(sums / np.maximum(counts, 1) - k)))
    else:
        error = abs(float(q.mean()) - k)
    return {
        "update_batch": batch,
        "update_calls": updates,
        "update_ms_median": float(np.median(ms)),
        "update_ms_p99": float(np.percentile(ms, 99)),
        "update_constraint_error": error,
        "update_target_ms": 5.0,
    }


class _BareStep:
    """Teacher fwd + student fwd/bwd + Adam on random tensors of the training shape."""

    def __init__(self, cfg: Any, device: torch.device) -> None:
        from pathviewer.ml.models import build_classifier

        self.device = device
        self.student = build_classifier(2, cfg.arch, None, cfg.input_size).to(device)
        self.teacher = build_classifier(2, cfg.arch, None, cfg.input_size).to(device)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr)
        self.x = torch.rand(cfg.batch_size, 3, cfg.input_size, cfg.input_size, device=device)
        self.y = torch.randint(0, 2, (cfg.batch_size,), device=device)
        self.amp = cfg.amp and device.type == "cuda"

    def __call__(self) -> float:
        from pathviewer.ml.device import autocast

        _sync(self.device)
        start = time.perf_counter()
        with torch.no_grad(), autocast(self.device, self.amp):
            self.teacher(self.x)
        with autocast(self.device, self.amp):
            loss = torch.nn.functional.cross_entropy(self.student(self.x).float(), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        _sync(self.device)
        return time.perf_counter() - start


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_train(cohort: Path, cfg: Any, steps: int) -> dict:
    """Real loop vs bare step, interleaved one for one so both see the same machine load."""
    from pathviewer.ml.device import pick_device
    from pathviewer.ml.ngsd import train

    device = pick_device(cfg.device)
    cfg.steps = steps + 3
    cfg.checkpoint_every = 10**6
    cfg.log_every = 10**6
    bare = _BareStep(cfg, device)
    real_times: list[float] = []
    bare_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        job = train(cohort, Path(tmp) / "run", cfg)
        previous_done = -1
        while True:
            start = time.perf_counter()
            try:
                event = next(job)
            except StopIteration:
                break
            _sync(device)
            elapsed = time.perf_counter() - start
            if event.stage != "training" or event.done == previous_done:
                continue
            previous_done = event.done
            if event.done >= 3:  # skip warm-up steps (first batches, allocator)
                real_times.append(elapsed)
                bare_times.append(bare())
    real_s = statistics.median(real_times)
    bare_s = statistics.median(bare_times)
    return {
        "device": str(device),
        "batch_size": cfg.batch_size,
        "input_size": cfg.input_size,
        "steps_timed": len(real_times),
        "end_to_end_step_s": real_s,
        "bare_step_s": bare_s,
        "end_to_end_over_bare": bare_s / real_s,
        "target": 0.85,
    }


def bench_inference(cohort: Path, cfg: Any, batch_size: int, split: str | None = None) -> dict:
    """score_patches over every kept patch of the cohort's slides vs bare forward."""
    from pathviewer.core.cohort import read_cohort, select
    from pathviewer.core.progress import run_job
    from pathviewer.ml.data import PatchStore, tile_cohort
    from pathviewer.ml.device import autocast, pick_device
    from pathviewer.ml.inference import score_patches
    from pathviewer.ml.models import build_classifier

    device = pick_device(cfg.device)
    entries = select(read_cohort(cohort), split)
    with tempfile.TemporaryDirectory() as tmp:
        tiled = run_job(
            tile_cohort(entries, cfg.patch_size, cfg.read_downsample, cfg.threshold, tmp)
        )
    store = PatchStore(tiled)
    model = build_classifier(2, cfg.arch, None, cfg.input_size).to(device).eval()
    use_amp = cfg.amp and device.type == "cuda"
    x = torch.rand(batch_size, 3, cfg.input_size, cfg.input_size, device=device)

    def bare_batch(n: int = batch_size) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, use_amp):
            torch.softmax(model(x[:n]).float(), dim=1)[:, 1].cpu()
        _sync(device)
        return time.perf_counter() - start

    bare_batch()
    run_job(score_patches(model, store, cfg.input_size, device, batch_size, 0, use_amp))  # warm
    # One real batch, then one bare batch of the same size, so both see the same load.
    real_s = bare_s = 0.0
    real_n = 0
    job = score_patches(model, store, cfg.input_size, device, batch_size, 0, use_amp)
    while True:
        start = time.perf_counter()
        try:
            event = next(job)
        except StopIteration:
            break
        _sync(device)
        real_s += time.perf_counter() - start
        batch = event.done - real_n
        real_n = event.done
        bare_s += bare_batch(batch)
    store.close()
    real = real_n / real_s
    bare = real_n / bare_s
    return {
        "device": str(device),
        "patches": len(store),
        "slides": len(entries),
        "batch_size": batch_size,
        "patches_per_s": real,
        "bare_forward_patches_per_s": bare,
        "end_to_end_over_bare": real / bare,
        "target": 0.9,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the NGSD benchmarks and print (and optionally write) JSON."""
    parser = argparse.ArgumentParser(prog="python -m pathviewer.bench ngsd")
    parser.add_argument("--cohort", help="cohort CSV (default: a generated synthetic one)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--bank-size", type=int, default=1_000_000)
    parser.add_argument("--infer-batch", type=int, default=64, help="inference batch size")
    parser.add_argument(
        "--only", choices=("bank", "train", "inference"), action="append", help="subset"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pathviewer.ml.config import demo_config

    only = set(args.only or ("bank", "train", "inference"))
    results: dict[str, Any] = {
        "benchmark": "ngsd",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if "bank" in only:
        results["bank"] = bench_bank(args.bank_size)
    if only & {"train", "inference"}:
        with tempfile.TemporaryDirectory() as tmp:
            cohort = Path(args.cohort) if args.cohort else None
            if cohort is None:
                from pathviewer.core.progress import run_job
                from pathviewer.core.synth import generate_cohort

                cohort = run_job(generate_cohort(Path(tmp) / "cohort", n_slides=6, seed=7))
            cfg = demo_config(device=args.device)
            if "train" in only:
                results["train"] = bench_train(cohort, cfg, args.steps)
            if "inference" in only:
                results["inference"] = bench_inference(
                    cohort, demo_config(device=args.device), args.infer_batch
                )
    emit_report(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
