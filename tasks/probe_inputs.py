"""The probe tasks' data as a feature source (tasks/probe_sources.py): the training split less a
held-out part (selection), the held-out part and the test split.

``features: cached`` reads per-layer matrices from the feature cache (tasks/features.py, the
evaluation transform); ``features: online`` runs the frozen trunk on every batch, the training
part under the protocol's training augmentation (tasks/transforms.py ``train_transform``:
RandomResizedCrop + flip for ImageNet-style data, RandomCrop with padding for the small-image
recipes) and the held-out part and the test split under the evaluation transform.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, Subset

from tasks.base import TaskContext
from tasks.common import holdout_split, limited_split, load_split
from tasks.features import FeatureLayer, context_features
from tasks.probe_sources import CachedFeatures, FeatureRows, FrozenTrunk
from tasks.transforms import eval_transform, train_transform

HOLDOUT, TEST = "holdout", "test"  # the evaluation sets


class Transformed(Dataset):
    """``dataset`` (items ``(image, label)``) with ``transform`` applied to the image."""

    def __init__(self, dataset: Dataset, transform: Any):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        image, label = self.dataset[i]
        return self.transform(image), label


def probe_source(ctx: TaskContext, s: dict[str, Any], layers: Sequence[FeatureLayer],
                 backbone: torch.nn.Module) -> CachedFeatures | FrozenTrunk:
    """The source of a probe task with settings ``s`` (``features``: online or cached)."""
    if s["features"] == "cached":
        return _cached(ctx, s, layers, backbone)
    dataset = s["dataset"]
    train = limited_split(ctx, dataset, s["train_split"], None, int(s["train_limit"]))
    fit, held_out = holdout_split(len(train), int(s["holdout"]), int(s["split_seed"]))
    evaluation = eval_transform(dataset, s)
    evals = {HOLDOUT: Transformed(Subset(train, held_out.tolist()), evaluation),
             TEST: load_split(ctx, dataset, s["test_split"], evaluation)}
    augmented = Transformed(Subset(train, fit.tolist()), train_transform(dataset, s))
    return FrozenTrunk(backbone, layers, augmented, evals, ctx.device, ctx.seed,
                       num_workers=int(ctx.config.data["num_workers"]),
                       channels_last=bool(ctx.config.pretrain["channels_last"]))


def _cached(ctx: TaskContext, s: dict[str, Any], layers: Sequence[FeatureLayer],
            backbone: torch.nn.Module) -> CachedFeatures:
    dataset, names = s["dataset"], [layer.name for layer in layers]
    train, train_y = context_features(ctx, s, dataset, s["train_split"], layers, backbone,
                                      int(s["train_limit"]))
    test, test_y = context_features(ctx, s, dataset, s["test_split"], layers, backbone)
    fit, held_out = holdout_split(len(train_y), int(s["holdout"]), int(s["split_seed"]))
    train_features = [train[n] for n in names]
    return CachedFeatures(FeatureRows(train_features, train_y, fit),
                          {HOLDOUT: FeatureRows(train_features, train_y, held_out),
                           TEST: FeatureRows([test[n] for n in names], test_y)}, ctx.device)
