"""Fashion-MNIST, read through torchvision's FashionMNIST class from its usual folder.

Layout: ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (uncompressed
IDX, as torchvision's download leaves it). ``prepare`` fills it from Debian's
``dataset-fashion-mnist`` package (gzip'd IDX under /usr/share/datasets/fashion-mnist), or, on a
machine with internet, from torchvision's ``download=True``.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import Any

from torchvision.datasets import FashionMNIST

from benchmark.core.atomic import atomic_open
from benchmark.data.integrity import corrupt, idx_shape
from benchmark.data.registry import DatasetSpec, register_dataset

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
HOW_TO_GET = (
    "run `make data` (or `python -m benchmark data prepare fashion_mnist --data-root ROOT`), which "
    "unpacks Debian's package (`sudo apt-get install dataset-fashion-mnist`) into "
    "ROOT/FashionMNIST/raw; with internet, `--download` uses torchvision's download=True instead"
)


def raw_dir(root: Path) -> Path:
    return Path(root) / "FashionMNIST" / "raw"


def _problems(root: Path) -> list[str]:
    missing = [name for name in RAW_FILES if not (raw_dir(root) / name).is_file()]
    return [f"missing {', '.join(missing)}"] if missing else []


def _contents(root: Path) -> list[str]:
    """Each IDX file's size against its header; each split's image and label counts agree."""
    problems, counts = [], {}
    for name in RAW_FILES:
        path = raw_dir(root) / name
        fix = f"delete {path} and run `python -m benchmark data prepare fashion_mnist --data-root {root}`"
        shape, found = idx_shape(path, fix)
        problems += found
        counts[name] = None if shape is None else shape[0]
    for split in ("train", "t10k"):
        images, labels = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if images is not None and labels is not None and images != labels:
            path = raw_dir(root) / f"{split}-labels-idx1-ubyte"
            problems.append(corrupt(path, images, labels, "labels (one per image)",
                                    f"delete the {split}-* files and run `python -m benchmark data "
                                    f"prepare fashion_mnist --data-root {root}`"))
    return problems


def _build(root: Path, split: str, transform: Any = None, **_: Any) -> FashionMNIST:
    return FashionMNIST(str(root), train=(split == "train"), transform=transform, download=False)


def prepare(root: Path, source: Path = DEBIAN_DIR, download: bool = False) -> Path:
    """Unpack Fashion-MNIST into ``root`` (idempotent); returns the raw folder."""
    target = raw_dir(root)
    if not _problems(root):
        return target
    if download:
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
        return target
    sources = [source / f"{name}.gz" for name in RAW_FILES]
    absent = [str(p) for p in sources if not p.is_file()]
    if absent:
        raise FileNotFoundError(
            f"Fashion-MNIST source files not found: {', '.join(absent)}. Install Debian's package "
            "(`sudo apt-get install dataset-fashion-mnist`) or pass --download on a machine with "
            "internet."
        )
    target.mkdir(parents=True, exist_ok=True)
    for src, name in zip(sources, RAW_FILES):
        final = target / name
        if final.is_file():
            continue
        with atomic_open(final, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
    return target


SPEC = register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        summary="Fashion-MNIST, 10 classes, 60k train / 10k test, 28x28 grayscale (mini profile)",
        num_classes=10,
        splits=("train", "test"),
        location=raw_dir,
        problems=_problems,
        how_to_get=HOW_TO_GET,
        builder=_build,
        prepare=prepare,
        contents=_contents,
    )
)
