"""Image transforms of the evaluation protocols (until ``benchmark/augment.py`` holds them).

Small grayscale datasets of the mini profile use ToTensor + Normalize(0.2860, 0.3530);
everything else uses the ImageNet recipes (Resize 256 + CenterCrop 224 for evaluation,
RandomResizedCrop 224 + flip for training). ``resize``/``crop`` settings shrink the sizes
(tests, small backbones). Each transform's ``repr`` is part of the feature-cache key.
"""
from __future__ import annotations

from typing import Any, Mapping

from PIL import Image
from torchvision import transforms as T

GRAYSCALE_28 = {"fashion_mnist", "digits"}
MINI_MEAN, MINI_STD = (0.2860,), (0.3530,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ToRGB:
    """Convert a PIL image to RGB (Caltech101 ships grayscale files; torchvision keeps them L)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def eval_transform(dataset: str, settings: Mapping[str, Any] | None = None) -> T.Compose:
    """Deterministic evaluation transform for ``dataset`` under a task's ``settings``.

    ``settings.eval_resize``: ``center_crop`` (Resize ``resize`` + CenterCrop ``crop``, the
    default) or ``warp`` (Resize ``resize`` then Resize to ``crop`` x ``crop``: VISSL's VOC SVMs).
    """
    settings = settings or {}
    if dataset in GRAYSCALE_28:
        return T.Compose([T.ToTensor(), T.Normalize(MINI_MEAN, MINI_STD)])
    resize, crop = int(settings.get("resize", 256)), int(settings.get("crop", 224))
    mode = settings.get("eval_resize", "center_crop")
    if mode == "center_crop":
        geometry = [T.Resize(resize), T.CenterCrop(crop)]
    elif mode == "warp":
        geometry = [T.Resize(resize), T.Resize((crop, crop))]
    else:
        raise ValueError(f"eval_resize must be 'center_crop' or 'warp', not {mode!r}")
    return T.Compose([ToRGB(), *geometry, T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def train_transform(dataset: str, settings: Mapping[str, Any] | None = None) -> T.Compose:
    """Training augmentation for fine-tuning: random crop (+ flip for natural images)."""
    settings = settings or {}
    if dataset in GRAYSCALE_28:
        return T.Compose(
            [T.RandomCrop(28, padding=2), T.ToTensor(), T.Normalize(MINI_MEAN, MINI_STD)]
        )
    crop = int(settings.get("crop", 224))
    scale = tuple(settings.get("crop_scale", (0.08, 1.0)))
    return T.Compose(
        [
            ToRGB(),
            T.RandomResizedCrop(crop, scale=scale),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
