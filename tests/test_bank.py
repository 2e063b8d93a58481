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


def test_bank_update_and_state_roundtrip() -> None:
    bank = PredictionBank(100, k=0.25, lam=5.0)
    assert abs(bank.pseudo_labels().mean() - 0.25) < 1e-6  # unseen patches share K equally
    bank.update(np.arange(25), np.full(25, 0.95))
    bank.update(np.arange(25, 100), np.full(75, 0.05))
    q = bank.pseudo_labels()
    assert abs(q.sum() - 25) < 1e-3
    assert q[:25].min() > 0.9 and q[25:].max() < 0.1
    assert bank.positive_fraction() == pytest.approx(0.25)
    other = PredictionBank(100, k=0.25, lam=5.0)
    other.load_state_dict(bank.state_dict())
    np.testing.assert_allclose(other.pseudo_labels(), q)
    with pytest.raises(ValueError):
        PredictionBank(10, 0.25).load_state_dict(bank.state_dict())
