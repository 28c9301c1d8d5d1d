"""The memory bank: one EMA feature per training sample (docs/methods/memory-bank.md).

Initialisation follows the official InvP / InsDis code: every coordinate i.i.d. uniform on
[-sqrt(3/D), +sqrt(3/D)], so E||v||^2 = 1 but rows are not renormalised. After each step a
visited row becomes normalize(m * old + (1 - m) * v), with v the pre-step embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from methods.state import Stateful


def uniform_bank_init(num_samples: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(num_samples, dim) float32, coordinates uniform on [-sqrt(3/dim), sqrt(3/dim)] (docs/methods/memory-bank.md §Initialisation)."""
    bound = math.sqrt(3.0 / dim)
    return (torch.rand(num_samples, dim, generator=generator) * 2.0 - 1.0) * bound


def ema_rows(old: torch.Tensor, new: torch.Tensor, momentum: float) -> torch.Tensor:
    """normalize(momentum * old + (1 - momentum) * new), row-wise; old, new: (B, D) (docs/methods/memory-bank.md §Update; docs/methods/invp.md §Official step, step 13)."""
    return F.normalize(momentum * old + (1.0 - momentum) * new, dim=1)


def last_occurrence(indices: torch.Tensor) -> torch.Tensor:
    """For each entry of ``indices`` (B,), the position of the last entry with the same value.

    A gathered DDP batch can repeat an index (DistributedSampler pads by repeating samples).
    Writing ``rows[last_occurrence(indices)]`` to ``indices`` gives every write to one index the
    same value, so the result is deterministic on every rank and device, without a host sync.
    """
    sorted_values, order = indices.sort(stable=True)
    group_end = torch.searchsorted(sorted_values, sorted_values, right=True) - 1
    last = torch.empty_like(order)
    last[order] = order[group_end]
    return last


class MemoryBank(Stateful):
    """An (n, D) bank of EMA embeddings with momentum ``momentum`` (no gradient ever flows here).

    ``filled`` is False until the initial rows are set (``fill``); an empty bank is allocated
    with its final shape, so that loading a checkpoint checks against it.
    """

    state_names = ("weight", "filled")
    state_shapes = "the memory bank is training samples x model.embed_dim"

    def __init__(self, weight: torch.Tensor, momentum: float, filled: bool = True):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.weight = weight
        self.filled = filled

    @classmethod
    def empty(cls, num_samples: int, dim: int, momentum: float) -> "MemoryBank":
        """An unfilled (num_samples, dim) bank of zeros."""
        return cls(torch.zeros(num_samples, dim), momentum, filled=False)

    def fill(self, rows: torch.Tensor) -> None:
        """Set the initial bank to ``rows`` (n, D), kept as float32 on the bank's device."""
        self.weight = self.initial_tensor("weight", rows)
        self.filled = True

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """EMA-update rows ``indices`` (B,) with ``embeddings`` (B, D); repeats keep the last."""
        indices = indices.to(self.weight.device)
        new = embeddings.to(self.weight)[last_occurrence(indices)]
        self.weight[indices] = ema_rows(self.weight[indices], new, self.momentum)

    def nonfinite_rows(self) -> torch.Tensor:
        """Indices of rows holding NaN or inf."""
        return (~torch.isfinite(self.weight).all(dim=1)).nonzero().flatten()
