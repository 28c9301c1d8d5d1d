"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes).

It ships inside scikit-learn, so it is always present; the split is a fixed, stratified draw
(seed 0): 1,000 train and 797 test images. Images are PIL 'L' upscaled to 28x28 so that the
mini backbone reads them like Fashion-MNIST.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from benchmark.data.registry import DatasetSpec, register_dataset

TRAIN_SIZE = 1000
SPLIT_SEED = 0


class Digits(Dataset):
    """The digits split as (PIL image 28x28, label) pairs; ``targets`` holds the labels."""

    def __init__(self, split: str, transform: Any = None, size: int = 28):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
        idx_train, idx_test = train_test_split(
            np.arange(len(images)),
            train_size=TRAIN_SIZE,
            stratify=bunch.target,
            random_state=SPLIT_SEED,
        )
        chosen = idx_train if split == "train" else idx_test
        self.images = [
            Image.fromarray(images[i]).resize((size, size), Image.BILINEAR) for i in chosen
        ]
        self.targets = [int(bunch.target[i]) for i in chosen]
        self.transform = transform
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = self.images[i]
        return (self.transform(image) if self.transform else image), self.targets[i]


def _location(root: Path) -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"


def _problems(root: Path) -> list[str]:
    return [] if _location(root).is_file() else ["scikit-learn's bundled digits.csv.gz is absent"]


SPEC = register_dataset(
    DatasetSpec(
        name="digits",
        summary="scikit-learn digits, 10 classes, 1000 train / 797 test, 8x8 upscaled to 28x28",
        num_classes=10,
        splits=("train", "test"),
        location=_location,
        problems=_problems,
        how_to_get="ships with scikit-learn: `pip install scikit-learn`",
        builder=lambda root, split, transform=None, **kw: Digits(split, transform, **kw),
    )
)
