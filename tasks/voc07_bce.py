"""VOC07 classification by InvP's ``downstream/voc_linear.py`` (docs/protocols.md §InvP BCE probe).

Linear(8192, 20) on layer4's second block pooled to 2x2, BCE per class with difficult masked,
summed over classes and divided by the batch size; SGD lr 3.0, batch 16, 1,900 iterations, lr
x0.5 every 760; sklearn AP after the last iteration. Batches come epoch by epoch from a fresh
shuffle of trainval, the last partial batch included (the script's DataLoader).

``features: online`` (the original): every training image is augmented anew (flip +
RandomResizedCrop(``crop``, ``crop_scale`` 0.2-1)) and run through the frozen trunk at every
iteration; the test images get Resize + a random flip + CenterCrop, as the script does.
``features: cached``: features of the evaluation transform, extracted once and shared with the
other VOC07 protocols (a deviation: the original augments every iteration).
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterator, Mapping

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import transforms as T

from benchmark.core.fields import Choice, Float, Int
from tasks.base import Measurement, TaskContext, register
from tasks.common import FEATURE_MODES, SPLIT_FIELDS, load_split, task_settings
from tasks.features import (
    LAYER,
    FeatureLayer,
    check_layers,
    context_features,
    feature_batches,
    gather_features,
    layer_vectors,
    resolve_layers,
)
from tasks.metrics import mean_ap, sklearn_ap
from tasks.probe import single_thread_on_cpu
from tasks.transforms import eval_transform, train_transform
from tasks.voc07 import DATASET, VOC07Task

TEST_BATCH = 256  # voc_linear.py's test loader
Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def cached_batches(x: torch.Tensor, targets: torch.Tensor, batch: int, seed: int) -> Batches:
    """Endless (features, targets) batches of cached rows, epoch by epoch (shuffled, the last
    partial batch kept)."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            yield x[idx], targets[idx]


def online_batches(
    loader: DataLoader, backbone: nn.Module, layer: FeatureLayer, device: torch.device | str
) -> Batches:
    """Endless (features, targets) batches: ``loader``'s augmented images through the trunk."""
    while True:
        for images, targets in loader:
            (vectors,) = layer_vectors(backbone, images.to(device), [layer])
            yield vectors, targets


def train_bce_head(batches: Batches, s: Mapping[str, Any], device: torch.device | str,
                   seed: int) -> nn.Linear:
    """voc_linear.py's head: Linear on the features, masked BCE (difficult = 0 in the targets),
    SGD with lr x``gamma`` every ``step_every`` iterations, ``iterations`` batches."""
    torch.manual_seed(seed)
    x, targets = next(batches)
    head = nn.Linear(x.shape[1], targets.shape[1]).to(device)
    optimizer = torch.optim.SGD(head.parameters(), lr=float(s["lr"]), momentum=float(s["momentum"]),
                                weight_decay=float(s["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, int(s["step_every"]), float(s["gamma"]))
    for iteration in range(int(s["iterations"])):
        if iteration:
            x, targets = next(batches)
        x, targets = x.to(device).float(), targets.to(device)
        known = (targets != 0).float()
        loss = nn.functional.binary_cross_entropy_with_logits(
            head(x), (targets == 1).float(), weight=known, reduction="sum"
        ) / len(x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return head


@register
class VOC07BCETask(VOC07Task):
    name = "voc07_bce"
    resource_kind = "online_probe"  # a head on augmented images through the frozen trunk
    summary = "InvP's BCE linear layer on layer4.1 pooled 2x2 (8192-d), sklearn mAP"
    protocol = "InvP voc_linear.py (docs/protocols.md §InvP BCE probe): SGD lr 3.0, batch 16, 1900 it, x0.5 / 760, masked BCE, augmented every iteration"
    defaults: ClassVar[dict[str, Any]] = {
        "layer": "layer4.1@2",
        "features": "online",
        "crop_scale": [0.2, 1.0],
        "lr": 3.0,
        "momentum": 0.9,
        "weight_decay": 1e-6,
        "batch_size": 16,
        "iterations": 1900,
        "step_every": 760,
        "gamma": 0.5,
        "dataset": DATASET,
        "train_split": "trainval",
        "test_split": "test",
    }
    settings_fields = {
        "layer": LAYER,
        "features": Choice(FEATURE_MODES),
        "lr": Float(gt=0),
        "momentum": Float(ge=0, lt=1),
        "weight_decay": Float(ge=0),
        "batch_size": Int(ge=1),
        "iterations": Int(ge=1),
        "step_every": Int(ge=1),
        "gamma": Float(gt=0),
        **SPLIT_FIELDS,
    }

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        backbone = ctx.encoder.load(ctx.device)
        (layer,) = resolve_layers(s["layer"], backbone, {}, ctx.encoder.kind)
        check_layers(backbone, [layer])
        run = self._online if s["features"] == "online" else self._cached
        with single_thread_on_cpu(ctx.device):  # small batches: more threads only contend
            scores, test_t = run(ctx, s, backbone, layer)
        value, per_class = mean_ap(scores, test_t, sklearn_ap, "exclude")
        extra = {"layer": layer.name, "iterations": int(s["iterations"]),
                 "per_class_ap": per_class, "evaluated": "after the last iteration",
                 "features": s["features"] if s["features"] == "online" else
                 "cached (deviation: the original augments every iteration)"}
        return [Measurement("map", value, s["dataset"], s["test_split"], extra)]

    @staticmethod
    def _cached(ctx: TaskContext, s: dict[str, Any], backbone: nn.Module,
                layer: FeatureLayer) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = s["dataset"]
        train, train_t = context_features(ctx, s, dataset, s["train_split"], [layer], backbone)
        test, test_t = context_features(ctx, s, dataset, s["test_split"], [layer], backbone)
        batches = cached_batches(train[layer.name], train_t, int(s["batch_size"]), ctx.seed)
        head = train_bce_head(batches, s, ctx.device, ctx.seed)
        with torch.no_grad():
            return head(test[layer.name].to(ctx.device).float()).cpu(), test_t

    @staticmethod
    def _online(ctx: TaskContext, s: dict[str, Any], backbone: nn.Module,
                layer: FeatureLayer) -> tuple[torch.Tensor, torch.Tensor]:
        dataset, workers = s["dataset"], int(ctx.config.tree["data"]["num_workers"])
        train = load_split(ctx, dataset, s["train_split"], train_transform(dataset, s))
        loader = DataLoader(train, batch_size=int(s["batch_size"]), shuffle=True,
                            num_workers=workers, generator=torch.Generator().manual_seed(ctx.seed))
        backbone.eval()
        head = train_bce_head(online_batches(loader, backbone, layer, ctx.device), s, ctx.device,
                              ctx.seed)
        flipped = T.Compose([T.RandomHorizontalFlip(), eval_transform(dataset, s)])
        test = load_split(ctx, dataset, s["test_split"], flipped)
        torch.manual_seed(ctx.seed)  # the test flips
        (test_x,), test_t = gather_features(feature_batches(backbone, test, [layer], ctx.device,
                                                             TEST_BATCH, workers))
        with torch.no_grad():
            return head(test_x.to(ctx.device).float()).cpu(), test_t
