"""Similarities of the current embeddings to the memory bank, with gradient only through them.

Every bank method scores a batch v (B, D) against the bank V (n, D) (docs/methods/invp.md §Official step, step 2). The dense
S = v V^T is computed once per step without autograd; the entries a loss actually uses are then
gathered by ``gathered_similarities``, whose backward is a sparse (B x n) x (n x D) product over
just those entries. This keeps backward at O(B * C * D) instead
of a second dense B x n matmul, and the bank never receives a gradient.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class _GatheredSimilarity(torch.autograd.Function):
    """values[b, c] = v[b] . bank[idx[b, c]], with the forward values supplied precomputed."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(bank, idx)
        return values.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        bank, idx = ctx.saved_tensors
        grad = grad.to(bank.dtype)
        # grad_v[b] = sum_c grad[b, c] * bank[idx[b, c]]. On CPU a weighted embedding_bag sum is the
        # fastest (no (B, C, D) gather); on GPUs a few long bags parallelise poorly, gather + bmm wins.
        if bank.device.type == "cpu":
            grad_v = F.embedding_bag(idx, bank, per_sample_weights=grad, mode="sum")
        else:
            grad_v = torch.bmm(grad.unsqueeze(1), bank[idx]).squeeze(1)
        return grad_v, None, None, None


def gathered_similarities(
    v: torch.Tensor, bank: torch.Tensor, idx: torch.Tensor, dense: torch.Tensor | None = None
) -> torch.Tensor:
    """Differentiable v[b] . bank[idx[b, c]] as a (B, C) tensor; gradient flows to ``v`` only.

    ``v`` (B, D), ``bank`` (n, D), ``idx`` (B, C) int64. ``dense`` (B, n) = v @ bank.T computed
    without grad supplies the forward values when given; otherwise they are computed from the
    gathered bank rows.
    """
    with torch.no_grad():
        if dense is not None:
            values = dense.gather(1, idx)
        else:
            values = torch.einsum("bd,bcd->bc", v, bank[idx])
    if not v.requires_grad:
        return values
    return _GatheredSimilarity.apply(v, bank, idx, values)


class DenseScores:
    """S = v @ bank.T (B, n) for one step, kept in a reusable buffer (no autograd)."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    @torch.no_grad()
    def __call__(self, v: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
        shape = (v.shape[0], bank.shape[0])
        if self._buffer is None or self._buffer.shape != shape or self._buffer.device != bank.device:
            self._buffer = torch.empty(shape, device=bank.device, dtype=bank.dtype)
        return torch.mm(v.detach().to(bank.dtype), bank.T, out=self._buffer)
