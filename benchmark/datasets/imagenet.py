"""ImageNet-1k through torchvision's ImageNet class.

Layout: ``<root>/imagenet/{meta.bin, train/<wnid>/*.JPEG, val/<wnid>/*.JPEG}``. torchvision
writes ``meta.bin`` (wnid -> class names, val wnids) itself when the devkit archive
``ILSVRC2012_devkit_t12.tar.gz`` sits in the folder, and sorts the val images into wnid folders
from ``ILSVRC2012_img_val.tar``; archives are md5-checked, ``meta.bin`` is not.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import ImageNet

from benchmark.datasets.registry import DatasetSpec, register_dataset

HOW_TO_GET = (
    "put ILSVRC2012_devkit_t12.tar.gz, ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
    "(image-net.org) into ROOT/imagenet; the first load unpacks them into train/ and val/ "
    "and writes meta.bin. An already unpacked copy needs train/<wnid>/, val/<wnid>/ and meta.bin"
)
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"


def imagenet_dir(root: Path) -> Path:
    return Path(root) / "imagenet"


def _problems(root: Path) -> list[str]:
    base = imagenet_dir(root)
    if not (base / "meta.bin").is_file() and not (base / DEVKIT).is_file():
        return [f"neither meta.bin nor {DEVKIT} in {base}"]
    missing = [s for s in ("train", "val") if not (base / s).is_dir()
               and not (base / f"ILSVRC2012_img_{s}.tar").is_file()]
    return [f"missing {', '.join(missing)} folder(s)"] if missing else []


SPEC = register_dataset(
    DatasetSpec(
        name="imagenet",
        summary="ImageNet-1k (ILSVRC2012), 1000 classes, 1.28M train / 50k val",
        num_classes=1000,
        splits=("train", "val"),
        location=imagenet_dir,
        problems=_problems,
        how_to_get=HOW_TO_GET,
        builder=lambda root, split, transform=None, **_: ImageNet(
            str(imagenet_dir(root)), split=split, transform=transform
        ),
    )
)
