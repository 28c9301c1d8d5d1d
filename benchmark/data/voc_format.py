"""The Pascal VOC detection format: annotation XML parsing, the detection Dataset over VOC image
sets, and the check that an image set's listed files exist.

The on-disk layout is ``<parent>/VOCdevkit/VOC{year}/{JPEGImages,Annotations,ImageSets/Main}``;
the file lists come from torchvision's ``VOCDetection``, the annotations are parsed here
(torchvision gives no class index and no checks).

Targets follow detectron2's VOC loader: boxes are 0-based and continuous (``xmin - 1, ymin - 1,
xmax, ymax`` of the 1-based XML pixels), difficult objects are kept (training uses them, the
evaluator ignores them), labels are ``1..K`` with 0 left for background (torchvision's
detection convention). Bad annotations raise :class:`VOCAnnotationError` naming the file;
degenerate boxes (``xmax < xmin`` or ``ymax < ymin``) are the one documented skip, counted in
``skipped_degenerate`` and logged.
"""
from __future__ import annotations

import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from benchmark.core.errors import BadFileError
from benchmark.data.integrity import list_lines, listed_file_problems

log = logging.getLogger(__name__)


class VOCAnnotationError(BadFileError):
    """An annotation file, image set or class list that cannot be used; the message names the
    file (a user error: the command prints it and exits 2)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image's parsed annotation (boxes 0-based continuous, labels 1..K)."""

    image_id: str
    image_path: str
    width: int
    height: int
    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int64
    difficult: np.ndarray  # (N,) bool


def _child_text(node: ET.Element, tag: str, path: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None:
        raise VOCAnnotationError(f"{path}: <{node.tag}> has no <{tag}>; the annotation is incomplete")
    return child.text.strip()


def _number(text: str, what: str, path: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise VOCAnnotationError(f"{path}: {what} is {text!r}, not a number") from None


def parse_annotation(
    path: str | os.PathLike, image_path: str, class_names: Sequence[str]
) -> tuple[ImageRecord, int]:
    """Parse one VOC XML file; returns the record and how many degenerate boxes were skipped."""
    path = str(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise VOCAnnotationError(f"{path}: cannot read the annotation XML ({exc})") from None
    size = root.find("size")
    if size is None:
        raise VOCAnnotationError(f"{path}: no <size> element; it must give <width> and <height>")
    width = int(_number(_child_text(size, "width", path), "width", path))
    height = int(_number(_child_text(size, "height", path), "height", path))
    index = {name: i + 1 for i, name in enumerate(class_names)}
    boxes, labels, difficult, skipped = [], [], [], 0
    for obj in root.findall("object"):
        name = _child_text(obj, "name", path)
        if name not in index:
            raise VOCAnnotationError(
                f"{path}: unknown class name {name!r}; valid names: {', '.join(class_names)}"
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VOCAnnotationError(f"{path}: object {name!r} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            _number(_child_text(bndbox, tag, path), tag, path) for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin or ymax < ymin:
            skipped += 1
            continue
        if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
            raise VOCAnnotationError(
                f"{path}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) of {name!r} lies outside "
                f"the {width}x{height} image; fix the annotation"
            )
        flag = obj.find("difficult")
        difficult.append(flag is not None and (flag.text or "0").strip() == "1")
        boxes.append((max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0), xmax, ymax))
        labels.append(index[name])
    record = ImageRecord(
        image_id=Path(path).stem,
        image_path=image_path,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )
    return record, skipped


def _image_set_files(voc_parent: Path, year: str, image_set: str) -> tuple[list[str], list[str]]:
    """(image paths, annotation paths) of one VOC image set, via torchvision's VOCDetection."""
    from torchvision.datasets import VOCDetection

    list_file = voc_parent / "VOCdevkit" / f"VOC{year}" / "ImageSets" / "Main" / f"{image_set}.txt"
    if not list_file.is_file():
        raise VOCAnnotationError(f"{list_file}: image set file not found")
    voc = VOCDetection(str(voc_parent), year=year, image_set=image_set)
    if not voc.images:
        raise VOCAnnotationError(f"{list_file}: the image set is empty; it must list image ids")
    return voc.images, voc.annotations


class VOCDetectionSet(Dataset):
    """VOC-layout detection images with parsed targets; item = (PIL RGB image, target dict).

    ``target``: ``boxes`` float (N, 4), ``labels`` int64 (N,) in 1..K, ``difficult`` bool (N,),
    ``image_id`` str. ``transforms(image, target)`` is applied when given.
    """

    def __init__(
        self,
        voc_parent: str | os.PathLike,
        parts: Sequence[tuple[str, str]],
        class_names: Sequence[str],
        transforms: Callable[[Any, dict], tuple[Any, dict]] | None = None,
    ):
        self.classes = tuple(class_names)
        self.transforms = transforms
        self.records: list[ImageRecord] = []
        self.skipped_degenerate = 0
        for year, image_set in parts:
            images, annotations = _image_set_files(Path(voc_parent), year, image_set)
            for image_path, annotation_path in zip(images, annotations):
                record, skipped = parse_annotation(annotation_path, image_path, self.classes)
                self.records.append(record)
                self.skipped_degenerate += skipped
        if self.skipped_degenerate:
            log.warning(
                "skipped %d degenerate boxes (xmax < xmin or ymax < ymin) under %s",
                self.skipped_degenerate,
                voc_parent,
            )

    def __len__(self) -> int:
        return len(self.records)

    def target(self, i: int) -> dict[str, Any]:
        """The target of image ``i`` without loading the image."""
        record = self.records[i]
        return {
            "boxes": torch.from_numpy(record.boxes.copy()),
            "labels": torch.from_numpy(record.labels.copy()),
            "difficult": torch.from_numpy(record.difficult.copy()),
            "image_id": record.image_id,
        }

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        image = Image.open(self.records[i].image_path).convert("RGB")
        target = self.target(i)
        return self.transforms(image, target) if self.transforms else (image, target)


def image_set_problems(voc: Path, image_set: str, fix: str) -> list[str]:
    """The annotation and image of every id in ``voc``'s ``ImageSets/Main/<image_set>.txt``
    exist and are not empty."""
    list_file = voc / "ImageSets" / "Main" / f"{image_set}.txt"
    files = [voc / folder / f"{image_id}{suffix}" for image_id in list_lines(list_file)
             for folder, suffix in (("Annotations", ".xml"), ("JPEGImages", ".jpg"))]
    return listed_file_problems(list_file, files, fix)

