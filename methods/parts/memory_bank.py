"""The memory bank: one EMA feature per training sample (docs/methods/memory-bank.md).

Initialisation follows the official InvP / InsDis code: every coordinate i.i.d. uniform on
[-sqrt(3/D), +sqrt(3/D)], so E||v||^2 = 1 but rows are not renormalised. After each step a
visited row becomes normalize(m * old + (1 - m) * v), with v the pre-step embedding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


class MemoryBank:
    """An (n, D) bank of EMA embeddings with momentum ``momentum`` (no gradient ever flows here)."""

    def __init__(self, weight: torch.Tensor, momentum: float):
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"memory_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.weight = weight

    @classmethod
    def random(
        cls, num_samples: int, dim: int, momentum: float, generator: torch.Generator | None = None
    ) -> "MemoryBank":
        """A fresh bank initialised as the official code does (``uniform_bank_init``)."""
        return cls(uniform_bank_init(num_samples, dim, generator), momentum)

    @property
    def num_samples(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor) -> None:
        """EMA-update rows ``indices`` (B,) with ``embeddings`` (B, D); repeats keep the last."""
        indices = indices.to(self.weight.device)
        new = embeddings.to(self.weight)[last_occurrence(indices)]
        self.weight[indices] = ema_rows(self.weight[indices], new, self.momentum)

    def nonfinite_rows(self) -> torch.Tensor:
        """Indices of rows holding NaN or inf."""
        return (~torch.isfinite(self.weight).all(dim=1)).nonzero().flatten()

    @classmethod
    def restored(cls, weight: torch.Tensor, num_samples: int, momentum: float) -> "MemoryBank":
        """A bank from checkpointed ``weight`` (n, D), checking its row count and values."""
        if weight.dim() != 2 or weight.shape[0] != num_samples:
            raise ValueError(
                f"checkpoint memory bank has shape {tuple(weight.shape)} but this run has "
                f"{num_samples} training samples; resume with the same data subset"
            )
        if not torch.isfinite(weight).all():
            raise ValueError("checkpoint memory bank holds NaN/inf rows; resume from an earlier checkpoint")
        return cls(weight.to(torch.float32).clone(), momentum)

    def to(self, device: torch.device | str) -> "MemoryBank":
        self.weight = self.weight.to(device)
        return self
