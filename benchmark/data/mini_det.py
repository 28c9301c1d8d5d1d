"""The mini detection set: VOC-layout canvases of 1-4 Fashion-MNIST items (10 classes), drawn
deterministically under ``<root>/mini_det`` (``VOCdevkit/VOC2007``) and stamped with the
parameters it was drawn with, so a rerun keeps a good set and redraws a damaged one.

Splits: ``trainval`` (items from Fashion-MNIST's train split) and ``test`` (from its test split).
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from benchmark.core.atomic import make_temp_dir
from benchmark.data import fashion_mnist
from benchmark.data.integrity import line_count_problems
from benchmark.data.registry import DatasetSpec, register_dataset
from benchmark.data.voc_format import VOCDetectionSet, image_set_problems

MINI_DET_CLASSES = (
    "tshirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankleboot",
)  # fmt: skip
SPLIT_PARTS = {"trainval": (("2007", "trainval"),), "test": (("2007", "test"),)}


@dataclass(frozen=True)
class MiniDetParams:
    """How the mini detection set is drawn (all of it, so the stamp file can check a rerun)."""

    seed: int = 0
    trainval_images: int = 1000
    test_images: int = 200
    canvas_min: int = 96
    canvas_max: int = 160
    items_min: int = 1
    items_max: int = 4
    scale_min: int = 24  # side of the resized 28x28 frame, pixels
    scale_max: int = 64
    difficult_below: int = 28  # items drawn below native resolution are marked difficult
    max_iou: float = 0.2  # placements overlapping an earlier item more than this are redrawn
    tries: int = 20


def _mini_root(root: Path) -> Path:
    return Path(root) / "mini_det"


def _mini_location(root: Path) -> Path:
    return _mini_root(root) / "VOCdevkit" / "VOC2007"


STAMP = "mini_det.json"


def _mini_problems(root: Path) -> list[str]:
    voc = _mini_location(root)
    missing = [
        str(voc / "ImageSets" / "Main" / f"{s}.txt")
        for s in ("trainval", "test")
        if not (voc / "ImageSets" / "Main" / f"{s}.txt").is_file()
    ]
    return [f"missing {', '.join(missing)}"] if missing else []


def mini_fix(root: Path) -> str:
    """How to redraw a damaged mini detection set (``prepare`` alone keeps a stamped one)."""
    return (f"delete {_mini_root(root)} and run `python -m benchmark data prepare mini_det "
            f"--data-root {root}`")


def _mini_contents(root: Path) -> list[str]:
    """Every listed image and annotation present, and as many of them as the stamp records."""
    voc, fix = _mini_location(root), mini_fix(root)
    try:
        drawn = json.loads((_mini_root(root) / STAMP).read_text())
        counts = {"trainval": int(drawn["trainval_images"]), "test": int(drawn["test_images"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"corrupt: {_mini_root(root) / STAMP}, expected the JSON parameters the set was "
                f"drawn with, found an unreadable stamp ({exc}); {fix}"]
    problems = []
    for image_set, expected in counts.items():
        problems += line_count_problems(voc / "ImageSets" / "Main" / f"{image_set}.txt", expected, fix)
        problems += image_set_problems(voc, image_set, fix)
    return problems


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) inclusive pixel bounds of the True pixels, or None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])


def _iou(a: Sequence[float], b: np.ndarray) -> np.ndarray:
    """IoU of one inclusive pixel box ``a`` with each row of ``b`` (inclusive pixel boxes)."""
    if len(b) == 0:
        return np.zeros(0)
    b = np.asarray(b, dtype=np.float64)
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]) + 1, 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]) + 1, 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
    return inter / (area(np.asarray(a, dtype=np.float64)) + area(b) - inter)


def _draw_canvas(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, p: MiniDetParams
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One canvas (uint8 HxW) and its objects (class index, 1-based inclusive box, difficult)."""
    height, width = rng.integers(p.canvas_min, p.canvas_max + 1, size=2)
    canvas = np.zeros((height, width), dtype=np.uint8)
    objects: list[dict[str, Any]] = []
    for _ in range(int(rng.integers(p.items_min, p.items_max + 1))):
        for _ in range(p.tries):
            k = int(rng.integers(len(images)))
            side = int(rng.integers(p.scale_min, p.scale_max + 1))
            item = np.asarray(Image.fromarray(images[k]).resize((side, side), Image.BILINEAR))
            bounds = _tight_box(item > 0)
            if bounds is None:
                continue
            x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
            box = (x + bounds[0], y + bounds[1], x + bounds[2], y + bounds[3])
            taken = np.array([o["box"] for o in objects]).reshape(-1, 4)
            if (_iou(box, taken) > p.max_iou).any():
                continue
            np.maximum(canvas[y : y + side, x : x + side], item, out=canvas[y : y + side, x : x + side])
            objects.append({"label": int(labels[k]), "box": box, "difficult": side < p.difficult_below})
            break
    return canvas, objects


