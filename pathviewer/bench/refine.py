"""Benchmark of the label-refinement engine on injected label noise.

``python -m pathviewer.bench.refine --json OUT.json``

Two data sets, each with symmetric noise at 20 % and 40 % and one asymmetric case at 30 %:

* **digits**: scikit-learn's bundled handwritten digits (real data, 10 classes, 8x8), small CNN;
  asymmetric flips 7->1, 2->7, 5->6, 3->8.
* **synthetic patches**: tissue patches of a synthetic cohort labelled from its ground-truth
  GeoJSON by ``labels from-annotations`` (Normal / Stroma / Tumor), read at 32 px; training on the
  cohort's ``train`` slides, clean test on its ``test`` slides; asymmetric Tumor -> Normal.

For every case: clean-test accuracy of plain CE, GHM-C weights alone, and the full method (all with
the same rounds and optimiser), each for two models of the same run: the round with the best
accuracy on held-out *noisy* labels (``select_best``, the engine's default) and the last round (no
selection), and precision /
recall / F1 of detecting the flipped training labels, for our flags and for cleanlab's
``find_label_issues``, both given the same out-of-sample (k-fold cross-fitted) probabilities.
Noise seeds and splits are fixed before looking at any result; nothing is tuned on the test sets.
``--seeds N`` repeats every case with N noise draws (and training seeds) and adds each case's mean
and standard deviation of the headline metrics.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathviewer.bench import emit_report
from pathviewer.core.progress import run_job
from pathviewer.ml.patch_data import ArrayDataset
from pathviewer.ml.refine import (
    RefineConfig,
    flags_from_probs,
    iter_cross_validated_probs,
    train_refine,
)
from pathviewer.ml.small_cnn import SmallCNN

METHODS = {
    "plain_ce": {"use_ghm": False, "use_gaussian": False, "refine": False, "class_balance": "none"},
    "ghm_only": {"use_ghm": True, "use_gaussian": False, "refine": False, "class_balance": "none"},
    "full": {},
}


def inject_symmetric(labels: np.ndarray, rate: float, k: int, seed: int) -> np.ndarray:
    """Flip a ``rate`` share of labels to a uniformly chosen *other* class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    flip = rng.random(len(labels)) < rate
    noisy[flip] = (labels[flip] + rng.integers(1, k, flip.sum())) % k
    return noisy


def inject_pairs(labels: np.ndarray, pairs: dict[int, int], rate: float, seed: int) -> np.ndarray:
    """Flip a ``rate`` share of each source class of ``pairs`` to its target class."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for src, dst in pairs.items():
        members = np.flatnonzero(labels == src)
        flip = members[rng.random(len(members)) < rate]
        noisy[flip] = dst
    return noisy


def prf(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of a boolean detection against the true flips."""
    tp = float((predicted & truth).sum())
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float(truth.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "flagged": int(predicted.sum()),
    }


def _scores(model: torch.nn.Module, x: torch.Tensor, y: np.ndarray) -> tuple[float, float]:
    """Accuracy and balanced accuracy (mean per-class recall) of ``model`` on ``(x, y)``."""
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    acc = float((pred == y).mean())
    bal = float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))
    return round(acc, 4), round(bal, 4)


