"""The realistic NGSD benchmark's argument plumbing (the benchmark itself runs in make bench)."""

from __future__ import annotations

import pytest

from pathviewer.bench.ngsd_realistic import parse_variants


def test_variants_parse_into_checked_settings() -> None:
    variants = parse_variants(['cohort:bank_marginal="cohort"', "soft:sk_lambda=1,mining=0.0"])
    assert variants == {
        "cohort": {"bank_marginal": "cohort"},
        "soft": {"sk_lambda": 1, "mining": 0.0},
    }
    with pytest.raises(SystemExit, match="not an NGSD setting"):
        parse_variants(["x:nonsense=1"])
    with pytest.raises(SystemExit, match="not JSON"):
        parse_variants(["x:k=abc"])
    with pytest.raises(SystemExit, match="NAME"):
        parse_variants([":k=0.1"])
