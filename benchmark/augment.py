"""Augmentation recipes by name (method-spec.md §2, "Augmentations"), each with its eval transform.

* ``insdis``: the InsDis ImageNet recipe (no blur), used with the linear head.
* ``mocov2``: the MoCo-v2 recipe with Gaussian blur (the official ``--blur``), MLP head.
* ``cifar``: the InsDis/InvP CIFAR recipe: no flip, ColorJitter with p = 1 (hue 0.4).
* ``mini``: the CIFAR recipe adapted to 28x28 grayscale (Fashion-MNIST statistics): crop scale
  0.2-1, brightness/contrast jitter with p = 1; saturation, hue and grayscale are no-ops on
  one channel and are left out.

Every transform draws its randomness from torch's global generator only, so the engine can seed
each sample's augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torchvision import transforms as T

from benchmark.config import ConfigError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


@dataclass(frozen=True)
class Recipe:
    """A pretraining augmentation, the matching eval transform and the tensor shape both give."""

    train: Callable[[], T.Compose]
    eval: Callable[[], T.Compose]
    input_shape: tuple[int, int, int]


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
    return [T.ToTensor(), T.Normalize(mean, std)]


def _imagenet_eval() -> T.Compose:
    return T.Compose([T.Resize(256), T.CenterCrop(224), *_finish(IMAGENET_MEAN, IMAGENET_STD)])


def _insdis() -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)),
        T.RandomGrayscale(p=0.2),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomHorizontalFlip(),
        *_finish(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _mocov2() -> T.Compose:
    # Blur kernel 23 (~10 % of 224) with sigma in [0.1, 2], as in SimCLR/MoCo-v2.
    return T.Compose([
        T.RandomResizedCrop(224, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        *_finish(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _cifar() -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(32, scale=(0.2, 1.0)),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomGrayscale(p=0.2),
        *_finish(CIFAR_MEAN, CIFAR_STD),
    ])


def _mini() -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(28, scale=(0.2, 1.0)),
        T.ColorJitter(brightness=0.4, contrast=0.4),
        *_finish(FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    ])


RECIPES: dict[str, Recipe] = {
    "insdis": Recipe(_insdis, _imagenet_eval, (3, 224, 224)),
    "mocov2": Recipe(_mocov2, _imagenet_eval, (3, 224, 224)),
    "cifar": Recipe(_cifar, lambda: T.Compose(_finish(CIFAR_MEAN, CIFAR_STD)), (3, 32, 32)),
    "mini": Recipe(_mini, lambda: T.Compose(_finish(FASHION_MNIST_MEAN, FASHION_MNIST_STD)), (1, 28, 28)),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``data.augment``); unknown names list the valid ones."""
    if name not in RECIPES:
        raise ConfigError(
            f"data.augment={name!r} is not a recipe; valid recipes: {', '.join(sorted(RECIPES))}"
        )
    return RECIPES[name]


def train_transform(name: str) -> T.Compose:
    """The pretraining augmentation of recipe ``name``."""
    return get_recipe(name).train()


def eval_transform(name: str) -> T.Compose:
    """The clean (test-time) transform that goes with recipe ``name``."""
    return get_recipe(name).eval()