def run_case(
    x_train: np.ndarray,
    noisy: np.ndarray,
    clean_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    k: int,
    base: RefineConfig,
    in_channels: int,
) -> dict[str, Any]:
    """All methods and the flag comparison for one noisy training set."""
    dataset = ArrayDataset(x_train)
    test = torch.from_numpy(x_test)

    def factory() -> SmallCNN:
        return SmallCNN(k, in_channels, 32)

    flipped = noisy != clean_train
    out: dict[str, Any] = {"noise_rate_actual": round(float(flipped.mean()), 4)}
    for name, overrides in METHODS.items():
        config = RefineConfig.from_dict({**base.to_dict(), **overrides})
        start = time.perf_counter()
        result = train_refine(dataset, noisy, k, factory, config, compute_flags=name == "full")
        seconds = round(time.perf_counter() - start, 1)
        selected = _scores(result.model, test, y_test)
        last_model = factory()
        last_model.load_state_dict(result.last_state or result.model.state_dict())
        last = _scores(last_model.eval(), test, y_test)
        out[name] = {
            # the model of the round with the best noisy-validation accuracy (select_best)
            "test_accuracy": selected[0],
            "test_balanced_accuracy": selected[1],
            "selected_round": result.selected_round,
            # the model after the last round, no selection
            "last_round_test_accuracy": last[0],
            "last_round_test_balanced_accuracy": last[1],
            "rounds": result.rounds,
            "best_noisy_val_accuracy": round(max(h["val_accuracy"] for h in result.history), 4),
            "seconds": seconds,
        }
        if name == "full":
            mask = np.zeros(len(noisy), bool)
            mask[[f.index for f in result.flags]] = True
            out["flags_in_training"] = prf(mask, flipped)
            out["refined_label_accuracy"] = round(
                float((result.refined.argmax(1) == clean_train).mean()), 4
            )
    # Out-of-sample probabilities (k-fold, full method) shared by our flags and cleanlab.
    config = RefineConfig.from_dict({**base.to_dict(), "oos_folds": 4})
    oos = run_job(iter_cross_validated_probs(dataset, noisy, k, factory, config))
    ours = np.zeros(len(noisy), bool)
    ours[[f.index for f in flags_from_probs(noisy, oos, config)[2]]] = True
    out["flags_oos"] = prf(ours, flipped)
    try:
        from cleanlab.filter import find_label_issues

        issues = find_label_issues(noisy, oos)
        out["cleanlab_oos"] = prf(np.asarray(issues, bool), flipped)
    except ImportError:
        out["cleanlab_oos"] = "cleanlab not installed"
    return out


def digits_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as ``(N, 1, 8, 8)`` floats, stratified 2/3 train, 1/3 test."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, digits.target, test_size=1 / 3, random_state=seed, stratify=digits.target
    )
    return x_tr, y_tr, x_te, y_te


