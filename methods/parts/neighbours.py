"""The kNN graph as an (n, k) adjacency table, refreshed lazily per visited sample (docs/methods/invp.md §Official step, step 11).

It starts all zeros (every node points to sample 0), as in the official code; a row is rewritten
each time its sample is in a batch, from that step's top-M list of the fresh embedding against the
not-yet-updated bank. Unlike the official code, k is not hard-wired to 4.
"""
from __future__ import annotations

import torch

from methods.parts.memory_bank import last_occurrence
from methods.state import Stateful


def neighbours_from_topm(topm_indices: torch.Tensor, anchors: torch.Tensor, k: int) -> torch.Tensor:
    """New graph rows (B, k) from a top-M index list (B, M >= k+1), descending (docs/methods/invp.md §Official step, step 11).

    Take the first k+1 indices; any of the first k equal to the anchor is replaced by the
    (k+1)-th; keep the first k. So a row is the anchor's top-k bank neighbours without itself,
    with the (k+1)-th sitting where the anchor was.
    """
    if topm_indices.shape[1] < k + 1:
        raise ValueError(f"need at least k+1 = {k + 1} top-M columns to refresh the graph, got {topm_indices.shape[1]}")
    rows = topm_indices[:, :k]
    return torch.where(rows == anchors.view(-1, 1), topm_indices[:, k : k + 1], rows)


class NeighbourTable(Stateful):
    """(n, k) int64 adjacency list of the kNN graph over the memory bank."""

    state_names = ("table",)
    state_shapes = "the neighbour table is training samples x method.k"

    def __init__(self, num_samples: int, k: int):
        if k < 1:
            raise ValueError(f"k (graph out-degree) must be >= 1, got {k}")
        self.table = torch.zeros(num_samples, k, dtype=torch.long)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, rows: torch.Tensor) -> None:
        """Write ``rows`` (B, k) for samples ``indices`` (B,); a repeated index keeps the last."""
        indices = indices.to(self.table.device)
        self.table[indices] = rows.to(self.table.device)[last_occurrence(indices)]

    def check_loaded_state(self) -> None:
        if self.table.numel() and (self.table.min() < 0 or self.table.max() >= self.table.shape[0]):
            raise ValueError("checkpoint neighbour table holds indices outside [0, num_samples)")
