"""NGSD against its baselines on realistic cohorts (JSON): the learning claims of the README.

``python -m pathviewer.bench ngsd-realistic [--seeds 3] [--quick] [--json OUT.json]``

For every seed a new realistic cohort (:mod:`pathviewer.core.realistic`: real H&E texture, subtle
tumour, per-slide stain variation, 2-20 % tumour) is generated; NGSD, the naive baseline (every
patch inherits its slide label) and attention MIL train with the CPU preset the app recommends
(:func:`pathviewer.ml.ngsd.demo_config`, same steps and patches for all three) and score the test
split.  Reported per method: test instance AUC, bag AUC, bag accuracy (means over seeds and per
seed), training minutes, and how many runs the degeneration guard flagged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pathviewer.bench import emit_report

METHOD_NAMES = ("ngsd", "naive", "abmil")


def cohort_settings(n_slides: int = 40) -> dict[str, Any]:
    """Realistic cohort of the benchmark: ``n_slides`` of 6144 px, 40 % of them for testing."""
    return {"n_slides": n_slides, "size": 6144, "test_fraction": 0.4}


def run_method(
    method: str, cohort: Path, work: Path, overrides: dict[str, Any], tag: str = ""
) -> dict[str, Any]:
    """Train one method on the train split, score the test split, evaluate."""
    from pathviewer.core.progress import run_job
    from pathviewer.jobs import calibrate_model, train_slide_model
    from pathviewer.ml.config import demo_config
    from pathviewer.ml.inference import predict
    from pathviewer.ml.metrics import evaluate_predictions
    from pathviewer.ml.model_file import ModelFile

    cfg = demo_config(**overrides)
    cfg.method = method
    run_dir = work / (f"{method}-{tag}" if tag else method)
    started = time.perf_counter()
    result = run_job(train_slide_model(cohort, run_dir, cfg, calibrate=False))
    minutes = (time.perf_counter() - started) / 60
    # The operating point (chosen on the train split: these cohorts have no val split) calls
    # the test slides, as in the app; its scoring is not training time.
    run_job(calibrate_model(result.model_path, cohort))
    run_job(predict(result.model_path, cohort, run_dir / "predictions", "test"))
    scores = evaluate_predictions(cohort, run_dir / "predictions", "test")
    network: dict[str, Any] = {}
    if ModelFile.load(result.model_path).has_stain_prior:
        # The heatmap blends the stain prior in; the network's own figures, side by side.
        run_job(
            predict(
                result.model_path,
                cohort,
                run_dir / "predictions-network",
                "test",
                network_only=True,
            )
        )
        alone = evaluate_predictions(cohort, run_dir / "predictions-network", "test")
        network = {
            "network_instance_auc": alone["instance_auc"],
            "network_bag_auc": alone["bag_auc"],
        }
    return {
        **network,
        "instance_auc": scores["instance_auc"],
        "within_slide_auc": scores["within_slide_auc"],
        "bag_auc": scores["bag_auc"],
        "bag_accuracy": scores["bag_accuracy"],
        "training_minutes": minutes,
        "steps": result.steps,
        "degenerate": bool(getattr(result, "degenerate", False)),
        "n_test_patches": scores["n_patches"],
        "n_test_tumour_patches": scores["n_positive_patches"],
    }


def _tumour_share(cohort_csv: Path) -> float:
    """Share of tumour patches among the patches of the train split's positive slides."""
    from pathviewer.core.cohort import read_cohort, select
    from pathviewer.core.progress import run_job
    from pathviewer.ml.config import demo_config
    from pathviewer.ml.data import cache_dir_for, tile_cohort
    from pathviewer.ml.metrics import instance_labels

    cfg = demo_config()
    entries = [e for e in select(read_cohort(cohort_csv), "train") if e.label == 1]
    tiled = run_job(
        tile_cohort(entries, cfg.patch_size, cfg.read_downsample, cfg.threshold, cache_dir_for("."))
    )
    labels = np.concatenate([instance_labels(t.entry, t.index.boxes()) for t in tiled])
    return float(labels.mean())


