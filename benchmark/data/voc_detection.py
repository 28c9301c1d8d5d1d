"""Pascal VOC detection, VOC2007 + VOC2012: the registered ``voc_detection`` dataset in the VOC
on-disk layout (format and parsing: :mod:`benchmark.data.voc_format`; the mini detection set:
:mod:`benchmark.data.mini_det`).

Splits: ``trainval`` (VOC07+12 trainval) and ``test`` (VOC07 test).
"""
from __future__ import annotations

from pathlib import Path

from benchmark.data.registry import DatasetSpec, register_dataset
from benchmark.data.voc_format import VOCDetectionSet, image_set_problems

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
SPLIT_PARTS = {"trainval": (("2007", "trainval"), ("2012", "trainval")), "test": (("2007", "test"),)}

VOC_NEEDED = (("2007", "trainval"), ("2007", "test"), ("2012", "trainval"))
VOC_FIX = ("re-extract VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and "
           "VOCtrainval_11-May-2012.tar into the data root")


def _voc_location(root: Path) -> Path:
    return Path(root) / "VOCdevkit"


def _voc_problems(root: Path) -> list[str]:
    main = _voc_location(root)
    return [
        f"missing {main / f'VOC{year}' / 'ImageSets' / 'Main' / f'{image_set}.txt'}"
        for year, image_set in VOC_NEEDED
        if not (main / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt").is_file()
    ]


def _voc_contents(root: Path) -> list[str]:
    return [problem for year, image_set in VOC_NEEDED
            for problem in image_set_problems(_voc_location(root) / f"VOC{year}", image_set, VOC_FIX)]


SPEC = register_dataset(
    DatasetSpec(
        name="voc_detection",
        summary="Pascal VOC detection, 20 classes: trainval = VOC07+12 trainval, test = VOC07 test",
        num_classes=len(VOC_CLASSES),
        splits=("trainval", "test"),
        location=_voc_location,
        problems=_voc_problems,
        how_to_get=(
            "extract VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and "
            "VOCtrainval_11-May-2012.tar into ROOT (they create ROOT/VOCdevkit/VOC2007 and "
            "VOC2012), or on a machine with internet call torchvision's "
            "VOCDetection(ROOT, year=..., image_set=..., download=True) for each of the three"
        ),
        builder=lambda root, split, transform=None, **kw: VOCDetectionSet(
            root, SPLIT_PARTS[split], VOC_CLASSES, transforms=transform
        ),
        contents=_voc_contents,
    )
)
