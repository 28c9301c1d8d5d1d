"""Ramp-up of the InvP term's weight w(t) over epochs (docs/methods/invp.md §Ramp-up)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from benchmark.core.fields import Choice, Int
from benchmark.core.settings import setting

RAMP_TYPES = ("binary", "gaussian", "none")


@dataclass(frozen=True)
class RampSettings:
    """``type``: binary (w=0 for epoch <= length, else 1; the paper's), gaussian
    (w = exp(-5 (max(1 - epoch/length, 0))^2), as the official option), or none (w = 1 always;
    the official code calls this ``zero``). ``length``: T in epochs (official: 30)."""

    type: str = setting(spec=Choice(RAMP_TYPES))
    length: int = setting(spec=Int(ge=0))


def ramp_weight(epoch: int, ramp: RampSettings) -> float:
    """w(epoch) for a 1-based ``epoch`` (the official code's count)."""
    if ramp.type == "binary":
        return 1.0 if epoch > ramp.length else 0.0
    if ramp.type == "gaussian":
        progress = max(1.0 - epoch / ramp.length, 0.0) if ramp.length > 0 else 0.0
        return math.exp(-5.0 * progress * progress)
    if ramp.type == "none":
        return 1.0
    raise ValueError(f"unknown ramp type {ramp.type!r}; valid: {', '.join(RAMP_TYPES)}")
