"""ImageNet-1k through torchvision's ImageNet class.

Layout: ``<root>/imagenet/{meta.bin, train/<wnid>/*.JPEG, val/<wnid>/*.JPEG}``. torchvision
writes ``meta.bin`` (wnid -> class names, val wnids) itself when the devkit archive
``ILSVRC2012_devkit_t12.tar.gz`` sits in the folder, and sorts the val images into wnid folders
from ``ILSVRC2012_img_val.tar``; archives are md5-checked, ``meta.bin`` is not. SimCLR's 1 % / 10 %
label subsets for semisup sit beside it in ``<root>/imagenet_subsets/``; ``data check`` counts
their lines.
"""
from __future__ import annotations

from pathlib import Path

from torchvision.datasets import ImageNet

from benchmark.data.integrity import image_folder_problems, line_count_problems
from benchmark.data.registry import DatasetSpec, register_dataset

HOW_TO_GET = (
    "put ILSVRC2012_devkit_t12.tar.gz, ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
    "(image-net.org) into ROOT/imagenet; the first load unpacks them into train/ and val/ "
    "and writes meta.bin. An already unpacked copy needs train/<wnid>/, val/<wnid>/ and meta.bin"
)
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
NUM_CLASSES = 1000
# SimCLR's label subsets (imagenet_subsets/ of github.com/google-research/simclr), where the
# imagenet profiles' tasks.semisup.subset_files point (under the data root): fraction ->
# (path, lines); 1 %: 189 classes x 12 + 811 x 13 images, 10 %: 884 x 128 + 116 x 129
SUBSET_LISTS = {
    0.01: ("imagenet_subsets/1percent.txt", 12_811),
    0.1: ("imagenet_subsets/10percent.txt", 128_116),
}
SUBSET_FIX = ("copy it from imagenet_subsets/ of github.com/google-research/simclr, or run "
              "semisup with --set tasks.semisup.subset_files={} (a class-balanced draw instead)")


def imagenet_dir(root: Path) -> Path:
    return Path(root) / "imagenet"


def _problems(root: Path) -> list[str]:
    base = imagenet_dir(root)
    if not (base / "meta.bin").is_file() and not (base / DEVKIT).is_file():
        return [f"neither meta.bin nor {DEVKIT} in {base}"]
    missing = [s for s in ("train", "val") if not (base / s).is_dir()
               and not (base / f"ILSVRC2012_img_{s}.tar").is_file()]
    return [f"missing {', '.join(missing)} folder(s)"] if missing else []


def _contents(root: Path) -> list[str]:
    """Unpacked splits hold 1000 non-empty class folders; the semisup subset lists are there
    with SimCLR's line counts."""
    base, problems = imagenet_dir(root), []
    for split in ("train", "val"):
        if (base / split).is_dir():
            problems += image_folder_problems(
                base / split, NUM_CLASSES,
                f"move {base / split} away and put ILSVRC2012_img_{split}.tar into {base} "
                "(the next load unpacks it)")
    for path, lines in SUBSET_LISTS.values():
        problems += line_count_problems(Path(root) / path, lines, SUBSET_FIX)
    return problems


SPEC = register_dataset(
    DatasetSpec(
        name="imagenet",
        summary="ImageNet-1k (ILSVRC2012), 1000 classes, 1.28M train / 50k val",
        num_classes=NUM_CLASSES,
        splits=("train", "val"),
        location=imagenet_dir,
        problems=_problems,
        how_to_get=HOW_TO_GET,
        builder=lambda root, split, transform=None, **_: ImageNet(
            str(imagenet_dir(root)), split=split, transform=transform
        ),
        contents=_contents,
    )
)
