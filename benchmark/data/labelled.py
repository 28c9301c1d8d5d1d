"""A view of a dataset (or part of it) that exposes ``targets`` for label-only access
(class-balanced draws, holdouts) without decoding images."""
from __future__ import annotations

from typing import Any, Sequence

from torch.utils.data import Dataset


class Labelled(Dataset):
    """Items ``indices`` (all when None) of ``base`` with their labels in ``targets``."""

    def __init__(self, base: Dataset, targets: Sequence[int], indices: Sequence[int] | None = None):
        self.base = base
        self.indices = list(range(len(targets))) if indices is None else list(indices)
        self.targets = [int(targets[i]) for i in self.indices]
        self.classes = getattr(base, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.base[self.indices[i]]
