"""Image transforms of the evaluation protocols.

A task's ``transform`` setting picks the family:

- ``imagenet`` (default for natural-image datasets): evaluation Resize ``resize`` (256) +
  CenterCrop ``crop`` (224), or with ``eval_resize: warp`` Resize then Resize to crop x crop
  (VISSL's VOC SVMs); training RandomResizedCrop(``crop``, ``crop_scale``) + flip; ImageNet
  mean/std. ``resize``/``crop`` shrink the sizes (tests, small backbones).
- ``recipe:<name>``: the clean transform of pretraining recipe ``<name>`` in
  ``benchmark/augment.py`` (e.g. ``recipe:cifar``); training adds RandomCrop with padding
  (+ flip for colour images). Fashion-MNIST and digits default to ``recipe:mini``.

Each transform's ``repr`` is part of the feature-cache key.
"""
from __future__ import annotations

from typing import Any, Mapping

from PIL import Image
from torchvision import transforms as T

from benchmark.augment import IMAGENET_MEAN, IMAGENET_STD, get_recipe

RECIPE_DEFAULTS = {"fashion_mnist": "recipe:mini", "digits": "recipe:mini"}


class ToRGB:
    """Convert a PIL image to RGB (Caltech101 ships grayscale files; torchvision keeps them L)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


def _family(dataset: str, settings: Mapping[str, Any]) -> str:
    family = str(settings.get("transform", RECIPE_DEFAULTS.get(dataset, "imagenet")))
    if family != "imagenet" and not family.startswith("recipe:"):
        raise ValueError(f"transform must be 'imagenet' or 'recipe:<name>', not {family!r}")
    return family


def eval_transform(dataset: str, settings: Mapping[str, Any] | None = None) -> T.Compose:
    """Deterministic evaluation transform for ``dataset`` under a task's ``settings``."""
    settings = settings or {}
    family = _family(dataset, settings)
    if family.startswith("recipe:"):
        return get_recipe(family.split(":", 1)[1]).eval()
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
    """Training augmentation for fine-tuning: random crop (+ flip for colour images)."""
    settings = settings or {}
    family = _family(dataset, settings)
    if family.startswith("recipe:"):
        recipe = get_recipe(family.split(":", 1)[1])
        channels, size, _ = recipe.input_shape
        flip = [T.RandomHorizontalFlip()] if channels == 3 else []
        return T.Compose([T.RandomCrop(size, padding=size // 8), *flip, *recipe.eval().transforms])
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
