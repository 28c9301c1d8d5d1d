"""Caltech-101 through torchvision, with the SimCLR/Kornblith split: 30 random images per class
for training, the rest for test, drawn without replacement with a fixed seed (0).

Layout: ``<root>/caltech101/101_ObjectCategories/<category>/image_%04d.jpg``; torchvision
drops ``BACKGROUND_Google``, leaving 101 classes. Some images are grayscale (mode L); the task
transforms convert to RGB.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torchvision.datasets import Caltech101

from benchmark.data.integrity import image_folder_problems
from benchmark.data.labelled import Labelled
from benchmark.data.registry import DatasetSpec, register_dataset
from benchmark.data.sampling import sample_per_class

TRAIN_PER_CLASS = 30
SPLIT_SEED = 0
NUM_CLASSES = 101
BACKGROUND = "BACKGROUND_Google"  # the clutter folder torchvision leaves out


def caltech_dir(root: Path) -> Path:
    return Path(root) / "caltech101" / "101_ObjectCategories"


def split_indices(labels: list[int], split: str, per_class: int = TRAIN_PER_CLASS,
                  seed: int = SPLIT_SEED) -> list[int]:
    """Indices of ``split``: ``per_class`` per class (seeded, no replacement) for train, the
    remainder for test."""
    labels_t = torch.tensor(labels)
    counts = [per_class] * len(torch.unique(labels_t))
    train_set = set(sample_per_class(labels_t, counts, seed).tolist())
    chosen = train_set if split == "train" else set(range(len(labels))) - train_set
    return sorted(chosen)


def _problems(root: Path) -> list[str]:
    return [] if caltech_dir(root).is_dir() else [f"missing folder {caltech_dir(root)}"]


def _contents(root: Path) -> list[str]:
    return image_folder_problems(caltech_dir(root), NUM_CLASSES,
                                 "unpack 101_ObjectCategories.tar.gz again (see how to get it)",
                                 ignore=(BACKGROUND,))


def _build(root: Path, split: str, transform: Any = None, **_: Any) -> Labelled:
    base = Caltech101(str(root), target_type="category", transform=transform, download=False)
    return Labelled(base, base.y, split_indices(base.y, split))


SPEC = register_dataset(
    DatasetSpec(
        name="caltech101",
        summary="Caltech-101, 101 classes, 30 per class train (seed 0) / rest test",
        num_classes=NUM_CLASSES,
        splits=("train", "test"),
        location=caltech_dir,
        problems=_problems,
        how_to_get=(
            "download caltech-101.zip (data.caltech.edu), unpack 101_ObjectCategories.tar.gz "
            "into ROOT/caltech101/ (or torchvision Caltech101(ROOT, download=True))"
        ),
        builder=_build,
        contents=_contents,
    )
)
