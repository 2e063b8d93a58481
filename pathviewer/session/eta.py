"""Time left in a job, from its progress events (Qt-free).

The first steps of a training run are slow (the network is built, the first batch is read, the
CPU caches warm up), so an average from the start overestimates the rest many times over (an
ETA of 36:56 that settled at 2:42).  :class:`EtaEstimator` skips the first step, waits for a
few steps and seconds, and then follows a smoothed seconds-per-step.
"""

from __future__ import annotations


class EtaEstimator:
    """Seconds left in a stage from ``(time, done, total)`` updates.

    Parameters
    ----------
    min_steps
        Steps after the first before an estimate is given.
    min_seconds
        Seconds after the first step before an estimate is given.
    smoothing
        Weight of the newest seconds-per-step in the running average (0-1).
    """

    def __init__(self, min_steps: int = 3, min_seconds: float = 2.0, smoothing: float = 0.2):
        self.min_steps = min_steps
        self.min_seconds = min_seconds
        self.smoothing = smoothing
        self.reset()

    def reset(self) -> None:
        """Start over (a new stage, or a pause that must not count)."""
        self._first: tuple[float, int] | None = None
        self._last: tuple[float, int] | None = None
        self._per_step: float | None = None
        self._started = False

    def update(self, now: float, done: int, total: int) -> float | None:
        """Record progress; the seconds left, or None while there is no fair estimate."""
        if self._last is None or self._first is None:
            # The first event is the baseline: the slow start before it is not counted.
            self._first = self._last = (now, done)
            return None
        last_time, last_done = self._last
        if done > last_done and not self._started:
            # The first step carries the start-up: measure from its end.
            self._started = True
            self._first = self._last = (now, done)
            return None
        if done > last_done:
            rate = (now - last_time) / (done - last_done)
            if self._per_step is None:
                self._per_step = rate
            else:
                self._per_step += self.smoothing * (rate - self._per_step)
            self._last = (now, done)
        first_time, first_done = self._first
        if (
            self._per_step is None
            or total <= 0
            or done - first_done < self.min_steps
            or now - first_time < self.min_seconds
        ):
            return None
        return max(0.0, (total - done) * self._per_step)
