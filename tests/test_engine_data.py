"""Pretraining data: recipes, seeded per-sample augmentation, subsets and the resumable sampler."""
from __future__ import annotations

import engine_support as es
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from benchmark.core.config import ConfigError
from benchmark.core.distributed import DistContext
from benchmark.data.augment import eval_transform, get_recipe, train_transform
from benchmark.engine.data import (
    ResumableDistributedSampler,
    SeededAugmentation,
    build_train_loader,
    split_indices,
)
from benchmark.engine.pretrain import prepare_run


def _images(n: int) -> list[tuple[Image.Image, int]]:
    rng = np.random.default_rng(0)
    return [(Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)), i % 10) for i in range(n)]


def test_recipes_follow_the_spec() -> None:
    cifar = [type(t) for t in train_transform("cifar").transforms]
    assert T.RandomHorizontalFlip not in cifar and T.RandomApply not in cifar  # no flip, jitter p = 1
    mocov2 = train_transform("mocov2").transforms
    blurs = [t for t in mocov2 if isinstance(t, T.RandomApply) and isinstance(t.transforms[0], T.GaussianBlur)]
    assert len(blurs) == 1 and blurs[0].p == 0.5
    assert T.RandomHorizontalFlip in [type(t) for t in train_transform("insdis").transforms]
    image = _images(1)[0][0]
    assert train_transform("mini")(image).shape == eval_transform("mini")(image).shape == get_recipe("mini").input_shape
    with pytest.raises(ConfigError, match="data.augment='simclr'.*valid recipes"):
        get_recipe("simclr")


def _describe(transform: T.Compose) -> list[tuple]:
    """Each step's type and parameters (the jitter's ranges, the crop's scale, the p's)."""
    out = []
    for step in transform.transforms:
        if isinstance(step, T.RandomApply):
            jitter = step.transforms[0]
            out.append(("apply", step.p, type(jitter).__name__, jitter.brightness, jitter.contrast,
                        jitter.saturation, jitter.hue))
        elif isinstance(step, T.RandomResizedCrop):
            out.append(("crop", step.size, step.scale, step.ratio))
        else:
            out.append((type(step).__name__, getattr(step, "p", None)))
    return out


def test_cifar_mocov2_is_the_moco_cifar_demo() -> None:
    # colab/moco_cifar10_demo.ipynb: RandomResizedCrop(32), RandomHorizontalFlip(p=0.5),
    # RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(p=0.2), ToTensor, Normalize.
    demo = T.Compose([
        T.RandomResizedCrop(32), T.RandomHorizontalFlip(p=0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.ToTensor(), T.Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])])
    ours = train_transform("cifar_mocov2")
    assert _describe(ours) == _describe(demo)
    assert [list(ours.transforms[-1].mean), list(ours.transforms[-1].std)] == [demo.transforms[-1].mean, demo.transforms[-1].std]
    mini = _describe(train_transform("mini_mocov2"))
    assert mini[0][2] == (0.08, 1.0) and mini[1][0] == "RandomHorizontalFlip"  # same crop, flip first


def test_augmentation_is_seeded_per_sample_and_epoch() -> None:
    data = SeededAugmentation(_images(4), [0, 1, 2, 3], train_transform("mini"), seed=5)
    data.epoch = 1
    first = [data[i][0] for i in range(4)]
    torch.rand(10)  # global RNG use in between must not matter
    assert all(torch.equal(first[i], data[i][0]) for i in reversed(range(4)))
    assert data[2][1] == 2
    data.epoch = 2
    assert not torch.equal(first[0], data[0][0])
    before = torch.get_rng_state()
    data[0]
    assert torch.equal(before, torch.get_rng_state()), "augmentation consumed the global RNG"


def test_persistent_workers_see_each_new_epoch() -> None:
    """A worker started in epoch 1 and kept for epoch 2 augments epoch 2 as the main process does."""
    data = SeededAugmentation(_images(8), range(8), train_transform("mini"), seed=5)
    cpu = DistContext(0, 1, 0, torch.device("cpu"))

    def epochs(workers: int) -> list[torch.Tensor]:
        loader = build_train_loader(data, 4, cpu, seed=0, num_workers=workers, drop_last=False, replacement=False)
        assert loader.persistent_workers == (workers > 0)
        out = []
        for epoch in (1, 2):
            data.epoch = epoch
            loader.sampler.set_epoch(epoch)
            out += [images for images, _ in loader]
        return out

    in_process, with_worker = epochs(0), epochs(1)
    assert not torch.equal(in_process[0], in_process[2])  # the epochs differ (and so must the worker's)
    assert all(torch.equal(a, b) for a, b in zip(in_process, with_worker, strict=True))


def test_split_is_seeded_disjoint_and_checked() -> None:
    train, holdout = split_indices(100, 60, 20, seed=1)
    assert len(train) == 60 and len(holdout) == 20 and not set(train.tolist()) & set(holdout.tolist())
    assert torch.equal(train, split_indices(100, 60, 20, seed=1)[0])
    assert not torch.equal(train, split_indices(100, 60, 20, seed=2)[0])
    assert len(split_indices(100, 0, 20, seed=1)[0]) == 80  # 0 = every image not held out
    with pytest.raises(ConfigError, match="data.train_subset=90 plus pretrain.monitor.holdout=20"):
        split_indices(100, 90, 20, seed=1)


def test_sampler_resumes_mid_epoch_and_shards_cover_the_data() -> None:
    data = list(range(20))
    sampler = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=0)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.start = 8
    assert list(sampler) == full[8:]
    assert list(sampler) == full  # the offset applies once
    shards = []
    for rank in (0, 1):
        shard = ResumableDistributedSampler(data, num_replicas=2, rank=rank, seed=0)
        shard.set_epoch(3)
        shards.append(list(shard))
    assert shards[0] == full[0::2] and shards[1] == full[1::2]


def test_sampler_with_replacement_draws_n_seeded_indices_per_epoch() -> None:
    # mmselfsup 0.x DistributedSampler(replace=True): torch.randint(N, (N,)) seeded by epoch + seed.
    data = list(range(20))
    sampler = ResumableDistributedSampler(data, num_replicas=1, rank=0, seed=4, replacement=True)
    sampler.set_epoch(3)
    full = list(sampler)
    assert full == torch.randint(20, (20,), generator=torch.Generator().manual_seed(7)).tolist()
    assert len(set(full)) < 20  # some images twice, some not at all
    sampler.start = 5
    assert list(sampler) == full[5:]
    sampler.set_epoch(4)
    assert list(sampler) != full
    shards = [ResumableDistributedSampler(data, 2, rank, seed=4, replacement=True) for rank in (0, 1)]
    for shard in shards:
        shard.set_epoch(3)
    assert [list(s) for s in shards] == [full[0::2], full[1::2]]


def test_the_loader_draws_with_replacement_when_the_method_says_so(tmp_path, monkeypatch) -> None:
    assert not prepare_run(es.tiny_config(tmp_path), tmp_path / "a", resume="never").sampler.replacement
    monkeypatch.setattr(es.BankDouble, "samples_with_replacement", True)
    assert prepare_run(es.tiny_config(tmp_path), tmp_path / "b", resume="never").sampler.replacement
