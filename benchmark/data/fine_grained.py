"""Stanford Cars, Oxford-IIIT Pets and Flowers102 through torchvision, with ``targets``.

Layouts (docs/protocols.md §Datasets):

- ``<root>/stanford_cars/{devkit/cars_meta.mat, devkit/cars_train_annos.mat,
  cars_test_annos_withlabels.mat, cars_train/, cars_test/}`` (196 classes; no md5 check);
- ``<root>/oxford-iiit-pet/{images/<id>.jpg, annotations/{trainval,test}.txt}`` (37 classes);
- ``<root>/flowers-102/{jpg/image_%05d.jpg, imagelabels.mat, setid.mat}`` (102 classes;
  torchvision md5-checks both .mat files at load).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torchvision.datasets import Flowers102, OxfordIIITPet, StanfordCars

from benchmark.data.integrity import image_files_problems, list_lines, listed_file_problems
from benchmark.data.labelled import Labelled
from benchmark.data.registry import DatasetSpec, register_dataset


def _spec(name: str, summary: str, classes: int, splits: tuple[str, ...], folder: str,
          required: tuple[str, ...], how: str, make: Callable[..., Any],
          labels: Callable[[Any], list[int]],
          content_problems: Callable[[Path, str], list[str]]) -> DatasetSpec:
    """Register one dataset; ``content_problems(folder, fix)`` is its content check."""
    def location(root: Path) -> Path:
        return Path(root) / folder

    def problems(root: Path) -> list[str]:
        missing = [p for p in required if not (location(root) / p).exists()]
        return [f"missing {', '.join(missing)}"] if missing else []

    def build(root: Path, split: str, transform: Any = None, **_: Any) -> Labelled:
        base = make(str(root), split=split, transform=transform, download=False)
        return Labelled(base, labels(base))

    def contents(root: Path) -> list[str]:
        return content_problems(location(root), f"replace {location(root)} with a complete copy "
                                "(see how to get it)")

    return register_dataset(DatasetSpec(name, summary, classes, splits, location, problems, how,
                                        build, contents=contents))


def _pets_contents(base: Path, fix: str) -> list[str]:
    """Every image named by the trainval and test annotation lists is there."""
    problems = []
    for split in ("trainval", "test"):
        listing = base / "annotations" / f"{split}.txt"
        names = [line.split()[0] for line in list_lines(listing)]
        problems += listed_file_problems(listing, [base / "images" / f"{n}.jpg" for n in names], fix)
    return problems


CARS = _spec(
    "stanford_cars", "Stanford Cars, 196 classes, 8144 train / 8041 test", 196, ("train", "test"),
    "stanford_cars",
    ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat",
     "cars_train", "cars_test"),
    "torchvision cannot download it (broken URL); get the Stanford Cars archives from a mirror "
    "(e.g. Kaggle) and arrange them as ROOT/stanford_cars/{devkit/,cars_train/,cars_test/,"
    "cars_test_annos_withlabels.mat}",
    StanfordCars, lambda ds: [label for _, label in ds._samples],
    lambda base, fix: image_files_problems(base / "cars_train", fix)
    + image_files_problems(base / "cars_test", fix),
)
PETS = _spec(
    "oxford_pets", "Oxford-IIIT Pets, 37 breeds, 3680 trainval / 3669 test", 37,
    ("trainval", "test"), "oxford-iiit-pet",
    ("images", "annotations/trainval.txt", "annotations/test.txt"),
    "torchvision OxfordIIITPet(ROOT, download=True) on a machine with internet",
    lambda root, split, transform, download: OxfordIIITPet(
        root, split=split, target_types="category", transform=transform, download=download),
    lambda ds: list(ds._labels),
    _pets_contents,
)
FLOWERS = _spec(
    "flowers102", "Oxford Flowers102, 102 classes, 1020 train / 1020 val / 6149 test", 102,
    ("train", "val", "test"), "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
    "torchvision Flowers102(ROOT, download=True) on a machine with internet",
    Flowers102, lambda ds: list(ds._labels),
    lambda base, fix: image_files_problems(base / "jpg", fix),
)
