"""Noise-aware ordering verdicts: Welch's t-test at alpha 0.05 on per-seed values, by hand."""
from __future__ import annotations

import pytest

from benchmark.report.ordering import (
    AGREES,
    CANNOT_TELL,
    DISAGREES,
    WITHIN_NOISE,
    pair_verdict,
    welch_p,
)


def test_welch_p_matches_a_hand_computed_case() -> None:
    # a = 1, 2, 3 (mean 2, var 1); b = 4, 6, 8 (mean 6, var 4): se^2 = 1/3 + 4/3 = 5/3,
    # t = 4 / sqrt(5/3) = 3.098, df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 2.778 / 0.944 = 2.941;
    # two-sided p = 0.0547 (t distribution with 2.94 df)
    assert welch_p([1, 2, 3], [4, 6, 8]) == pytest.approx(0.0547, abs=5e-4)


@pytest.mark.parametrize(("higher", "lower", "verdict"), [
    # the case: 82.13 vs 82.02, std 1.0 over 3 seeds -> t = 0.11 / sqrt(2/3) = 0.13, p = 0.9
    ([81.13, 82.13, 83.13], [81.02, 82.02, 83.02], WITHIN_NOISE),
    ([70.0, 70.5, 71.0], [60.0, 60.5, 61.0], AGREES),  # 10 points apart, std 0.5: p < 1e-4
    ([60.0, 60.5, 61.0], [70.0, 70.5, 71.0], DISAGREES),
    ([70.0], [60.0, 60.5, 61.0], CANNOT_TELL),  # one seed: no spread to judge by
    ([65.0, 65.0], [64.0, 64.0], AGREES),  # no spread at all: any difference is told apart
    ([65.0, 65.0], [65.0, 65.0], WITHIN_NOISE),
])
def test_pair_verdicts(higher: list[float], lower: list[float], verdict: str) -> None:
    assert pair_verdict(higher, lower) == verdict
