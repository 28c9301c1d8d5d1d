"""Pretraining data: the class-blind subset, the monitor's held-out split, seeded augmentation,
a resumable distributed sampler and the training DataLoader over it.

Each sample's augmentation is seeded from (run seed, epoch, sample index), so the augmented
batch a step sees does not depend on the number of DataLoader workers, the number of ranks, or
whether the run was interrupted and resumed. Methods with named views (MoCo v2) get a dict of
independently augmented views per sample, drawn in order from that one seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from benchmark.core.config import ConfigError
from benchmark.core.distributed import DistContext
from benchmark.data import get_dataset
from benchmark.data.augment import eval_transform, train_transform

_MIX = 1_000_003


def split_indices(total: int, train_subset: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded, class-blind draw of ``train_subset`` pretraining indices (0 = every image not
    held out) and ``holdout`` disjoint monitor indices from a split of ``total`` images."""
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    n_train = train_subset if train_subset > 0 else total - holdout
    if n_train + holdout > total or n_train <= 0:
        raise ConfigError(
            f"data.train_subset={train_subset} plus pretrain.monitor.holdout={holdout} exceeds the "
            f"{total} images of the train split; lower one of them"
        )
    return order[:n_train].sort().values, order[n_train : n_train + holdout].sort().values


class TransformedSubset(Dataset):
    """``(transform(image), label)`` for the images ``indices`` of ``base`` (the monitor's clean view)."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable):
        self.base = base
        self.indices = [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Any, int]:
        image, label = self.base[self.indices[position]]
        return self.transform(image), label


class SeededAugmentation(TransformedSubset):
    """``(augmented image, position)`` for the images ``indices`` of ``base``; the augmentation
    of position i in epoch e is seeded from (seed, e, i). Set ``epoch`` before each epoch: it
    lives in shared memory, so persistent DataLoader workers (started in an earlier epoch, each
    with its own copy of the dataset) read the new value too."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable, seed: int):
        super().__init__(base, indices, transform)
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(value)

    def __getitem__(self, position: int) -> tuple[Any, int]:
        image, _ = self.base[self.indices[position]]
        # Seed the CPU generator the transforms draw from, then restore it (torch.manual_seed
        # and fork_rng also touch every accelerator and cost ~50x more per sample).
        generator = torch.default_generator
        saved = generator.get_state()
        generator.manual_seed(((self.seed * _MIX + self.epoch) * _MIX + position) % (2**63))
        try:
            return self.transform(image), position
        finally:
            generator.set_state(saved)


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler whose epoch can start after its first ``start`` samples (the position
    of a mid-epoch checkpoint). ``start`` applies to the next iteration only. ``replacement``:
    each epoch is N draws with replacement (seeded by seed + epoch, as mmselfsup's sampler with
    ``replace=True``) instead of a permutation, split over the ranks the same way."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, replacement: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.replacement = replacement
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        order = (self._drawn_with_replacement() if self.replacement else list(super().__iter__()))[self.start :]
        self.start = 0
        return iter(order)

    def _drawn_with_replacement(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        size = len(self.dataset)  # type: ignore[arg-type]
        drawn = torch.randint(size, (size,), generator=generator).tolist()
        drawn += drawn[: self.total_size - size]
        return drawn[self.rank : self.total_size : self.num_replicas]


def per_rank_batch_size(global_batch: int, world_size: int) -> int:
    """This process's share of ``pretrain.batch_size``; it must split evenly over the processes."""
    if global_batch % world_size:
        raise ConfigError(f"pretrain.batch_size={global_batch} is not divisible by the "
                          f"{world_size} processes; pick a multiple of {world_size}")
    return global_batch // world_size


def bn_batch_warning(global_batch: int, world_size: int, recipe_bn_batch: int) -> str | None:
    """One line saying that BatchNorm sees another number of images per process than the
    recipe's ``pretrain.bn_batch`` (with how to match it), or None when they agree."""
    per_rank = global_batch // world_size
    if per_rank == recipe_bn_batch:
        return None
    ranks = global_batch / recipe_bn_batch
    how = (f"run {int(ranks)} processes or " if ranks == int(ranks) else "") + \
        f"--set pretrain.batch_size={recipe_bn_batch * world_size} (and scale the lr)"
    processes = f"{world_size} process" + ("es" if world_size != 1 else "")
    return (f"warning: BatchNorm normalises over {per_rank} images per process (pretrain.batch_size="
            f"{global_batch} over {processes}), the recipe over {recipe_bn_batch} "
            f"(pretrain.bn_batch); {how} for the recipe's BN statistics")


def build_train_loader(train: SeededAugmentation, batch_size: int, dist: DistContext, seed: int,
                       num_workers: int, drop_last: bool, replacement: bool) -> DataLoader:
    """Batches of ``batch_size`` (per rank) of this rank's share of ``train`` (a
    :class:`ResumableDistributedSampler` seeded by ``seed``, which pads the shares to equal
    lengths; ``replacement``: the method's ``samples_with_replacement``); with ``drop_last`` only
    full ones (the method's ``Method.drop_last``), else the epoch ends with a partial batch, equal
    on every rank. Workers persist across epochs (no restart per epoch); batches go to pinned
    memory when the device is CUDA. Raises ConfigError when an epoch would hold no batch."""
    sampler = ResumableDistributedSampler(train, dist.world_size, dist.rank, seed, replacement)
    if drop_last and len(sampler) // batch_size == 0:
        raise ConfigError(f"data.train_subset gives {len(train)} images, fewer than one batch of "
                          f"pretrain.batch_size={batch_size * dist.world_size}; raise the subset or "
                          "lower the batch")
    return DataLoader(
        train, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        pin_memory=dist.device.type == "cuda", persistent_workers=num_workers > 0,
        generator=torch.Generator(),  # keeps the DataLoader off the global RNG (exact resume)
    )


@dataclass
class PretrainData:
    """What the engine trains on and what its monitor evaluates."""

    train: SeededAugmentation
    train_labels: torch.Tensor
    monitor_train: Dataset  # the pretraining images with the clean transform
    holdout: Dataset
    holdout_labels: torch.Tensor
    num_classes: int
    holdout_augmented: SeededAugmentation  # the held-out images with the pretraining augmentation


def _labels(dataset: Dataset, indices: torch.Tensor) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(f"dataset {type(dataset).__name__} exposes no `targets`; the monitor needs labels")
    return torch.as_tensor(targets)[indices].long()


def build_pretrain_data(cfg: Any, root: Path, views: Mapping[str, int | None] | tuple[str, ...] = ()) -> PretrainData:
    """The pretraining subset and the monitor's held-out split of ``cfg.data.dataset``'s train
    split (never its test split), as configured by ``data`` and ``pretrain.monitor``; ``views``:
    the method's named views, or their output sides by name (() = one augmented tensor per sample)."""
    spec = get_dataset(cfg.data.dataset)
    base = spec.build(root, "train")
    clean = eval_transform(cfg.data.augment)
    train_idx, holdout_idx = split_indices(
        len(base), int(cfg.data.train_subset), int(cfg.pretrain.monitor.holdout), int(cfg.seed)
    )
    return PretrainData(
        train=SeededAugmentation(base, train_idx.tolist(), train_transform(cfg.data.augment, views),
                                 int(cfg.seed)),
        train_labels=_labels(base, train_idx),
        monitor_train=TransformedSubset(base, train_idx.tolist(), clean),
        holdout=TransformedSubset(base, holdout_idx.tolist(), clean),
        holdout_labels=_labels(base, holdout_idx),
        num_classes=spec.num_classes,
        holdout_augmented=SeededAugmentation(base, holdout_idx.tolist(), train_transform(cfg.data.augment),
                                             int(cfg.seed)),
    )