def _annotation_xml(image_id: str, width: int, height: int, objects: list[dict[str, Any]]) -> bytes:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 1)):
        ET.SubElement(size, tag).text = str(value)
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = MINI_DET_CLASSES[obj["label"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "1" if obj["difficult"] else "0"
        bndbox = ET.SubElement(node, "bndbox")
        # XML boxes are 1-based inclusive pixels, as in VOC
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj["box"]):
            ET.SubElement(bndbox, tag).text = str(value + 1)
    return ET.tostring(root)


def _write_split(
    voc: Path, split: str, ids: list[str], source: Any, rng: np.random.Generator, p: MiniDetParams
) -> None:
    images, labels = source.data.numpy(), source.targets.numpy()
    presence = np.full((len(ids), len(MINI_DET_CLASSES)), -1, dtype=np.int64)
    for row, image_id in enumerate(ids):
        canvas, objects = _draw_canvas(rng, images, labels, p)
        Image.fromarray(canvas, mode="L").save(voc / "JPEGImages" / f"{image_id}.jpg", quality=95)
        xml = _annotation_xml(image_id, canvas.shape[1], canvas.shape[0], objects)
        (voc / "Annotations" / f"{image_id}.xml").write_bytes(xml)
        for obj in objects:  # VOC classification lists: 1 present, 0 only difficult, -1 absent
            presence[row, obj["label"]] = max(presence[row, obj["label"]], 0 if obj["difficult"] else 1)
    main = voc / "ImageSets" / "Main"
    (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    for c, name in enumerate(MINI_DET_CLASSES):
        lines = "".join(f"{i} {v:2d}\n" for i, v in zip(ids, presence[:, c]))
        (main / f"{name}_{split}.txt").write_text(lines)


def prepare_mini_det(root: Path, params: MiniDetParams = MiniDetParams()) -> Path:
    """Draw the mini detection set under ``root/mini_det`` (idempotent, deterministic in ``seed``).

    Items of the trainval images come from Fashion-MNIST's train split, those of the test
    images from its test split (prepared first when absent). Returns the VOC2007 folder.
    """
    from torchvision.datasets import FashionMNIST

    root = Path(root)
    target = _mini_root(root)
    stamp = target / STAMP
    wanted = json.dumps(params.__dict__, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == wanted and not _mini_problems(root):
        return _mini_location(root)
    if fashion_mnist.SPEC.check(root):
        fashion_mnist.prepare(root)
    work = make_temp_dir(root, ".mini_det.")
    voc = work / "VOCdevkit" / "VOC2007"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(params.seed)
    n_train = params.trainval_images
    splits = (
        ("trainval", [f"{i:06d}" for i in range(1, n_train + 1)], True),
        ("test", [f"{i:06d}" for i in range(n_train + 1, n_train + params.test_images + 1)], False),
    )
    for split, ids, train in splits:
        source = FashionMNIST(str(root), train=train, download=False)
        _write_split(voc, split, ids, source, rng, params)
    (work / STAMP).write_text(wanted)
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    return _mini_location(root)


MINI_SPEC = register_dataset(
    DatasetSpec(
        name="mini_det",
        summary=(
            "mini VOC-format detection set: 96-160 px canvases with 1-4 Fashion-MNIST items "
            "(10 classes), 1000 trainval / 200 test images"
        ),
        num_classes=len(MINI_DET_CLASSES),
        splits=("trainval", "test"),
        location=_mini_location,
        problems=_mini_problems,
        how_to_get=(
            "run `python -m benchmark data prepare mini_det --data-root ROOT` (draws it from "
            "Fashion-MNIST, which it prepares first from Debian's dataset-fashion-mnist)"
        ),
        builder=lambda root, split, transform=None, **kw: VOCDetectionSet(
            _mini_root(root), SPLIT_PARTS[split], MINI_DET_CLASSES, transforms=transform
        ),
        prepare=prepare_mini_det,
        contents=_mini_contents,
    )
)
