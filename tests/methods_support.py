"""Test-side helpers for the methods tests: checkpoint-state entries of a filled memory bank or
key queue, to load chosen values into a method."""
from __future__ import annotations

from typing import Any

import torch


def bank_state(weight: torch.Tensor) -> dict[str, Any]:
    """The state of a memory bank holding ``weight`` (n, D)."""
    return {"weight": weight, "filled": True}


def queue_state(keys: torch.Tensor, pointer: int = 0) -> dict[str, Any]:
    """The state of a key queue holding ``keys`` (K, D), next write at ``pointer``."""
    return {"keys": keys, "pointer": pointer, "filled": True}
