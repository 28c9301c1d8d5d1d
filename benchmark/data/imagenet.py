"""ImageNet-1k through torchvision's ImageNet class.

Layout: ``<root>/imagenet/{meta.bin, train/<wnid>/*.JPEG, val/<wnid>/*.JPEG}``. torchvision
writes ``meta.bin`` (wnid -> class names, val wnids) itself when the devkit archive
``ILSVRC2012_devkit_t12.tar.gz`` sits in the folder, and sorts the val images into wnid folders
from ``ILSVRC2012_img_val.tar``; archives are md5-checked, ``meta.bin`` is not. SimCLR's 1 % / 10 %
label subsets for semisup sit beside it in ``<root>/imagenet_subsets/``: ``data prepare
imagenet_subsets --download`` fetches them, ``data check`` counts their lines.
"""
from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Callable

from torchvision.datasets import ImageNet

from benchmark.core.atomic import atomic_open
from benchmark.data.integrity import image_folder_problems, line_count_problems, list_lines
from benchmark.data.registry import DatasetMissing, DatasetSpec, register_dataset

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
SUBSET_FIX = ("run `python -m benchmark data prepare imagenet_subsets --download` (or copy it from "
              "imagenet_subsets/ of github.com/google-research/simclr), or run semisup with --set "
              "tasks.semisup.subset_files={} (a class-balanced draw instead)")
SUBSETS = "imagenet_subsets"  # the name ``data prepare`` and ``data check`` know the lists by
SUBSET_URL = "https://raw.githubusercontent.com/google-research/simclr/master/{path}"


def subset_list_states(root: Path) -> list[tuple[Path, int, int | None]]:
    """(path, expected lines, lines found or None when absent) of each SimCLR subset list."""
    states = []
    for path, lines in SUBSET_LISTS.values():
        target = Path(root) / path
        states.append((target, lines, len(list_lines(target)) if target.is_file() else None))
    return states


def prepare_subset_lists(root: Path, download: bool, fetch: Callable[[str], bytes] | None = None) -> Path:
    """Make sure both subset lists are under ``root``; with ``download`` fetch the missing or
    wrong ones from SimCLR's repository (``fetch``: url -> bytes, default urllib). Without
    ``download``, or without a network, the error names the files, the URL and where they go."""
    wanted = [(path, lines) for path, lines, found in subset_list_states(root) if found != lines]
    folder = Path(root) / SUBSETS
    for path, lines in wanted:
        url = SUBSET_URL.format(path=path.relative_to(root).as_posix())
        if not download:
            raise DatasetMissing(_fetch_by_hand(wanted, root, "give --download to fetch them"))
        try:
            text = (fetch or _fetch_url)(url).decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetMissing(_fetch_by_hand(wanted, root, f"downloading {url} failed: {exc}")) from None
        found = len([line for line in text.splitlines() if line.strip()])
        if found != lines:
            raise DatasetMissing(f"{url} holds {found} lines, not SimCLR's {lines}; "
                                 + _fetch_by_hand(wanted, root, "the download is not the list"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path) as handle:
            handle.write(text)
    return folder


def _fetch_by_hand(wanted: list[tuple[Path, int]], root: Path, why: str) -> str:
    names = ", ".join(f"{path} ({lines} lines)" for path, lines in wanted)
    return (f"SimCLR's subset lists missing: {names} ({why}); download them from "
            f"{SUBSET_URL.format(path=SUBSETS + '/')} and put them in {Path(root) / SUBSETS}")


def _fetch_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310  (a fixed https URL)
        return response.read()


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
