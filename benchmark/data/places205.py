"""Places205 (205 scene classes), read from its CSV list files or from class folders.

Layouts under ``<root>/Places205`` (docs/protocols.md §Places205 linear), the first found wins:

1. list files ``trainvalsplit_places205/{train,val}_places205.csv``, one ``<relpath> <label>``
   per line, with images under ``images256/`` or ``data/vision/torralba/deeplearning/images256/``
   (the InvP/mmselfsup layout);
2. class folders ``{train,val}/<class>/*.jpg`` (VISSL's disk_folder layout).

torchvision has no Places205 class (its Places365 md5-checks its list files).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from benchmark.data.integrity import corrupt, image_folder_problems
from benchmark.data.registry import DatasetSpec, register_dataset

NUM_CLASSES = 205
IMAGE_DIRS = ("images256", "data/vision/torralba/deeplearning/images256")
HOW_TO_GET = (
    "the official download links are dead; place a copy so that ROOT/Places205 holds "
    "trainvalsplit_places205/{train,val}_places205.csv with the images under images256/, "
    "or train/<class>/ and val/<class>/ folders"
)


def places_dir(root: Path) -> Path:
    return Path(root) / "Places205"


def list_file(root: Path, split: str) -> Path:
    return places_dir(root) / "trainvalsplit_places205" / f"{split}_places205.csv"


def _image_dir(root: Path) -> Path | None:
    found = [places_dir(root) / d for d in IMAGE_DIRS if (places_dir(root) / d).is_dir()]
    return found[0] if found else None


def read_list(path: Path) -> list[tuple[str, int]]:
    """``(relpath, label)`` pairs of a ``<relpath> <label>`` file; bad lines name the line."""
    samples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= NUM_CLASSES:
            raise ValueError(
                f"{path}:{number}: expected '<relative path> <label 0-{NUM_CLASSES - 1}>', got {line!r}"
            )
        samples.append((parts[0], int(parts[1])))
    return samples


class PlacesList(Dataset):
    """Images named by a list file; ``samples`` holds (path, label), ``targets`` the labels."""

    def __init__(self, image_dir: Path, entries: list[tuple[str, int]], transform: Any = None):
        self.samples = [(str(image_dir / rel), label) for rel, label in entries]
        self.targets = [label for _, label in entries]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        try:
            image = Image.open(path).convert("RGB")
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read Places205 image {path}: {exc}") from exc
        return (self.transform(image) if self.transform else image), label


def _uses_lists(root: Path) -> bool:
    return all(list_file(root, s).is_file() for s in ("train", "val"))


def _problems(root: Path) -> list[str]:
    if _uses_lists(root):
        return [] if _image_dir(root) else [
            f"list files found but no image folder {' or '.join(IMAGE_DIRS)} under {places_dir(root)}"
        ]
    if all((places_dir(root) / s).is_dir() for s in ("train", "val")):
        return []
    return [f"neither {list_file(root, 'train').parent} (list files) nor train/ and val/ folders"]


def _contents(root: Path) -> list[str]:
    """List files parse and are not empty; class folders are 205, none empty."""
    fix = f"replace {places_dir(root)} with a complete copy (see how to get it)"
    problems = []
    for split in ("train", "val"):
        if _uses_lists(root):
            try:
                entries = read_list(list_file(root, split))
            except ValueError as exc:
                problems.append(f"corrupt: {exc}; {fix}")
                continue
            if not entries:
                problems.append(corrupt(list_file(root, split), "at least 1", 0, "entries", fix))
        else:
            problems += image_folder_problems(places_dir(root) / split, NUM_CLASSES, fix)
    return problems


def _build(root: Path, split: str, transform: Any = None, **_: Any) -> Dataset:
    if _uses_lists(root):
        return PlacesList(_image_dir(root), read_list(list_file(root, split)), transform)
    folder = ImageFolder(str(places_dir(root) / split), transform=transform)
    if len(folder.classes) != NUM_CLASSES:
        raise ValueError(
            f"{places_dir(root) / split} has {len(folder.classes)} class folders, expected {NUM_CLASSES}"
        )
    return folder


SPEC = register_dataset(
    DatasetSpec(
        name="places205",
        summary="Places205, 205 scene classes, ~2.45M train / 20.5k val (CSV lists or folders)",
        num_classes=NUM_CLASSES,
        splits=("train", "val"),
        location=places_dir,
        problems=_problems,
        how_to_get=HOW_TO_GET,
        builder=_build,
        contents=_contents,
    )
)