def synthetic_data(
    work: Path, seed: int, n_slides: int, size: int, patch: int, px: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Patches of a synthetic cohort with ground-truth labels, split by the cohort's split."""
    from pathviewer.cli import main
    from pathviewer.core.cohort import read_cohort
    from pathviewer.core.synth import generate_cohort
    from pathviewer.ml.patch_data import read_labels_csv, read_patch_image

    cohort = run_job(generate_cohort(work / "cohort", n_slides=n_slides, seed=seed, size=size))
    labels_csv = work / "labels.csv"
    code = main(
        [
            "labels",
            "from-annotations",
            "--cohort",
            str(cohort),
            "--out",
            str(labels_csv),
            "--patch-size",
            str(patch),
            "-q",
        ]
    )
    if code != 0:
        raise RuntimeError("labels from-annotations failed")
    rows, classes = read_labels_csv(labels_csv)
    split = {e.path: e.split for e in read_cohort(cohort)}
    from pathviewer.core.slide_pool import SlidePool

    slides = SlidePool()
    images = [read_patch_image(slides.get(r.path), r.x, r.y, r.width, r.height, px) for r in rows]
    slides.close()
    x = (np.stack(images).astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy()
    y = np.array([classes.index(r.label) for r in rows])
    is_test = np.array([split[r.path] == "test" for r in rows])
    return x[~is_test], y[~is_test], x[is_test], y[is_test], classes


#: Metrics averaged over seeds in each case's ``mean``: (path in a run's dict, name).
_MEAN_KEYS = [
    *[((m, "test_accuracy"), f"{m}_test_accuracy") for m in METHODS],
    *[((m, "last_round_test_accuracy"), f"{m}_last_round_test_accuracy") for m in METHODS],
    *[((m, "test_balanced_accuracy"), f"{m}_test_balanced_accuracy") for m in METHODS],
    (("flags_oos", "f1"), "flags_oos_f1"),
    (("cleanlab_oos", "f1"), "cleanlab_oos_f1"),
    (("flags_in_training", "f1"), "flags_in_training_f1"),
    (("refined_label_accuracy",), "refined_label_accuracy"),
]


def _summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of the headline metrics of one case."""
    summary: dict[str, Any] = {}
    for path, name in _MEAN_KEYS:
        values = []
        for r in runs:
            value: Any = r
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, (int, float)):
                values.append(float(value))
        if values:
            summary[name] = {
                "mean": round(float(np.mean(values)), 4),
                "std": round(float(np.std(values)), 4),
            }
    return summary


def _run_cases(
    label: str,
    cases: dict[str, Callable[[int], np.ndarray]],
    seeds: int,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    k: int,
    base: RefineConfig,
    channels: int,
) -> dict[str, Any]:
    """Every case over ``seeds`` seeds (noise draw and training seed change together).

    ``data`` is ``(x_train, y_train, x_test, y_test)`` with clean labels.
    """
    x_tr, y_tr, x_te, y_te = data
    out: dict[str, Any] = {}
    for name, inject in cases.items():
        runs = []
        for s in range(seeds):
            print(f"{label} {name} seed {s}", file=sys.stderr)
            config = RefineConfig.from_dict({**base.to_dict(), "seed": s})
            runs.append(run_case(x_tr, inject(s), y_tr, x_te, y_te, k, config, channels))
        out[name] = {"mean": _summarise(runs), "runs": runs}
    return out


def run(quick: bool = False, seeds: int = 1) -> dict[str, Any]:
    """Run every case over ``seeds`` seeds; returns the JSON-ready report."""
    torch.set_num_threads(2)
    report: dict[str, Any] = {"torch_threads": 2, "seeds": seeds, "datasets": {}}
    rounds = 12 if quick else 40
    # ---- digits
    x_tr, y_tr, x_te, y_te = digits_data(seed=42)
    base = RefineConfig(
        max_rounds=rounds, warmup=5, batch_size=64, device="cpu", augment=False, seed=0
    )
    pairs = {7: 1, 2: 7, 5: 6, 3: 8}
    cases: dict[str, Callable[[int], np.ndarray]] = {
        "symmetric_20": lambda s: inject_symmetric(y_tr, 0.2, 10, seed=101 + 1000 * s),
        "symmetric_40": lambda s: inject_symmetric(y_tr, 0.4, 10, seed=102 + 1000 * s),
        "asymmetric_30": lambda s: inject_pairs(y_tr, pairs, 0.3, seed=103 + 1000 * s),
    }
    digits: dict[str, Any] = {"train": len(y_tr), "test": len(y_te), "classes": 10}
    digits.update(_run_cases("digits", cases, seeds, (x_tr, y_tr, x_te, y_te), 10, base, 1))
    report["datasets"]["digits"] = digits
    # ---- synthetic patches
    with tempfile.TemporaryDirectory() as tmp:
        xs_tr, ys_tr, xs_te, ys_te, classes = synthetic_data(
            Path(tmp), seed=11, n_slides=8, size=3072, patch=128, px=32
        )
    k = len(classes)
    base = RefineConfig(
        max_rounds=rounds, warmup=5, batch_size=64, device="cpu", augment=True, seed=0
    )
    tumour = classes.index("Tumor") if "Tumor" in classes else k - 1
    normal = classes.index("Normal") if "Normal" in classes else 0
    cases = {
        "symmetric_20": lambda s: inject_symmetric(ys_tr, 0.2, k, seed=201 + 1000 * s),
        "symmetric_40": lambda s: inject_symmetric(ys_tr, 0.4, k, seed=202 + 1000 * s),
        "asymmetric_30": lambda s: inject_pairs(ys_tr, {tumour: normal}, 0.3, seed=203 + 1000 * s),
    }
    synth: dict[str, Any] = {
        "train": len(ys_tr),
        "test": len(ys_te),
        "classes": classes,
        "train_counts": np.bincount(ys_tr, minlength=k).tolist(),
        "test_counts": np.bincount(ys_te, minlength=k).tolist(),
        "patch": "128 px level-0 boxes read at 32 px",
    }
    synth.update(_run_cases("synthetic", cases, seeds, (xs_tr, ys_tr, xs_te, ys_te), k, base, 3))
    report["datasets"]["synthetic_patches"] = synth
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--json", metavar="OUT", help="write the report here")
    parser.add_argument("--quick", action="store_true", help="12 rounds instead of 40")
    parser.add_argument(
        "--seeds", type=int, default=1, help="repeat each case with this many noise/training seeds"
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    report = run(quick=args.quick, seeds=max(1, args.seeds))
    report["seconds"] = round(time.perf_counter() - start, 1)
    emit_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
