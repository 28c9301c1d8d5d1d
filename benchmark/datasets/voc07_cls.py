"""Pascal VOC 2007 as a 20-class multi-label classification set (protocols.md §3.3, §4).

Layout: ``<root>/VOCdevkit/VOC2007/{ImageSets/Main/<class>_<split>.txt, JPEGImages/<id>.jpg}``
as the VOC devkit ships it. Each class file has one ``<id> <value>`` line per image of the
split, value 1 = present, -1 = absent, 0 = difficult; targets keep those raw values (an int8
vector of 20 per image) so that each protocol applies its own difficult rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from benchmark.datasets.registry import DatasetSpec, register_dataset

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
SPLITS = ("train", "val", "trainval", "test")
HOW_TO_GET = (
    "download VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar (Pascal VOC site or a "
    "mirror) and untar both into ROOT, giving ROOT/VOCdevkit/VOC2007"
)


def voc_dir(root: Path) -> Path:
    return Path(root) / "VOCdevkit" / "VOC2007"


def read_class_file(path: Path) -> dict[str, int]:
    """``{image id: value}`` of one ``<class>_<split>.txt``; malformed lines name the file."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("1", "-1", "0"):
            raise ValueError(f"{path}:{number}: expected '<image id> <1|-1|0>', got {line!r}")
        values[parts[0]] = int(parts[1])
    return values


class VOC07Classification(Dataset):
    """(image, int8 tensor of 20 VOC values) pairs of one split; ``targets`` is (N, 20)."""

    def __init__(self, root: Path, split: str, transform: Any = None):
        base = voc_dir(root)
        per_class = [
            read_class_file(base / "ImageSets" / "Main" / f"{name}_{split}.txt")
            for name in VOC_CLASSES
        ]
        self.ids = sorted(per_class[0])
        for name, values in zip(VOC_CLASSES, per_class):
            if sorted(values) != self.ids:
                raise ValueError(
                    f"{base / 'ImageSets' / 'Main' / f'{name}_{split}.txt'} lists different "
                    f"images than {VOC_CLASSES[0]}_{split}.txt; the devkit files are inconsistent"
                )
        self.targets = torch.tensor(
            [[values[i] for values in per_class] for i in self.ids], dtype=torch.int8
        )
        self.images = base / "JPEGImages"
        self.transform = transform
        self.classes = list(VOC_CLASSES)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        path = self.images / f"{self.ids[i]}.jpg"
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read VOC image {path}: {exc}") from exc
        return (self.transform(image) if self.transform else image), self.targets[i]


def _problems(root: Path) -> list[str]:
    base = voc_dir(root)
    main = base / "ImageSets" / "Main"
    missing = [f"{c}_{s}.txt" for s in SPLITS for c in VOC_CLASSES if not (main / f"{c}_{s}.txt").is_file()]
    problems = [f"missing {len(missing)} class files in {main}, e.g. {missing[0]}"] if missing else []
    if not (base / "JPEGImages").is_dir():
        problems.append(f"missing folder {base / 'JPEGImages'}")
    return problems


SPEC = register_dataset(
    DatasetSpec(
        name="voc07_cls",
        summary="Pascal VOC2007 multi-label classification, 20 classes, trainval 5011 / test 4952",
        num_classes=20,
        splits=SPLITS,
        location=voc_dir,
        problems=_problems,
        how_to_get=HOW_TO_GET,
        builder=lambda root, split, transform=None, **_: VOC07Classification(root, split, transform),
    )
)
