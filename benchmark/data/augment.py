"""Augmentation recipes by name (docs/methods/invp.md §Augmentations), each with its eval transform.

* ``insdis``: the InsDis ImageNet recipe (no blur), used with the linear head.
* ``mocov2``: the MoCo-v2 recipe with Gaussian blur (the official ``--blur``), MLP head.
* ``cifar``: the InsDis/InvP CIFAR recipe: no flip, ColorJitter with p = 1 (hue 0.4).
* ``mini``: the CIFAR recipe adapted to 28x28 grayscale (Fashion-MNIST statistics): crop scale
  0.2-1, brightness/contrast jitter with p = 1; saturation, hue and grayscale are no-ops on
  one channel and are left out.
* ``cifar_mocov2``: the MoCo authors' CIFAR-10 demo (``colab/moco_cifar10_demo.ipynb``), in its
  order: RandomResizedCrop(32) (scale 0.08-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) with
  p = 0.8, grayscale p = 0.2 (the MoCo-v2 recipe at 32x32 without blur).
* ``mini_mocov2``: ``cifar_mocov2`` adapted to 28x28 grayscale as ``mini`` adapts ``cifar``
  (crop 0.08-1, flip, brightness/contrast jitter with p = 0.8; the one-channel no-ops left out).

Multi-view methods get ``NamedViews`` of a recipe: one independent draw per view name, each at
its own output side (multi-resolution augmentation: the same RandomResizedCrop family resized to
a smaller side, CLIM; None = the recipe's side).

Every transform draws its randomness from torch's global generator only, so the engine can seed
each sample's augmentation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torchvision import transforms as T

from benchmark.core.config import ConfigError
from benchmark.core.registry import Registry

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


@dataclass(frozen=True)
class Recipe:
    """A pretraining augmentation (of a given output side), the matching eval transform and the
    tensor shape both give at the recipe's own side."""

    train: Callable[[int], T.Compose]
    eval: Callable[[], T.Compose]
    input_shape: tuple[int, int, int]


def _finish(mean: tuple[float, ...], std: tuple[float, ...]) -> list:
    return [T.ToTensor(), T.Normalize(mean, std)]


def _imagenet_eval() -> T.Compose:
    return T.Compose([T.Resize(256), T.CenterCrop(224), *_finish(IMAGENET_MEAN, IMAGENET_STD)])


def _insdis(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomGrayscale(p=0.2),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomHorizontalFlip(),
        *_finish(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _mocov2(size: int) -> T.Compose:
    # Blur kernel 23 (~10 % of 224) with sigma in [0.1, 2], as in SimCLR/MoCo-v2.
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        *_finish(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _cifar(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.ColorJitter(0.4, 0.4, 0.4, 0.4),
        T.RandomGrayscale(p=0.2),
        *_finish(CIFAR_MEAN, CIFAR_STD),
    ])


def _mini(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.ColorJitter(brightness=0.4, contrast=0.4),
        *_finish(FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    ])


def _cifar_mocov2(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        *_finish(CIFAR_MEAN, CIFAR_STD),
    ])


def _mini_mocov2(size: int) -> T.Compose:
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4)], p=0.8),
        *_finish(FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    ])


def _cifar_eval() -> T.Compose:
    return T.Compose(_finish(CIFAR_MEAN, CIFAR_STD))


def _mini_eval() -> T.Compose:
    return T.Compose(_finish(FASHION_MNIST_MEAN, FASHION_MNIST_STD))


RECIPES: Registry[Recipe] = Registry("recipe", key="data.augment")
RECIPES.add("insdis", Recipe(_insdis, _imagenet_eval, (3, 224, 224)))
RECIPES.add("mocov2", Recipe(_mocov2, _imagenet_eval, (3, 224, 224)))
RECIPES.add("cifar", Recipe(_cifar, _cifar_eval, (3, 32, 32)))
RECIPES.add("cifar_mocov2", Recipe(_cifar_mocov2, _cifar_eval, (3, 32, 32)))
RECIPES.add("mini", Recipe(_mini, _mini_eval, (1, 28, 28)))
RECIPES.add("mini_mocov2", Recipe(_mini_mocov2, _mini_eval, (1, 28, 28)))


class NamedViews:
    """Several independently augmented views of one image, by name (in the order given)."""

    def __init__(self, transforms: Mapping[str, Callable[[Any], Any]]):
        if not transforms:
            raise ValueError("NamedViews needs at least one view")
        self.transforms = dict(transforms)

    def __call__(self, image: Any) -> dict[str, Any]:
        return {name: transform(image) for name, transform in self.transforms.items()}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (``data.augment``); unknown names list the valid ones."""
    return RECIPES.get(name)


def train_transform(name: str, views: Mapping[str, int | None] | tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """The pretraining augmentation of recipe ``name``; with ``views`` (names, or output side by
    name, None = the recipe's side), a dict of that many independent draws by view name."""
    recipe = get_recipe(name)
    default = recipe.input_shape[-1]
    if not views:
        return recipe.train(default)
    sizes = views if isinstance(views, Mapping) else dict.fromkeys(views)
    bad = {view: size for view, size in sizes.items() if size is not None and not 1 <= size <= default}
    if bad:
        raise ConfigError(f"view sizes {bad} must be in [1, {default}] (the side of data.augment={name!r})")
    return NamedViews({view: recipe.train(default if size is None else size) for view, size in sizes.items()})


def eval_transform(name: str) -> T.Compose:
    """The clean (test-time) transform that goes with recipe ``name``."""
    return get_recipe(name).eval()
