"""Shared machinery of the memory-bank methods: input checks, the bank, the post-step update,
checkpoint state and device moves. InvP, InsDis and the KNN-positive variants build on it.

The bank is created at the first ``loss`` call, when the embedding width D is known (a method's
config does not carry D); under DDP rank 0's initial bank is broadcast so all ranks start equal.
``update`` all-gathers the pre-step embeddings, indices and any rows prepared by ``loss``, so
every rank applies the same update (docs/methods/memory-bank.md §Distributed training; docs/methods/invp.md §Official step, step 13).
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, ContextManager, Mapping

import torch

from methods.base import LossOutput, Method
from methods.parts.dist_utils import all_gather_cat, broadcast_from_rank0
from methods.parts.memory_bank import MemoryBank

NORM_TOLERANCE = 1e-2  # |‖v‖ - 1| allowed for an "L2-normalised" embedding (bf16 heads included)


def check_batch(embeddings: torch.Tensor, indices: torch.Tensor, num_samples: int, method: str) -> None:
    """Raise ValueError unless embeddings (B, D) are finite and unit-norm and indices (B,) in range.

    The checks reach the host in one transfer (one sync per step on a GPU).
    """
    if embeddings.dim() != 2 or indices.dim() != 1 or embeddings.shape[0] != indices.shape[0] or not len(indices):
        raise ValueError(
            f"method {method!r}: expected embeddings (B, D) and indices (B,) with B > 0, got "
            f"{tuple(embeddings.shape)} and {tuple(indices.shape)}"
        )
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"method {method!r}: indices must be an integer tensor, got {indices.dtype}")
    with torch.no_grad():
        worst_norm = (embeddings.detach().float().norm(dim=1) - 1.0).abs().max()  # NaN/inf propagate
        low, high, worst = torch.stack([indices.min().double(), indices.max().double(), worst_norm.double()]).tolist()
    if low < 0 or high >= num_samples:
        raise ValueError(
            f"method {method!r}: sample index out of range [0, {num_samples}) (got min {int(low)}, max "
            f"{int(high)}); the dataset must return each sample's position in the training set, and the "
            f"method must be built with that set's size"
        )
    if not math.isfinite(worst):
        raise ValueError(f"method {method!r}: embeddings hold NaN/inf; lower the lr or disable AMP")
    if worst > NORM_TOLERANCE:
        raise ValueError(
            f"method {method!r}: embeddings are not L2-normalised (max |norm - 1| = {worst:.3g}); "
            f"pass F.normalize(head_output, dim=1) to method.loss"
        )


def no_autocast(device: torch.device) -> ContextManager[Any]:
    """Bank math runs in float32 even inside an AMP region."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


class BankMethod(Method):
    """A Method with a memory bank updated after each step from the pre-step embeddings."""

    def __init__(self, config: Mapping[str, Any], num_samples: int, memory_momentum: float):
        super().__init__(config, num_samples)
        if num_samples < 2:
            raise ValueError(f"method {self.name!r}: needs at least 2 training samples, got {num_samples}")
        self.memory_momentum = memory_momentum
        self.bank: MemoryBank | None = None
        self.device = torch.device("cpu")
        self._pending: dict[str, torch.Tensor] = {}

    # -- bank ------------------------------------------------------------------------------
    def _ensure_bank(self, dim: int) -> MemoryBank:
        if self.bank is None:
            self.bank = MemoryBank.random(self.num_samples, dim, self.memory_momentum).to(self.device)
            broadcast_from_rank0(self.bank.weight)
        elif self.bank.dim != dim:
            raise ValueError(
                f"method {self.name!r}: embeddings have D={dim} but the memory bank has D={self.bank.dim}; "
                f"model.embed_dim must not change during a run"
            )
        return self.bank

    def _prepare(
        self, embeddings: torch.Tensor, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, MemoryBank]:
        """Check the batch; return (float32 embeddings, int64 indices, bank) on the state's device."""
        check_batch(embeddings, indices, self.num_samples, self.name)
        if embeddings.device != self.device:
            raise ValueError(
                f"method {self.name!r}: embeddings are on {embeddings.device} but the method's state is "
                f"on {self.device}; call method.to(device) after building it"
            )
        bank = self._ensure_bank(embeddings.shape[1])
        return embeddings.float(), indices.to(self.device, torch.long), bank

    def _finish(self, loss: torch.Tensor, logs: Mapping[str, torch.Tensor | float]) -> LossOutput:
        """The step's LossOutput with every log a float (tensors reach the host in one transfer);
        a non-finite loss raises FloatingPointError saying whether the bank holds NaN rows."""
        tensors = {key: value for key, value in logs.items() if isinstance(value, torch.Tensor)}
        values = torch.stack([loss.detach().float(), *(t.detach().float() for t in tensors.values())]).tolist()
        if not math.isfinite(values[0]):
            bad = self.bank.nonfinite_rows() if self.bank is not None else torch.empty(0)
            where = (
                f"the memory bank has {bad.numel()} NaN/inf rows (e.g. {bad[:5].tolist()})"
                if bad.numel()
                else "the bank is finite"
            )
            raise FloatingPointError(
                f"method {self.name!r}: non-finite loss; {where}. Resume from an earlier checkpoint "
                f"or lower the learning rate"
            )
        host = dict(zip(tensors, values[1:]))
        return LossOutput(loss, {key: host[key] if key in host else float(value) for key, value in logs.items()})

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
        assert self.bank is not None
        self.bank.update(gathered["indices"], gathered["embeddings"])
        self._apply_rows(gathered)

    def _apply_rows(self, gathered: Mapping[str, torch.Tensor]) -> None:
        """Apply per-sample rows other than the bank's (e.g. the neighbour table)."""

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"bank": None if self.bank is None else self.bank.weight.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weight = state.get("bank")
        if weight is None:
            self.bank = None
        else:
            self.bank = MemoryBank.restored(weight, self.num_samples, self.memory_momentum).to(self.device)

    def set_diagnostic_labels(self, labels: torch.Tensor | None) -> None:
        """Keep the labels (n,) on the state's device, so diagnostics index them without copies."""
        if labels is not None and labels.shape != (self.num_samples,):
            raise ValueError(
                f"method {self.name!r}: diagnostic labels must have shape ({self.num_samples},), got "
                f"{tuple(labels.shape)}"
            )
        super().set_diagnostic_labels(None if labels is None else labels.to(self.device, torch.long))

    def to(self, device: torch.device | str) -> "BankMethod":
        self.device = torch.empty(0, device=device).device  # "cuda" resolves to "cuda:0"
        if self.bank is not None:
            self.bank.to(self.device)
        if self.diagnostic_labels is not None:
            self.diagnostic_labels = self.diagnostic_labels.to(self.device)
        return self
