"""Baselines evaluated next to NGSD.

* **naive**: an instance classifier trained with every patch inheriting its slide's label -- the
  same training loop as NGSD (:func:`pathviewer.ml.ngsd.train` with ``method="naive"``): no
  teacher, no bank.
* **abmil**: attention-based deep MIL (Ilse, Tomczak & Welling, ICML 2018) with gated attention
  on the same ResNet encoder; the bag classifier is trained on bags of patches sampled from one
  slide with the slide label.  The instance score of a patch is its attention weight, rescaled
  per slide to [0, 1] and multiplied by the bag probability (so patches of a slide called negative
  score low); the slide score is the bag probability over all its patches.  The network is
  :class:`pathviewer.ml.models.AttentionMIL`; :mod:`pathviewer.ml.model_file` loads and scores it.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from pathviewer.core.atomic import atomic_write
from pathviewer.core.errors import TrainingError
from pathviewer.core.progress import Progress
from pathviewer.ml import checkpoint as ckpt
from pathviewer.ml.data import TwoViewDataset
from pathviewer.ml.device import autocast, pick_device, seed_everything
from pathviewer.ml.models import AttentionMIL, build_classifier, network_input_size
from pathviewer.ml.ngsd import NGSDConfig, RunResult, prepare_training_data


def train_abmil(
    cohort_csv: str | Path,
    out_dir: str | Path,
    config: NGSDConfig | None = None,
    bag_size: int = 16,
) -> Generator[Progress, None, RunResult]:
    """Train the attention-MIL baseline; writes ``model.pt`` (method ``abmil``) and metrics.

    Each step draws ``batch_size // bag_size`` slides (balanced) and ``bag_size`` augmented
    patches of each, so a step sees as many patches as an NGSD step.
    """
    cfg = copy.deepcopy(config) if config is not None else NGSDConfig()
    cfg.method = "abmil"
    cfg.validate()
    if cfg.freeze_encoder:
        raise TrainingError("attention MIL trains its encoder; freeze_encoder is for ngsd/naive")
    cfg.input_size = network_input_size(cfg.arch, cfg.input_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    data = yield from prepare_training_data(cohort_csv, cfg, out)
    store = data.store
    model = AttentionMIL(build_classifier(2, cfg.arch, cfg.weights or None, cfg.input_size)).to(
        device
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.steps or cfg.epochs * max(1, math.ceil(len(store) / cfg.batch_size))
    n_bags = max(2, cfg.batch_size // bag_size)
    dataset = TwoViewDataset(store, cfg.input_size, cfg.seed, views=1)
    slides = [np.arange(store.offsets[i], store.offsets[i + 1]) for i in range(len(store.slides))]
    labels = np.array([t.entry.label for t in store.slides])
    pos_slides, neg_slides = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    metrics: dict[str, float] = {}
    step = 0
    model.train()
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as log:
        for step in range(1, total + 1):
            rng = np.random.default_rng([cfg.seed, step])
            chosen = np.concatenate(
                [rng.choice(pos_slides, n_bags // 2), rng.choice(neg_slides, n_bags - n_bags // 2)]
            )
            bags = []
            for b, s in enumerate(chosen):
                patches = rng.choice(slides[s], bag_size, replace=len(slides[s]) < bag_size)
                bags.append(
                    torch.stack(
                        [
                            dataset[(step, b * bag_size + j, int(p))][0]
                            for j, p in enumerate(patches)
                        ]
                    )
                )
            x = torch.stack(bags).to(device).float().div_(255)
            y = torch.from_numpy(labels[chosen].astype(np.float32)).to(device)
            with autocast(device, cfg.amp):
                logits = model(x)
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % cfg.log_every == 0 or step == total:
                metrics = {
                    "step": float(step),
                    "loss": float(loss.item()),
                    "seconds": time.perf_counter() - started,
                }
                log.write(json.dumps(metrics) + "\n")
                log.flush()
            yield Progress("training", step, total, "abmil", dict(metrics))
    store.close()
    saved = cfg.to_dict()
    saved["method"] = "abmil"
    payload: dict[str, Any] = {
        "method": "abmil",
        "config": saved,
        "arch": cfg.arch,
        "input_size": cfg.input_size,
        "patch_size": cfg.patch_size,
        "read_downsample": data.read_downsample,
        "num_classes": 2,
        "step": step,
        "student": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    ckpt.save_model(out / "model.pt", payload)
    with atomic_write(out / "config.json") as handle:
        json.dump(saved, handle, indent=2)
    return RunResult(out, out / "model.pt", step, metrics, time.perf_counter() - started, True)
