"""Detector inputs: image tensors in [0, 1], detectron2's random flip, an endless sharded sampler."""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Sampler
from torchvision.transforms.functional import to_tensor


class DetectionInput:
    """(PIL image, target) -> (float image (C, H, W) in [0, 1], target); ``flip`` mirrors half
    the images and their boxes (torch's global generator, so a seeded run repeats)."""

    def __init__(self, channels: int, flip: bool):
        if channels not in (1, 3):
            raise ValueError(f"detector input must have 1 or 3 channels, not {channels}")
        self.mode, self.flip = ("L" if channels == 1 else "RGB"), flip

    def __call__(self, image: Any, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        tensor = to_tensor(image.convert(self.mode))
        if self.flip and bool(torch.rand(()) < 0.5):
            width, boxes = tensor.shape[-1], target["boxes"]
            tensor = tensor.flip(-1)
            flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
            target = {**target, "boxes": flipped}
        return tensor, target


def collate_detection(batch: Sequence[tuple[Any, Any]]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Keep images of different sizes apart: (images, targets)."""
    images, targets = zip(*batch)
    return images, targets


class EndlessShardedSampler(Sampler[int]):
    """Indices of ``indices`` reshuffled every pass, forever; rank r of w takes every w-th one.

    Every rank draws the same permutation from ``seed``, so the shards never overlap. ``start``
    skips that many of this rank's first indices (a resumed run continues the same stream).
    """

    def __init__(self, indices: Sequence[int], seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0):
        if len(indices) == 0:
            raise ValueError("no training image has a box; the detection training set is empty")
        self.indices = torch.as_tensor(list(indices), dtype=torch.int64)
        self.seed, self.rank, self.world_size, self.start = seed, rank, world_size, start

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed)
        skip = self.start
        while True:
            order = self.indices[torch.randperm(len(self.indices), generator=generator)]
            shard = order[self.rank :: self.world_size]
            if skip >= len(shard):
                skip -= len(shard)
                continue
            yield from shard[skip:].tolist()
            skip = 0
