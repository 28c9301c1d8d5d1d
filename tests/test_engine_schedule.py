"""Learning-rate schedules (per epoch, 1-based), pinned to the official formulas: InvP
``utils.py`` adjust_learning_rate and MoCo ``main_moco.py`` adjust_learning_rate."""
from __future__ import annotations

import math

import pytest

from benchmark.core.config import ConfigError, resolve
from benchmark.engine.schedule import lr_at_epoch

BASE = {"warmup_epochs": 0, "milestones": [], "gamma": 0.1}
COSINE = {**BASE, "name": "cosine"}


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
    step = {**BASE, "name": "step", "milestones": [80, 120, 160]}
    got = [lr_at_epoch(step, 0.03, e, 200) for e in (1, 79, 80, 119, 120, 160, 200)]
    assert got == pytest.approx([0.03, 0.03, 0.003, 0.003, 0.0003, 0.00003, 0.00003])


def test_warmup_ramps_linearly_then_hands_over() -> None:
    sched = {**BASE, "name": "cosine", "warmup_epochs": 4}
    assert [lr_at_epoch(sched, 0.4, e, 20) for e in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert lr_at_epoch({**BASE, "name": "constant"}, 0.2, 7, 9) == 0.2


def test_warmup_shifts_the_cosine_as_the_official_utils() -> None:
    # utils.py: after warmup_epoch W, epoch -= W and lr *= 0.5 * (1 + cos(pi * epoch / max_epoch)):
    # the cosine restarts from its top at e = W + 1 (max_epoch = epochs + 1 here).
    sched = {**BASE, "name": "cosine", "warmup_epochs": 5}
    for epoch in (6, 10, 400, 799):
        official = 0.03 * 0.5 * (1 + math.cos(math.pi * (epoch - 5) / 800))
        assert lr_at_epoch(sched, 0.03, epoch, 799) == pytest.approx(official, rel=1e-12)


def test_moco_cosine_is_zero_based() -> None:
    # main_moco.py: for epoch in range(0, E): lr *= 0.5 * (1 + cos(pi * epoch / E)).
    sched = {**BASE, "name": "cosine_moco"}
    for zero_based in (0, 1, 100, 199):
        official = 0.015 * 0.5 * (1 + math.cos(math.pi * zero_based / 200))
        assert lr_at_epoch(sched, 0.015, zero_based + 1, 200) == pytest.approx(official, rel=1e-12)
    assert lr_at_epoch(sched, 0.015, 1, 200) == 0.015


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp", "cifar"])
def test_real_profiles_step_decay_is_the_official_one(profile: str) -> None:
    # main.py: --lr_decay_steps 400,600,700, --lr_decay_rate 0.1 (used without --cos).
    schedule = resolve(profile, "invp").pretrain.schedule
    assert list(schedule.milestones) == [400, 600, 700] and schedule.gamma == 0.1
    step = {**schedule, "name": "step"}
    got = [lr_at_epoch(step, 0.03, e, 800) for e in (399, 400, 600, 700, 800)]
    assert got == pytest.approx([0.03, 0.003, 0.0003, 0.00003, 0.00003])


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp", "cifar", "mini"])
def test_moco_style_methods_use_the_moco_cosine(profile: str) -> None:
    for method in ("mocov2", "interclr", "clim"):
        assert resolve(profile, method).pretrain.schedule.name == "cosine_moco"
    assert resolve(profile, "invp").pretrain.schedule.name == "cosine"


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp", "cifar"])
def test_moco_style_lr_is_linearly_scaled(profile: str) -> None:
    # MoCo README: lr 0.03 at batch 256; "--lr 0.015 --batch-size 128" with 4 GPUs.
    for method in ("mocov2", "interclr", "clim"):
        pcfg = resolve(profile, method).pretrain
        assert pcfg.optimizer.lr == pytest.approx(0.03 * pcfg.batch_size / 256)
    assert resolve(profile, "invp").pretrain.optimizer.lr == 0.03  # InvP main.py --lr 0.03 at 128


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ConfigError, match="pretrain.schedule.name='poly'"):
        lr_at_epoch({**BASE, "name": "poly"}, 0.1, 1, 10)
    with pytest.raises(ValueError, match="1-based"):
        lr_at_epoch(COSINE, 0.1, 0, 10)
