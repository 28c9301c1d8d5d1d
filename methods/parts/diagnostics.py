"""Logged diagnostics of positive discovery: counts, similarities and label precision.

Labels reach these functions only for logging (``Method.set_diagnostic_labels``), never a loss.
Each returns a 0-dim tensor, so a step's logs reach the host in one transfer.
"""
from __future__ import annotations

import torch

from methods.parts.propagation import distinct_entries


def mean_unique(ids: torch.Tensor, mask: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the number of distinct valid entries of ``ids`` (B, C), anchor excluded."""
    filled = torch.where(mask, ids, anchors.view(-1, 1))
    _, distinct = distinct_entries(filled, exclude=anchors)
    return distinct.sum(dim=1).float().mean()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` holds (NaN when nothing is valid: 0 / 0)."""
    return (values * mask).sum() / mask.sum()


def label_precision(
    labels: torch.Tensor, anchors: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Fraction of valid entries of ``ids`` (B, C) whose label equals their anchor's (B,) label."""
    same = labels[ids] == labels[anchors].view(-1, 1)
    valid = torch.ones_like(same) if mask is None else mask
    return masked_mean(same.float(), valid)
