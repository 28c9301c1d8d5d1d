"""Logged diagnostics of positive discovery: counts, similarities and label precision.

Labels reach these functions only for logging (``Method.set_diagnostic_labels``), never a loss.
"""
from __future__ import annotations

import torch

from methods.propagation import rowwise_unique


def mean_unique(ids: torch.Tensor, mask: torch.Tensor, anchors: torch.Tensor) -> float:
    """Mean over rows of the number of distinct valid entries of ``ids`` (B, C), anchor excluded."""
    filled = torch.where(mask, ids, anchors.view(-1, 1))
    _, unique_mask = rowwise_unique(filled, fill=anchors, exclude=anchors)
    return float(unique_mask.sum(dim=1).float().mean())


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``values`` where ``mask`` holds (NaN when nothing is valid)."""
    count = mask.sum()
    return float((values * mask).sum() / count) if count else float("nan")


def label_precision(
    labels: torch.Tensor, anchors: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Fraction of valid entries of ``ids`` (B, C) whose label equals their anchor's (B,) label."""
    same = labels[ids] == labels[anchors].view(-1, 1)
    valid = torch.ones_like(same) if mask is None else mask
    return masked_mean(same.float(), valid)
