"""The GUI-responsiveness benchmark's figures (the run itself is ``make bench``)."""

from __future__ import annotations

import pytest

from pathviewer.bench.__main__ import BENCHMARKS
from pathviewer.bench.training_ui import stall_summary


def test_stall_summary_subtracts_the_interval_and_counts_long_stalls() -> None:
    gaps = [0.005] * 98 + [0.045, 0.105]  # 5 ms timer, two stalls: 40 ms and 100 ms
    summary = stall_summary(gaps, 0.005)
    assert summary["beats"] == 100
    assert summary["max_stall_ms"] == pytest.approx(100.0)
    assert summary["p99_stall_ms"] == pytest.approx(40.0)
    assert summary["median_stall_ms"] == pytest.approx(0.0)
    assert summary["stalls_over_30ms"] == 2


def test_early_beats_are_not_negative_stalls() -> None:
    summary = stall_summary([0.004, 0.005, 0.006], 0.005)
    assert summary["max_stall_ms"] == pytest.approx(1.0)
    assert summary["median_stall_ms"] == 0.0


def test_no_beats_gives_no_figures() -> None:
    assert stall_summary([], 0.005) == {"beats": 0}


def test_the_benchmark_is_registered() -> None:
    assert BENCHMARKS["training_ui"] == "pathviewer.bench.training_ui"
