"""Degeneration guard: judged signals, and a training run built to degenerate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pathviewer.cli import main
from pathviewer.ml.checkpoint import load_model_file
from pathviewer.ml.guard import MIN_STEPS, DegenerationGuard
from tests.test_ngsd import make_png_cohort


def _bank(k: float, sharp: bool) -> np.ndarray:
    """Pseudo-labels summing to K per patch: on the top K share (sharp) or evenly spread."""
    q = np.full(1000, k)
    if sharp:
        q[:] = 0.01
        q[: int(k * 1000)] = (k - 0.01 * (1 - k)) / k
    return q


def _feed(guard: DegenerationGuard, steps: int, pos: callable, neg: callable, sharp: bool) -> None:
    rng = np.random.default_rng(0)
    for step in range(1, steps + 1):
        guard.observe_batch(step, pos(rng), neg(rng))
        guard.observe_bank(_bank(guard.k, sharp))


def test_healthy_run_is_not_degenerate() -> None:
    guard = DegenerationGuard(k=0.1, total_steps=200)
    # 10 % of positive-slide patches score high; negatives low.
    _feed(
        guard,
        200,
        lambda r: np.where(r.uniform(size=16) < 0.1, r.uniform(0.7, 1, 16), r.uniform(0, 0.3, 16)),
        lambda r: r.uniform(0, 0.3, 16),
        True,
    )
    report = guard.final()
    assert not report.degenerate, report.reasons


def test_bank_collapse_is_degenerate() -> None:
    guard = DegenerationGuard(k=0.3, total_steps=200)
    _feed(guard, 200, lambda r: r.uniform(0, 1, 16), lambda r: r.uniform(0, 0.2, 16), False)
    report = guard.final()
    assert report.degenerate
    assert "collapsed" in report.summary()
    soft = np.where(_bank(0.3, True) > 0.5, 0.45, 0.3 * 0.55 / 0.7)  # none above 0.5
    assert (soft <= 0.5).all()
    healthy = DegenerationGuard(k=0.3, total_steps=200)
    healthy.observe_bank(soft * (0.3 * 1000 / soft.sum()))
    assert healthy.bank_concentration > 0.3 + 0.07  # soft but not spread evenly: no alarm


def test_constant_teacher_is_degenerate() -> None:
    guard = DegenerationGuard(k=0.3, total_steps=200)
    _feed(guard, 200, lambda r: np.full(16, 0.01), lambda r: np.full(16, 0.01), True)
    assert "alike" in guard.final().summary()


def test_slides_scoring_alike_is_degenerate() -> None:
    guard = DegenerationGuard(k=0.2, total_steps=200)
    same = lambda r: r.uniform(0, 1, 16)  # noqa: E731 - positives look like negatives
    _feed(guard, 200, same, same, True)
    report = guard.final()
    assert report.degenerate and "slides score alike" in report.summary()


def test_warm_up_and_short_runs_are_not_judged() -> None:
    guard = DegenerationGuard(k=0.3, total_steps=1000)
    _feed(guard, 250, lambda r: np.full(16, 0.01), lambda r: np.full(16, 0.01), False)
    assert not guard.check().degenerate  # still within 30 % of the run
    short = DegenerationGuard(k=0.3, total_steps=MIN_STEPS - 1)
    _feed(short, MIN_STEPS - 1, lambda r: np.full(16, 0.01), lambda r: np.full(16, 0.01), False)
    assert not short.final().degenerate


def test_validation_auc_rules() -> None:
    guard = DegenerationGuard(k=0.1, total_steps=100)
    _feed(
        guard,
        100,
        lambda r: np.where(r.uniform(size=16) < 0.1, 0.9, 0.1),
        lambda r: np.full(16, 0.1),
        True,
    )
    for auc in (0.6, 0.8, 0.6):
        guard.observe_validation(auc)
    report = guard.final()
    assert not report.degenerate and "fell from 0.800 to 0.600" in report.warnings[0]
    chance = DegenerationGuard(k=0.1, total_steps=100)
    _feed(chance, 100, lambda r: r.uniform(0, 1, 16), lambda r: r.uniform(0, 0.2, 16), True)
    chance.observe_validation(0.5)
    assert chance.final().degenerate


def test_a_run_that_cannot_learn_is_flagged_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Positive and negative slides are the same pixels: nothing tells them apart.

    Without the guard this run exits 0 and saves its model as if it were usable.
    """
    folder = tmp_path / "c"
    cohort = make_png_cohort(folder, [("p1", 1, "train"), ("n1", 0, "train")])
    # The "negative" slide becomes a byte copy of the positive one.
    shutil.copy(folder / "p1.png", folder / "n1.png")
    out = tmp_path / "run"
    code = main(
        [
            "train", "ngsd", "--cohort", str(cohort), "--out", str(out), "--demo",
            "--steps", "60", "--batch-size", "8", "--patch-size", "128", "--read-level", "4",
            "--input-size", "32", "--workers", "0", "--device", "cpu", "--quiet",
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 3
    assert "training degenerated" in err and "model.pt" in err
    model = load_model_file(out / "model.pt")
    assert model["degenerate"] is True and model["guard"]
    verdict = json.loads((out / "guard.json").read_text())
    assert verdict["degenerate"] and verdict["reasons"]