def parse_variants(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``["name:key=json,key=json", ...]`` -> ``{name: {key: value}}``, settings checked.

    Raises
    ------
    SystemExit
        A spec without a name, a value that is not JSON, or a key NGSDConfig does not have.
    """
    import dataclasses

    from pathviewer.ml.config import NGSDConfig

    known = {f.name for f in dataclasses.fields(NGSDConfig)}
    variants: dict[str, dict[str, Any]] = {}
    for spec in specs:
        name, _, settings = spec.partition(":")
        if not name:
            raise SystemExit(f"--variant {spec!r}: give NAME:KEY=JSON")
        variants[name] = {}
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            if key not in known:
                raise SystemExit(f"--variant {spec!r}: {key!r} is not an NGSD setting")
            try:
                variants[name][key] = json.loads(value)
            except ValueError:
                raise SystemExit(f"--variant {spec!r}: {value!r} is not JSON") from None
    return variants


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over seeds and the per-seed figures of one method's (or variant's) runs."""
    return {
        "instance_auc": _mean([r["instance_auc"] for r in results]),
        "within_slide_auc": _mean([r["within_slide_auc"] for r in results]),
        "bag_auc": _mean([r["bag_auc"] for r in results]),
        "bag_accuracy": _mean([r["bag_accuracy"] for r in results]),
        "training_minutes": _mean([r["training_minutes"] for r in results]),
        "degenerate_runs": sum(r["degenerate"] for r in results),
        "instance_auc_per_seed": [r["instance_auc"] for r in results],
        "bag_auc_per_seed": [r["bag_auc"] for r in results],
        "runs": results,
    }


def _mean(values: list[Any]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def main(argv: list[str] | None = None) -> int:
    """Generate cohorts, train and evaluate every method per seed, print (and write) JSON."""
    parser = argparse.ArgumentParser(prog="python -m pathviewer.bench ngsd-realistic")
    parser.add_argument("--seeds", type=int, default=3, help="cohorts and training seeds (3)")
    parser.add_argument("--quick", action="store_true", help="one seed")
    parser.add_argument("--methods", default=",".join(METHOD_NAMES), help="comma-separated")
    parser.add_argument("--steps", type=int, help="training steps (default: the CPU preset's)")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=JSON")
    parser.add_argument(
        "--stylised",
        action="store_true",
        help="the old stylised 8-slide cohort instead (a check that plumbing-level results hold)",
    )
    parser.add_argument(
        "--n-slides",
        type=int,
        default=40,
        help="slides per realistic cohort (40; half positive, 40 %% of them test)",
    )
    parser.add_argument("--keep", help="keep cohorts and runs in this folder")
    parser.add_argument("--tag", default="", help="suffix of the run folders (with --keep)")
    parser.add_argument(
        "--k-sweep",
        default="",
        help="comma-separated K values: NGSD once per K (e.g. 0.05,0.1,0.2,0.3), reported under"
        " k_sweep",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=JSON[,KEY=JSON...]",
        help="NGSD once more per seed with these settings, reported under variants.NAME (an"
        ' ablation in the same run), e.g. cohort:bank_marginal="cohort"',
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    variants = parse_variants(args.variant)
    sweep = [float(k) for k in args.k_sweep.split(",") if k]
    from pathviewer.core.progress import run_job
    from pathviewer.core.realistic import generate_realistic_cohort

    seeds = 1 if args.quick else args.seeds
    methods = [m for m in args.methods.split(",") if m]
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    if args.steps:
        overrides["steps"] = args.steps
    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    k_runs: dict[str, list[dict[str, Any]]] = {}
    variant_runs: dict[str, list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        for seed in range(seeds):
            cohort = root / f"seed{seed}" / ("stylised" if args.stylised else "cohort")
            if not (cohort / "cohort.csv").is_file() and args.stylised:
                from pathviewer.core.synth import generate_cohort

                # The cohort the old CPU demo was validated on (0.985 / 1.0), new seed each time.
                run_job(generate_cohort(cohort, n_slides=8, seed=3 + seed, size=3072))
            elif not (cohort / "cohort.csv").is_file():
                run_job(
                    generate_realistic_cohort(
                        cohort, seed=100 + seed, **cohort_settings(args.n_slides)
                    )
                )
            for method in methods:
                result = run_method(
                    method,
                    cohort / "cohort.csv",
                    root / f"seed{seed}",
                    {**overrides, "seed": seed},
                    args.tag,
                )
                per_seed[method].append(result)
                print(json.dumps({"seed": seed, "method": method, **result}), file=sys.stderr)
            for name, settings in variants.items():
                result = run_method(
                    "ngsd",
                    cohort / "cohort.csv",
                    root / f"seed{seed}",
                    {**overrides, "seed": seed, **settings},
                    f"{args.tag}{name}",
                )
                variant_runs.setdefault(name, []).append(result)
                print(json.dumps({"seed": seed, "variant": name, **result}), file=sys.stderr)
            for k in sweep:
                result = run_method(
                    "ngsd",
                    cohort / "cohort.csv",
                    root / f"seed{seed}",
                    {**overrides, "seed": seed, "k": k},
                    f"{args.tag}k{k:g}",
                )
                result["true_positive_share"] = _tumour_share(cohort / "cohort.csv")
                k_runs.setdefault(f"{k:g}", []).append(result)
                print(json.dumps({"seed": seed, "k": k, **result}), file=sys.stderr)
    report: dict[str, Any] = {
        "benchmark": "ngsd-realistic",
        "seeds": seeds,
        "cohort": "stylised, 8 slides of 3072 px"
        if args.stylised
        else cohort_settings(args.n_slides),
        "overrides": overrides,
        "methods": {},
        "degenerate_runs": sum(r["degenerate"] for rs in per_seed.values() for r in rs),
        "total_minutes": (time.perf_counter() - started) / 60,
        "targets": {"ngsd_instance_auc": 0.90, "ngsd_bag_auc": 0.95},
    }
    for method, results in per_seed.items():
        report["methods"][method] = _summary(results)
    if variant_runs:
        report["variants"] = {
            name: {"settings": variants[name], **_summary(rs)} for name, rs in variant_runs.items()
        }
    if k_runs:
        report["k_sweep"] = {
            k: {
                **_summary(rs),
                "true_positive_share": _mean([r["true_positive_share"] for r in rs]),
            }
            for k, rs in k_runs.items()
        }
    emit_report(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
