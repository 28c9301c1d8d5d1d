"""Feature sources of the probe loop (tasks/probe.py): cached feature matrices, or the frozen
trunk run online on every batch.

- :class:`CachedFeatures`: rows of per-layer (N, D) matrices (in RAM or memory-mapped) by index.
- :class:`FrozenTrunk`: each batch of images (augmented for training, the evaluation transform
  for the evaluation sets) goes once through the frozen trunk (eval mode, no gradients, bf16
  autocast on CUDA, channels_last when asked) and every layer's pooled vector is taken from that
  one pass (tasks/features.py ``layer_vectors``). Nothing proportional to the dataset is held.
  A training item's augmentation is seeded by (seed, epoch, position), so the batches of an
  epoch are the same whatever the number of data-loader workers or ranks, and after a resume.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.features import FeatureLayer, check_layers, layer_vectors

Batch = tuple[list[torch.Tensor], torch.Tensor]  # one (B, D) float tensor per layer, (B,) labels
TRAIN = "train"
SEED_SPAN = 2**32  # positions per (seed, epoch) in the augmentation seeds
MASK64 = 2**64 - 1


@dataclass(frozen=True)
class FeatureRows:
    """Rows ``rows`` (all when None) of per-layer (N, D) feature matrices and their labels."""

    features: Sequence[torch.Tensor]
    labels: torch.Tensor
    rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels) if self.rows is None else len(self.rows)


class CachedFeatures:
    """Cached features of the training set and of each evaluation set, read by row."""

    def __init__(self, train: FeatureRows, evals: Mapping[str, FeatureRows],
                 device: torch.device | str):
        self.parts = {TRAIN: train, **evals}
        self.device = torch.device(device)
        self.train_size = len(train)
        self.eval_sizes = {name: len(part) for name, part in evals.items()}

    def dims(self) -> list[int]:
        return [f.shape[1] for f in self.parts[TRAIN].features]

    def batches(self, part: str, index_batches: Sequence[torch.Tensor], epoch: int) -> Iterator[Batch]:
        source = self.parts[part]
        for idx in index_batches:
            rows = idx if source.rows is None else source.rows[idx]
            yield ([f[rows].to(self.device).float() for f in source.features],
                   source.labels[rows].to(self.device).long())


class SeededItems(Dataset):
    """``dataset`` read by (position, seed) pairs: the item's random transform draws from torch's
    generator seeded with ``seed`` (the caller's generator state is kept)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        position, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            return self.dataset[position]


class IndexBatches:
    """A batch sampler whose batches are set before each pass (one loader, persistent workers)."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __iter__(self) -> Iterator[list[Any]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def augmentation_seed(seed: int, epoch: int, position: int) -> int:
    """The seed of one training item's augmentation in one epoch: (seed, epoch, position) mixed
    by SplitMix64 and cut to the 32 bits torch's CPU generator uses."""
    z = ((seed * 1_000_003 + epoch) * SEED_SPAN + position + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return (z ^ (z >> 31)) & 0xFFFFFFFF


class FrozenTrunk:
    """Features computed by the frozen ``backbone`` on every batch: ``train`` (its training
    transform) and the evaluation sets ``evals`` (the evaluation transform)."""

    def __init__(self, backbone: torch.nn.Module, layers: Sequence[FeatureLayer], train: Dataset,
                 evals: Mapping[str, Dataset], device: torch.device | str, seed: int,
                 num_workers: int = 0, channels_last: bool = False):
        check_layers(backbone, layers)
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.backbone = backbone.eval().requires_grad_(False)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.layers = list(layers)
        self.seed = seed
        self.train_size = len(train)
        self.eval_sizes = {name: len(data) for name, data in evals.items()}
        self.samplers = {name: IndexBatches() for name in (TRAIN, *evals)}
        datasets = {TRAIN: SeededItems(train), **evals}
        cuda = self.device.type == "cuda"
        self.loaders = {
            name: DataLoader(data, batch_sampler=self.samplers[name], num_workers=num_workers,
                             pin_memory=cuda, persistent_workers=num_workers > 0)
            for name, data in datasets.items()
        }
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
        self._dims: list[int] | None = None

    def dims(self) -> list[int]:
        if self._dims is None:
            name = next(iter(self.eval_sizes), TRAIN)
            feats, _ = next(self.batches(name, [torch.zeros(1, dtype=torch.long)], 0))
            self._dims = [f.shape[1] for f in feats]
        return self._dims

    def batches(self, part: str, index_batches: Sequence[torch.Tensor], epoch: int) -> Iterator[Batch]:
        for images, labels in self.images(part, index_batches, epoch):
            yield self.vectors(images), torch.as_tensor(labels).to(self.device, non_blocking=True).long()

    def images(self, part: str, index_batches: Sequence[torch.Tensor], epoch: int) -> Iterator[Any]:
        """The loader's (images, labels) batches of ``part``, still on the CPU."""
        batches = [idx.tolist() for idx in index_batches]
        if part == TRAIN:
            batches = [[(p, augmentation_seed(self.seed, epoch, p)) for p in b] for b in batches]
        self.samplers[part].batches = batches
        return iter(self.loaders[part])

    @torch.no_grad()
    def vectors(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's pooled vector of one batch, as float32 on the probe's device."""
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.to(memory_format=torch.channels_last)
        with self.autocast():
            vectors = layer_vectors(self.backbone, images, self.layers)
        return [v.float() for v in vectors]
