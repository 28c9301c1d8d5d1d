"""Seeded per-class draws shared by dataset splits and task subsets."""
from __future__ import annotations

from typing import Sequence

import torch


def sample_per_class(labels: torch.Tensor, counts: Sequence[int], seed: int) -> torch.Tensor:
    """Sorted indices: ``counts[i]`` members of the i-th class of ``torch.unique(labels)``, drawn
    without replacement from one generator seeded with ``seed`` (classes in ascending order).
    A count above a class's size takes the whole class."""
    labels = torch.as_tensor(labels).long()
    classes = torch.unique(labels)
    if len(counts) != len(classes):
        raise ValueError(f"{len(counts)} counts given for {len(classes)} classes")
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c, want in zip(classes.tolist(), counts):
        members = torch.nonzero(labels == c).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:want]])
    return torch.cat(chosen).sort().values
