"""Prediction Bank and the closed-form Sinkhorn-Knopp pseudo-label solver."""

from __future__ import annotations

import numpy as np
import pytest

from pathviewer.ml.bank import PredictionBank, sinkhorn_plain, solve_pseudo_labels, solve_tau


@pytest.mark.parametrize("lam", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("k", [0.05, 0.3, 0.7])
def test_closed_form_matches_plain_sinkhorn(lam: float, k: float) -> None:
    rng = np.random.default_rng(int(lam * 100 + k * 10))
    probs = rng.beta(0.5, 0.5, 3000)
    closed = solve_pseudo_labels(probs, k, lam)
    plain = sinkhorn_plain(probs, k, lam)
    assert np.abs(closed - plain).max() < 1e-6
    # The class marginal: positives sum to K * N.
    assert abs(closed.sum() - k * probs.size) / probs.size < 1e-9
    assert abs(plain.sum() - k * probs.size) / probs.size < 1e-6


def test_pseudo_labels_keep_the_teacher_ranking() -> None:
    probs = np.linspace(0.01, 0.99, 101)
    q = solve_pseudo_labels(probs, 0.2, 5.0)
    assert np.all(np.diff(q) > 0)
    assert q[-1] > 0.9 and q[0] < 0.01


def test_tau_rejects_bad_k() -> None:
    with pytest.raises(ValueError):
        solve_tau(np.array([0.5]), 1.0)


def _exact_seen_error(bank: PredictionBank) -> float:
    """``|mean_seen q - K|`` with the bank's (possibly incremental) tau, by the exact formula."""
    p = np.clip(bank.probs[bank.seen].astype(np.float64), 1e-6, 1.0 - 1e-6)
    q = 1.0 / (1.0 + np.exp(-(bank.lam * (np.log(p) - np.log1p(-p)) + bank.tau)))
    return abs(float(q.mean()) - bank.k)


def test_bank_update_and_state_roundtrip() -> None:
    bank = PredictionBank(100, k=0.25, lam=5.0)
    # Nothing scored yet: tau = 0 and no positives.  (This used to assert that the unscored
    # patches share K; spreading the positive mass over unscored patches is the degeneration
    # fixed in PredictionBank, see test_unscored_patches_do_not_absorb_the_positive_mass.)
    assert bank.tau == 0.0 and bank.seen_count == 0 and bank.positive_fraction() == 0.0
    np.testing.assert_allclose(bank.pseudo_labels(), 0.5)
    bank.update(np.arange(25), np.full(25, 0.95))
    bank.update(np.arange(25, 100), np.full(75, 0.05))
    q = bank.pseudo_labels()
    assert abs(q.sum() - 25) < 1e-3
    assert q[:25].min() > 0.9 and q[25:].max() < 0.1
    assert bank.positive_fraction() == pytest.approx(0.25)
    other = PredictionBank(100, k=0.25, lam=5.0)
    other.load_state_dict(bank.state_dict())
    np.testing.assert_allclose(other.pseudo_labels(), q, atol=1e-6)
    with pytest.raises(ValueError):
        PredictionBank(10, 0.25).load_state_dict(bank.state_dict())


def test_unscored_patches_do_not_absorb_the_positive_mass() -> None:
    # Early training: 200 of 10,000 patches scored, all teacher probs in 0.1-0.6 and the top 5%
    # clearly highest.  Solved over the whole bank (the old rule), the 9,800 unscored patches at
    # 0.5 take the K * N positive mass and every scored patch is pushed towards 0.
    rng = np.random.default_rng(7)
    n, k, lam = 10_000, 0.05, 5.0
    slots = rng.choice(n, 200, replace=False)
    probs = np.concatenate([rng.uniform(0.1, 0.35, 190), rng.uniform(0.55, 0.6, 10)])
    bank = PredictionBank(n, k, lam)
    for part in np.array_split(np.arange(200), 4):
        bank.update(slots[part], probs[part])
    q = bank.pseudo_labels(slots)
    assert abs(float(q.sum()) - k * 200) < 1e-3  # the marginal holds over the scored patches
    assert q[190:].min() > 0.5 and q[:190].max() < 0.1
    assert bank.seen_count == 200 and bank.positive_fraction() == pytest.approx(0.05)
    # What the old rule gives on the same bank: the top patches well below 0.5, the rest ~0.
    old = solve_pseudo_labels(bank.probs, k, lam)[slots]
    assert old[190:].max() < 0.3 and old[:190].max() < 0.01


@pytest.mark.parametrize("lam", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("k", [0.05, 0.3, 0.7])
def test_incremental_updates_keep_the_marginal_over_seen(lam: float, k: float) -> None:
    rng = np.random.default_rng(int(lam * 10 + k * 100))
    bank = PredictionBank(5000, k, lam)
    for step in range(300):
        idx = rng.integers(0, len(bank), 64)  # re-scores and duplicates as training goes on
        # A mixture: mostly confident, some near the boundary, some at the clip limits.
        probs = np.where(rng.random(64) < 0.1, rng.integers(0, 2, 64), rng.beta(0.5, 0.5, 64))
        bank.update(idx, probs)
        if step % 25 == 0:
            assert _exact_seen_error(bank) < 1e-4
    assert _exact_seen_error(bank) < 1e-4
    incremental = bank.pseudo_labels()
    tau = bank.tau
    bank.resolve()
    assert abs(bank.tau - tau) < 1e-3
    assert np.abs(bank.pseudo_labels() - incremental).max() < 1e-3
    assert _exact_seen_error(bank) < 1e-9


def test_duplicate_indices_last_write_wins() -> None:
    bank = PredictionBank(50, k=0.3, lam=5.0)
    bank.update(np.array([3, 3, 5, 3, -1]), np.array([0.1, 0.2, 0.3, 0.9, 0.4]))
    assert bank.probs[3] == np.float32(0.9) and bank.probs[49] == np.float32(0.4)
    assert bank.seen_count == 3 and np.flatnonzero(bank.seen).tolist() == [3, 5, 49]
    # Re-scoring a duplicated slot must take out the value that won, not one that lost: the
    # incremental tau then stays the exact one for the three scored patches.
    bank.update(np.array([3, 7, 7]), np.array([0.05, 0.8, 0.6]))
    assert bank.probs[3] == np.float32(0.05) and bank.probs[7] == np.float32(0.6)
    assert bank.seen_count == 4
    exact = solve_tau(bank.probs[[3, 5, 7, 49]], 0.3, 5.0)
    assert abs(bank.tau - exact) < 1e-8
    assert _exact_seen_error(bank) < 1e-9


def test_update_rejects_bad_input() -> None:
    bank = PredictionBank(10, k=0.3)
    with pytest.raises(ValueError):
        bank.update(np.arange(3), np.full(2, 0.5))
    with pytest.raises(ValueError):
        bank.update(np.arange(2), np.array([0.5, np.nan]))
    with pytest.raises(IndexError):
        bank.update(np.array([10]), np.array([0.5]))
    bank.update(np.zeros(0, np.int64), np.zeros(0))  # an empty batch changes nothing
    assert bank.seen_count == 0 and bank.tau == 0.0


def test_state_roundtrip_and_old_checkpoint() -> None:
    rng = np.random.default_rng(3)
    bank = PredictionBank(1000, k=0.2, lam=5.0)
    for _ in range(10):
        bank.update(rng.integers(0, 1000, 64), rng.random(64))
    state = bank.state_dict()
    assert set(state) == {"probs", "seen", "updated_at", "clock", "k", "lam"}
    other = PredictionBank(1000, k=0.5, lam=1.0)
    other.load_state_dict(state)  # k and lam come back with the state
    assert (other.k, other.lam, other.seen_count) == (0.2, 5.0, bank.seen_count)
    np.testing.assert_array_equal(other.probs, bank.probs)
    np.testing.assert_allclose(other.pseudo_labels(), bank.pseudo_labels(), atol=1e-6)
    # Old checkpoints hold only probs and seen: this bank's k and lam stay, tau is re-solved
    # exactly over the seen patches, and incremental updates carry on from a fresh histogram.
    old = PredictionBank(1000, k=0.2, lam=5.0)
    old.load_state_dict({"probs": state["probs"], "seen": state["seen"]})
    assert (old.k, old.lam) == (0.2, 5.0)
    assert abs(old.tau - solve_tau(bank.probs[bank.seen], 0.2, 5.0)) < 1e-12
    for _ in range(10):
        idx, probs = rng.integers(0, 1000, 64), rng.random(64)
        old.update(idx, probs)
        bank.update(idx, probs)
    np.testing.assert_array_equal(old.seen, bank.seen)
    assert abs(old.tau - bank.tau) < 1e-8 and _exact_seen_error(old) < 1e-9


def test_stale_scores_expire_from_the_marginal() -> None:
    """Scores older than the horizon leave the marginal, as unscored patches do.

    Early, over-confident scores (0.9 for every patch) would otherwise keep the positive mass
    while the current teacher scores the same kind of patches at 0.2-0.4.
    """
    bank = PredictionBank(200, k=0.1, lam=5.0, horizon=3)
    bank.update(np.arange(100), np.full(100, 0.9))  # a stale, confident era
    for step in range(4):
        start = 100 + 25 * step
        bank.update(np.arange(start, start + 25), np.linspace(0.2, 0.4, 25))
    assert not bank.seen[:100].any() and bank.seen_count == 75
    q = bank.pseudo_labels(np.flatnonzero(bank.seen))
    # The current top 10 % own the positive mass again.
    assert abs(q.sum() - 0.1 * 75) < 1e-3
    forever = PredictionBank(200, k=0.1, lam=5.0)  # no horizon: the stale era keeps the mass
    forever.update(np.arange(100), np.full(100, 0.9))
    for step in range(4):
        start = 100 + 25 * step
        forever.update(np.arange(start, start + 25), np.linspace(0.2, 0.4, 25))
    assert forever.pseudo_labels(np.arange(125, 200)).sum() < 0.1 * q.sum()
    restored = PredictionBank(200, k=0.1, lam=5.0, horizon=3)
    restored.load_state_dict(bank.state_dict())
    for b in (restored, bank):
        b.update(np.arange(190, 200), np.full(10, 0.3))
        b.update(np.arange(0, 5), np.full(5, 0.3))
    np.testing.assert_array_equal(restored.seen, bank.seen)
    assert abs(restored.tau - bank.tau) < 1e-8


def test_slide_marginals_hold_within_every_slide() -> None:
    """With groups, each slide's scored patches sum to K times their number, whatever the others."""
    rng = np.random.default_rng(3)
    groups = np.repeat([0, 1, 2], [300, 200, 500])
    bank = PredictionBank(1000, 0.1, 2.0, groups=groups, horizon=6)
    for _ in range(20):
        idx = rng.choice(1000, 64, replace=False)
        # Slide 2 is scored far higher everywhere, as a stain shortcut would make it.
        probs = np.clip(rng.uniform(0, 0.3, 64) + 0.6 * (groups[idx] == 2), 0, 1)
        bank.update(idx, probs)
        for g in range(3):
            scored = np.flatnonzero(bank.seen & (groups == g))
            if scored.size:
                assert bank.pseudo_labels(scored).sum() == pytest.approx(
                    0.1 * scored.size, rel=1e-4
                )
    # The cohort marginal would give slide 2 nearly all the positive mass.
    flat = PredictionBank(1000, 0.1, 2.0)
    flat.update(np.arange(1000), np.clip(rng.uniform(0, 0.3, 1000) + 0.6 * (groups == 2), 0, 1))
    assert flat.pseudo_labels(np.flatnonzero(groups == 2)).mean() > 0.15
    with pytest.raises(ValueError, match="groups"):
        PredictionBank(10, 0.1, groups=np.zeros(9, np.int64))


def test_smoothing_averages_rescored_logits() -> None:
    bank = PredictionBank(4, 0.25, 1.0, smoothing=0.5)
    bank.update(np.array([0, 1]), np.array([0.9, 0.1]))
    bank.update(np.array([0, 2]), np.array([0.1, 0.7]))  # slot 0 re-scored, slot 2 new
    # Slot 0: the mean of logit(0.9) and logit(0.1) is 0, so 0.5; slot 2 takes its score as is.
    np.testing.assert_allclose(bank.probs[:3], [0.5, 0.1, 0.7], atol=1e-6)
    plain = PredictionBank(4, 0.25, 1.0)
    plain.update(np.array([0]), np.array([0.9]))
    plain.update(np.array([0]), np.array([0.1]))
    assert plain.probs[0] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="smoothing"):
        PredictionBank(4, 0.25, smoothing=1.0)
