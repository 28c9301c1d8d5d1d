"""Learning-rate schedules, set once per epoch (1-based) as the official InvP code does.

* ``cosine``: lr_e = base * 0.5 * (1 + cos(pi * e / (epochs + 1))). The official code computes
  0.5 * (1 + cos(pi * e / max_epoch)) for e = 1 .. max_epoch - 1, so a run of ``epochs`` epochs
  here equals the official run with ``--max_epoch epochs+1`` and never trains at lr 0.
* ``step``: lr_e = base * gamma ** (number of milestones m with e >= m).
* ``constant``: lr_e = base.

``warmup_epochs`` W > 0 replaces the first W epochs by a linear ramp base * e / W.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from benchmark.core.config import ConfigError

SCHEDULES = ("cosine", "step", "constant")


def lr_at_epoch(schedule: Mapping[str, Any], base_lr: float, epoch: int, epochs: int) -> float:
    """The learning rate of 1-based ``epoch`` in a run of ``epochs`` epochs."""
    name = schedule["name"]
    warmup = int(schedule["warmup_epochs"])
    if epoch < 1:
        raise ValueError(f"epochs are 1-based, got epoch={epoch}")
    if warmup > 0 and epoch <= warmup:
        return base_lr * epoch / warmup
    if name == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / (epochs + 1)))
    if name == "step":
        passed = sum(1 for m in schedule["milestones"] if epoch >= int(m))
        return base_lr * float(schedule["gamma"]) ** passed
    if name == "constant":
        return base_lr
    raise ConfigError(
        f"pretrain.schedule.name={name!r} is unknown; valid schedules: {', '.join(SCHEDULES)}"
    )
