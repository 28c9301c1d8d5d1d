"""CIFAR-10 and CIFAR-100 through torchvision (python pickle batches).

Layouts: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
``<root>/cifar-100-python/{train, test, meta}``, as ``download=True`` leaves them.
torchvision md5-checks every batch file when it loads them (without saying which one failed);
the content check compares the same md5s file by file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100

from benchmark.data.integrity import md5_problems
from benchmark.data.registry import DatasetSpec, register_dataset


def _register(name: str, cls: type, folder: str, files: tuple[str, ...], classes: int) -> DatasetSpec:
    def location(root: Path) -> Path:
        return Path(root) / folder

    def problems(root: Path) -> list[str]:
        missing = [f for f in files if not (location(root) / f).is_file()]
        return [f"missing {', '.join(missing)}"] if missing else []

    def contents(root: Path) -> list[str]:
        checksums = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
        fix = f"delete {location(root)} and download it again (see how to get it)"
        return [problem for name, md5 in checksums
                for problem in md5_problems(location(root) / name, md5, fix)]

    def build(root: Path, split: str, transform: Any = None, **_: Any) -> Any:
        return cls(str(root), train=(split == "train"), transform=transform, download=False)

    return register_dataset(
        DatasetSpec(
            name=name,
            summary=f"{cls.__name__}, {classes} classes, 50k train / 10k test, 32x32",
            num_classes=classes,
            splits=("train", "test"),
            location=location,
            problems=problems,
            how_to_get=(
                f"on a machine with internet: python -c \"import torchvision; "
                f"torchvision.datasets.{cls.__name__}('ROOT', download=True)\" (creates ROOT/{folder})"
            ),
            builder=build,
            contents=contents,
        )
    )


CIFAR10_SPEC = _register(
    "cifar10", CIFAR10, "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"), 10,
)
CIFAR100_SPEC = _register("cifar100", CIFAR100, "cifar-100-python", ("train", "test", "meta"), 100)
