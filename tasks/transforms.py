"""Image transforms of the evaluation protocols.

A task's ``transform`` setting picks the family:

- ``imagenet`` (default for natural-image datasets): evaluation Resize ``resize`` (256) +
  CenterCrop ``crop`` (224), or with ``eval_resize: warp`` Resize then Resize to crop x crop
  (VISSL's VOC SVMs); training RandomResizedCrop(``crop``, ``crop_scale``) + flip; ImageNet
  mean/std. ``resize``/``crop`` shrink the sizes (tests, small backbones).
- ``gray``: the same geometry on one channel with Fashion-MNIST mean/std (the mini profile's
  backbone on the mini detection set's grayscale canvases).
- ``recipe:<name>``: the clean transform of pretraining recipe ``<name>`` in
  ``benchmark/data/augment.py`` (e.g. ``recipe:cifar``); training adds, per ``recipe_augment``,
  RandomCrop with padding (+ flip for colour images; ``pad_crop_flip``, the default) or a
  horizontal flip only (``flip``: InvP's CIFAR linear probe, ``datasets/cifar.py``
  ``get_linear_dataloader``). Fashion-MNIST and digits default to ``recipe:mini``.

Each transform's ``repr`` is part of the feature-cache key.
"""
from __future__ import annotations

from typing import Any, Mapping

from PIL import Image
from torchvision import transforms as T

from benchmark.core.fields import Pattern
from benchmark.data.augment import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    get_recipe,
)

RECIPE_DEFAULTS = {"fashion_mnist": "recipe:mini", "digits": "recipe:mini"}
TRANSFORM = Pattern(r"imagenet|gray|recipe:.+", "imagenet, gray or recipe:<name>")  # the setting
EVAL_RESIZES = ("center_crop", "warp")
RECIPE_AUGMENTS = ("pad_crop_flip", "flip")  # the training augmentation of the recipe family
# the geometry settings a task does not set: the ImageNet protocol's (Resize 256, crop 224)
TRANSFORM_DEFAULTS = {"resize": 256, "crop": 224, "crop_scale": (0.08, 1.0), "eval_resize": "center_crop",
                      "recipe_augment": "pad_crop_flip"}


class ConvertMode:
    """Convert a PIL image to ``mode`` (Caltech101 ships grayscale files; torchvision keeps them
    L; mini_det canvases are L)."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


def transform_settings(dataset: str, settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """``settings`` over the defaults: ``TRANSFORM_DEFAULTS`` and the dataset's family."""
    return {"transform": RECIPE_DEFAULTS.get(dataset, "imagenet"), **TRANSFORM_DEFAULTS, **(settings or {})}


def _family(settings: Mapping[str, Any]) -> str:
    family = str(settings["transform"])
    if not TRANSFORM.accepts(family):
        raise ValueError(f"transform must be {TRANSFORM.expected()}, not {family!r}")
    return family


def _colour(family: str) -> tuple[ConvertMode, T.Normalize]:
    if family == "gray":
        return ConvertMode("L"), T.Normalize(FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return ConvertMode("RGB"), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def eval_transform(dataset: str, settings: Mapping[str, Any] | None = None) -> T.Compose:
    """Deterministic evaluation transform for ``dataset`` under a task's ``settings``."""
    settings = transform_settings(dataset, settings)
    family = _family(settings)
    if family.startswith("recipe:"):
        return get_recipe(family.split(":", 1)[1]).eval()
    resize, crop = int(settings["resize"]), int(settings["crop"])
    mode = settings["eval_resize"]
    if mode == "center_crop":
        geometry = [T.Resize(resize), T.CenterCrop(crop)]
    elif mode == "warp":
        geometry = [T.Resize(resize), T.Resize((crop, crop))]
    else:
        raise ValueError(f"eval_resize must be one of {', '.join(EVAL_RESIZES)}, not {mode!r}")
    convert, normalize = _colour(family)
    return T.Compose([convert, *geometry, T.ToTensor(), normalize])


def eval_input_shape(dataset: str, settings: Mapping[str, Any] | None = None) -> tuple[int, int, int]:
    """(channels, height, width) of the tensors ``eval_transform`` gives, known without reading an
    image: the recipe's input shape, or the crop on the family's channels."""
    settings = transform_settings(dataset, settings)
    family = _family(settings)
    if family.startswith("recipe:"):
        return get_recipe(family.split(":", 1)[1]).input_shape
    crop = int(settings["crop"])
    return (1 if family == "gray" else 3, crop, crop)


def train_transform(dataset: str, settings: Mapping[str, Any] | None = None) -> T.Compose:
    """Training augmentation (fine-tuning, online probes): random crop (+ flip for colour
    images), or for a recipe family its ``recipe_augment``."""
    settings = transform_settings(dataset, settings)
    family = _family(settings)
    if family.startswith("recipe:"):
        recipe = get_recipe(family.split(":", 1)[1])
        channels, size, _ = recipe.input_shape
        augment = settings["recipe_augment"]
        if augment == "flip":
            return T.Compose([T.RandomHorizontalFlip(), *recipe.eval().transforms])
        if augment != "pad_crop_flip":
            raise ValueError(f"recipe_augment must be one of {', '.join(RECIPE_AUGMENTS)}, not {augment!r}")
        flip = [T.RandomHorizontalFlip()] if channels == 3 else []
        return T.Compose([T.RandomCrop(size, padding=size // 8), *flip, *recipe.eval().transforms])
    crop = int(settings["crop"])
    scale = tuple(settings["crop_scale"])
    convert, normalize = _colour(family)
    return T.Compose(
        [
            convert,
            T.RandomResizedCrop(crop, scale=scale),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            normalize,
        ]
    )
