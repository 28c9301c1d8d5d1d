"""Pascal VOC 2007 as a 20-class multi-label classification set (docs/protocols.md §VOC07 classification, §Datasets), and
``mini_voc_cls``: the same reader on the mini detection set (``mini_det``, 10 classes), the
mini profile's stand-in for VOC07 classification.

Layout: ``<root>/VOCdevkit/VOC2007/{ImageSets/Main/<class>_<split>.txt, JPEGImages/<id>.jpg}``
as the VOC devkit ships it. Each class file has one ``<id> <value>`` line per image of the
split, value 1 = present, -1 = absent, 0 = difficult; targets keep those raw values (an int8
vector per image) so that each protocol applies its own difficult rule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset

from benchmark.data.integrity import listed_file_problems
from benchmark.data.mini_det import MINI_DET_CLASSES, MINI_SPEC, mini_fix
from benchmark.data.registry import DatasetSpec, register_dataset
from benchmark.data.voc_format import VOCAnnotationError

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
            raise VOCAnnotationError(f"{path}:{number}: expected '<image id> <1|-1|0>', got {line!r}; "
                                     "re-extract the devkit's ImageSets/Main")
        values[parts[0]] = int(parts[1])
    return values


class VOCClassification(Dataset):
    """(image, int8 tensor of VOC values) pairs of one split of the devkit folder ``base``;
    ``targets`` is (N, classes). Images keep their mode (RGB for VOC, L for mini_det)."""

    def __init__(self, base: Path, split: str, classes: tuple[str, ...], transform: Any = None):
        per_class = [
            read_class_file(base / "ImageSets" / "Main" / f"{name}_{split}.txt")
            for name in classes
        ]
        self.ids = sorted(per_class[0])
        for name, values in zip(classes, per_class):
            if sorted(values) != self.ids:
                raise VOCAnnotationError(
                    f"{base / 'ImageSets' / 'Main' / f'{name}_{split}.txt'} lists different "
                    f"images than {classes[0]}_{split}.txt; the devkit files are inconsistent"
                )
        self.targets = torch.tensor(
            [[values[i] for values in per_class] for i in self.ids], dtype=torch.int8
        )
        self.images = base / "JPEGImages"
        self.transform = transform
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        path = self.images / f"{self.ids[i]}.jpg"
        try:
            image = Image.open(path)
            image.load()
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read VOC image {path}: {exc}") from exc
        return (self.transform(image) if self.transform else image), self.targets[i]


def devkit_problems(base: Path, classes: tuple[str, ...], splits: tuple[str, ...]) -> list[str]:
    """What is missing from a devkit folder for classification lists of ``splits``."""
    main = base / "ImageSets" / "Main"
    missing = [f"{c}_{s}.txt" for s in splits for c in classes if not (main / f"{c}_{s}.txt").is_file()]
    problems = [f"missing {len(missing)} class files in {main}, e.g. {missing[0]}"] if missing else []
    if not (base / "JPEGImages").is_dir():
        problems.append(f"missing folder {base / 'JPEGImages'}")
    return problems


def devkit_contents(base: Path, classes: tuple[str, ...], splits: tuple[str, ...],
                    fix: str) -> list[str]:
    """Per split: every class file readable and listing the same images, each image present."""
    main, problems = base / "ImageSets" / "Main", []
    for split in splits:
        try:
            per_class = {name: read_class_file(main / f"{name}_{split}.txt") for name in classes}
        except ValueError as exc:
            problems.append(f"corrupt: {exc}; {fix}")
            continue
        first = main / f"{classes[0]}_{split}.txt"
        ids = sorted(per_class[classes[0]])
        differing = [name for name, values in per_class.items() if sorted(values) != ids]
        if differing:
            other = per_class[differing[0]]
            problems.append(f"corrupt: {main / f'{differing[0]}_{split}.txt'}, expected the "
                            f"{len(ids)} images of {first.name}, found {len(other)} images of "
                            f"which {len(set(other) - set(ids))} differ; {fix}")
        problems += listed_file_problems(first, [base / "JPEGImages" / f"{i}.jpg" for i in ids], fix)
    return problems


FIX = "re-extract VOCtrainval_06-Nov-2007.tar and VOCtest_06-Nov-2007.tar into the data root"
SPEC = register_dataset(
    DatasetSpec(
        name="voc07_cls",
        summary="Pascal VOC2007 multi-label classification, 20 classes, trainval 5011 / test 4952",
        num_classes=20,
        splits=SPLITS,
        location=voc_dir,
        problems=lambda root: devkit_problems(voc_dir(root), VOC_CLASSES, SPLITS),
        how_to_get=HOW_TO_GET,
        builder=lambda root, split, transform=None, **_: VOCClassification(
            voc_dir(root), split, VOC_CLASSES, transform
        ),
        contents=lambda root: devkit_contents(voc_dir(root), VOC_CLASSES, SPLITS, FIX),
    )
)
MINI_SPLITS = ("trainval", "test")
MINI = register_dataset(
    DatasetSpec(
        name="mini_voc_cls",
        summary="mini_det as multi-label classification, 10 classes, 1000 trainval / 200 test",
        num_classes=len(MINI_DET_CLASSES),
        splits=MINI_SPLITS,
        location=MINI_SPEC.location,
        problems=lambda root: MINI_SPEC.check(root)
        or devkit_problems(MINI_SPEC.location(root), MINI_DET_CLASSES, MINI_SPLITS),
        how_to_get=MINI_SPEC.how_to_get,
        builder=lambda root, split, transform=None, **_: VOCClassification(
            MINI_SPEC.location(root), split, MINI_DET_CLASSES, transform
        ),
        prepare=MINI_SPEC.prepare,
        contents=lambda root: devkit_contents(
            MINI_SPEC.location(root), MINI_DET_CLASSES, MINI_SPLITS, mini_fix(root)
        ),
    )
)
