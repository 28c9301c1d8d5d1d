"""Learning-rate schedules (per epoch, 1-based, as the official code)."""
from __future__ import annotations

import math

import pytest

from benchmark.core.config import ConfigError
from benchmark.engine.schedule import lr_at_epoch

COSINE = {"name": "cosine", "warmup_epochs": 0, "milestones": [], "gamma": 0.1}


def test_cosine_matches_the_official_formula() -> None:
    # Official: 0.03 * 0.5 * (1 + cos(pi * e / max_epoch)) for e = 1 .. max_epoch - 1.
    for epoch in (1, 2, 400, 799):
        official = 0.03 * 0.5 * (1 + math.cos(math.pi * epoch / 800))
        assert lr_at_epoch(COSINE, 0.03, epoch, 799) == pytest.approx(official, rel=1e-12)
    values = [lr_at_epoch(COSINE, 0.03, e, 12) for e in range(1, 13)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] > 0  # no epoch is trained at lr 0
    assert lr_at_epoch(COSINE, 0.1, 6, 11) == pytest.approx(0.05)  # midpoint


def test_step_schedule_decays_at_milestones() -> None:
    step = {**COSINE, "name": "step", "milestones": [80, 120, 160]}
    got = [lr_at_epoch(step, 0.03, e, 200) for e in (1, 79, 80, 119, 120, 160, 200)]
    assert got == pytest.approx([0.03, 0.03, 0.003, 0.003, 0.0003, 0.00003, 0.00003])


def test_warmup_ramps_linearly_then_hands_over() -> None:
    sched = {**COSINE, "warmup_epochs": 4}
    assert [lr_at_epoch(sched, 0.4, e, 20) for e in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lr_at_epoch(sched, 0.4, 5, 20) == pytest.approx(lr_at_epoch(COSINE, 0.4, 5, 20))
    assert lr_at_epoch({**COSINE, "name": "constant"}, 0.2, 7, 9) == 0.2


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ConfigError, match="pretrain.schedule.name='poly'"):
        lr_at_epoch({**COSINE, "name": "poly"}, 0.1, 1, 10)
    with pytest.raises(ValueError, match="1-based"):
        lr_at_epoch(COSINE, 0.1, 0, 10)
