"""Shared machinery of the memory-bank methods: the bank, its initial draw, the post-step update
and the non-finite-loss report. InvP, InsDis and the KNN-positive variants build on it.

The bank (n, D) is allocated when the method is built; its initial rows are drawn from torch's
global generator at the first ``loss`` (unless a checkpoint filled it), so that the draw keeps its
place in a run's random stream (runs stay bit-identical to the recorded ones); under DDP rank 0's
draw is broadcast so all ranks start equal. ``update`` all-gathers the pre-step embeddings, indices and any rows
prepared by ``loss``, so every rank applies the same update (docs/methods/memory-bank.md
§Distributed training; docs/methods/invp.md §Official step, step 13).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from benchmark.core.fields import Float
from methods.base import LossOutput, Method, pack_output
from methods.parts.dist_utils import all_gather_cat, broadcast_from_rank0
from methods.parts.memory_bank import MemoryBank, uniform_bank_init

MEMORY_MOMENTUM = Float(ge=0, lt=1)  # the spec of every bank method's ``memory_momentum`` setting


class BankMethod(Method):
    """A Method with a memory bank updated after each step from the pre-step embeddings; its
    settings carry ``memory_momentum``."""

    state_names = ("bank",)

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        if num_samples < 2:
            raise ValueError(f"method {self.name!r}: needs at least 2 training samples, got {num_samples}")
        self.bank = MemoryBank.empty(num_samples, embed_dim, self.settings.memory_momentum)
        self._pending: dict[str, torch.Tensor] = {}

    def _prepare(self, embeddings: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, MemoryBank]:
        """Check the batch; return (float32 embeddings, int64 indices, bank) on the state's device,
        drawing the initial bank first if it is still empty."""
        v = self.checked_view(embeddings, indices)
        if not self.bank.filled:
            self.bank.fill(uniform_bank_init(self.num_samples, self.embed_dim))
            broadcast_from_rank0(self.bank.weight)
        return v, indices.to(self.device, torch.long), self.bank

    def _finish(self, loss: torch.Tensor, logs: Mapping[str, torch.Tensor | float]) -> LossOutput:
        """The step's LossOutput (``pack_output``); a non-finite loss raises FloatingPointError
        saying whether the bank holds NaN rows."""
        out, value = pack_output(loss, logs)
        if not math.isfinite(value):
            bad = self.bank.nonfinite_rows()
            where = (f"the memory bank has {bad.numel()} NaN/inf rows (e.g. {bad[:5].tolist()})" if bad.numel()
                     else "the bank is finite")
            raise FloatingPointError(
                f"method {self.name!r}: non-finite loss; {where}. Resume from an earlier checkpoint "
                f"or lower the learning rate"
            )
        return out

    # -- the post-step update ----------------------------------------------------------------
    def _stash(self, embeddings: torch.Tensor, indices: torch.Tensor, **rows: torch.Tensor) -> None:
        """Keep what ``update`` needs: pre-step embeddings, indices and extra per-sample rows."""
        pending = {"embeddings": embeddings, "indices": indices, **rows}
        self._pending = {key: value.detach() for key, value in pending.items()}

    def update(self) -> None:
        if not self._pending:
            raise RuntimeError(f"method {self.name!r}: update() called without a preceding loss()")
        gathered = {key: all_gather_cat(value) for key, value in self._pending.items()}
        self._pending = {}
        self.bank.update(gathered["indices"], gathered["embeddings"])
        self._apply_rows(gathered)

    def _apply_rows(self, gathered: Mapping[str, torch.Tensor]) -> None:
        """Apply per-sample rows other than the bank's (e.g. the neighbour table)."""
