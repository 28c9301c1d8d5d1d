"""Invariance propagation: positives from walks of length 1..l in the kNN graph (docs/methods/invp.md §Equations, Eq 3; §Official step, step 6).

Two variants:

* ``propagate_concat`` — the official step: concatenate the graph rows of every column, layer by
  layer, giving k + k^2 + ... + k^l columns: a multiset with repeats that may hold the anchor.
* ``propagate_bfs`` — a clean variant (not the official method): the de-duplicated set of nodes
  at graph distance 1..l, without the anchor, padded to a common width with a validity mask.
"""
from __future__ import annotations

import torch


def propagate_concat(table: torch.Tensor, anchors: torch.Tensor, steps: int) -> torch.Tensor:
    """Official multiset of candidate positives, (B, k + ... + k^steps) int64 (docs/methods/invp.md §Official step, step 6).

    ``table`` (n, k) is the graph, ``anchors`` (B,) the batch indices. Layer 1 is table[anchors];
    layer s expands every column of layer s-1, left to right, into its k graph neighbours
    (contiguous, in table order). Layers are concatenated in order; nothing is de-duplicated.
    """
    if steps < 1:
        raise ValueError(f"propagation steps (l) must be >= 1, got {steps}")
    layer = table[anchors]
    layers = [layer]
    for _ in range(steps - 1):
        layer = table[layer].flatten(1)
        layers.append(layer)
    return torch.cat(layers, dim=1)


def distinct_entries(ids: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``ids`` (B, C) sorted, and a mask of the first occurrence of every value in it,
    False for values equal to ``exclude`` (B,). Counting the mask counts distinct values."""
    sorted_ids, _ = ids.sort(dim=1)
    keep = torch.ones_like(sorted_ids, dtype=torch.bool)
    keep[:, 1:] = sorted_ids[:, 1:] != sorted_ids[:, :-1]
    if exclude is not None:
        keep &= sorted_ids != exclude.view(-1, 1)
    return sorted_ids, keep


def rowwise_unique(
    ids: torch.Tensor, fill: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique entries of each row of ``ids`` (B, C), left-aligned and padded.

    Returns (unique (B, W), mask (B, W)) with W the largest count over rows (at least 1); padding
    holds ``fill`` (B,) and mask False. Entries equal to ``exclude`` (B,) are dropped.
    """
    sorted_ids, keep = distinct_entries(ids, exclude)
    counts = keep.sum(dim=1)
    width = max(int(counts.max().item()) if counts.numel() else 0, 1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
    unique = sorted_ids.gather(1, order)
    mask = torch.arange(width, device=ids.device).view(1, -1) < counts.view(-1, 1)
    return torch.where(mask, unique, fill.view(-1, 1)), mask


def propagate_bfs(table: torch.Tensor, anchors: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean variant: nodes at graph distance 1..steps from each anchor, without the anchor.

    Returns (ids (B, W), mask (B, W)), each row sorted ascending and de-duplicated; padding holds
    the anchor with mask False. Grows a ball (anchor plus neighbours) ``steps`` times, so the width
    stays at the ball size instead of k^steps.
    """
    if steps < 1:
        raise ValueError(f"propagation steps (l) must be >= 1, got {steps}")
    ball = anchors.view(-1, 1)
    for _ in range(steps):
        ball, _ = rowwise_unique(torch.cat([ball, table[ball].flatten(1)], dim=1), fill=anchors)
    return rowwise_unique(ball, fill=anchors, exclude=anchors)
