"""The ETA ignores the slow start and settles on the steady rate."""

from __future__ import annotations

import pytest

from pathviewer.session.eta import EtaEstimator


def test_a_slow_first_step_does_not_inflate_the_estimate() -> None:
    eta = EtaEstimator(min_steps=3, min_seconds=2.0)
    # Step 1 took 30 s (start-up); then 1 s per step, 100 steps in all.
    times = [0.0, 30.0] + [30.0 + i for i in range(1, 10)]
    estimates = [eta.update(t, step, 100) for step, t in enumerate(times)]
    assert estimates[:4] == [None, None, None, None]  # too early to say
    assert estimates[-1] == pytest.approx(90.0, rel=0.05)  # 90 steps left at 1 s each
    eta.reset()
    assert eta.update(100.0, 50, 100) is None  # after a pause: a new baseline


def test_the_estimate_follows_a_change_of_pace_smoothly() -> None:
    eta = EtaEstimator(min_steps=1, min_seconds=0.0, smoothing=0.5)
    eta.update(0.0, 0, 10)
    eta.update(1.0, 1, 10)
    assert eta.update(2.0, 2, 10) == pytest.approx(8.0)
    slower = eta.update(5.0, 3, 10)  # one step took 3 s
    assert slower is not None and 8.0 < slower < 7 * 3.0
