"""Whole-network fine-tuning: backbone + linear classifier, SGD with two parameter groups.

Used by the semi-supervised and transfer tasks. The classifier's lr follows the backbone's
schedule unless ``decay_head_lr`` is false (the official semi-supervised script never decays
it); the last partial batch trains unless ``drop_last``; the model after the last step is the
one evaluated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from benchmark.core.distributed import broadcast_in_place, rank_and_world
from benchmark.core.fields import Bool, Choice, Float, Int, ListOf, Spec
from benchmark.core.settings import setting, settings_section
from tasks.errors import TaskNotApplicable
from tasks.probe_sources import augmentation_seed
from tasks.progress import TaskProgress

SCHEDULES = ("step", "cosine")
LOSSES = ("ce", "bce")


@dataclass(frozen=True)
class FinetuneRecipe:
    """Optimisation of one fine-tuning run. Milestones are in epochs (or steps when
    ``steps`` > 0); ``weight_decay_over_lr`` passes wd / lr to SGD (SimCLR/Kornblith grid)."""

    lr: float = setting(spec=Float(gt=0))
    epochs: int = setting(30, Int(ge=1))
    steps: int = setting(0, Int(ge=0))
    batch_size: int = setting(128, Int(ge=1))
    head_lr_mult: float = setting(1.0, Float(gt=0))
    weight_decay: float = setting(0.0, Float(ge=0))
    weight_decay_over_lr: bool = setting(False, Bool())
    momentum: float = setting(0.9, Float(ge=0, lt=1))
    nesterov: bool = setting(False, Bool())
    schedule: str = setting("step", Choice(SCHEDULES))
    milestones: tuple[int, ...] = setting((), ListOf(Int(ge=1)))
    gamma: float = setting(0.1, Float(gt=0))
    loss: str = setting("ce", Choice(LOSSES))  # bce: multi-label, VOC values +1 present, else negative
    decay_head_lr: bool = setting(True, Bool())  # false: the classifier keeps lr x head_lr_mult throughout
    drop_last: bool = setting(True, Bool())  # drop an epoch's last partial batch (when there are two or more)

    @classmethod
    def from_settings(cls, s: Mapping[str, Any], **override: Any) -> "FinetuneRecipe":
        """Recipe from a task's settings (unknown keys are ignored)."""
        values = {**{k: s[k] for k in cls.__dataclass_fields__ if k in s}, **override}
        if "milestones" in values:
            values["milestones"] = tuple(int(m) for m in values["milestones"])
        return cls(**values)


# The settings a fine-tuning task reads into a FinetuneRecipe: type and constraint of each field.
RECIPE_FIELDS: dict[str, Spec] = settings_section(FinetuneRecipe).fields


class Classifier(nn.Module):
    """Backbone features -> Linear(feature_dim, num_classes)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def require_trainable(backbone: nn.Module, kind: str) -> None:
    """Raise TaskNotApplicable when the encoder has nothing to fine-tune (raw pixels)."""
    if not any(p.requires_grad for p in backbone.parameters()):
        raise TaskNotApplicable(
            f"the {kind!r} encoder has no trainable parameters, so fine-tuning does not apply"
        )


def _lr_factor(recipe: FinetuneRecipe, total_steps: int, steps_per_epoch: int):
    unit = 1 if recipe.steps > 0 else steps_per_epoch
    milestones = [m * unit for m in recipe.milestones]
    if recipe.schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    if recipe.schedule == "step":
        return lambda step: recipe.gamma ** sum(step >= m for m in milestones)
    raise ValueError(f"fine-tune schedule must be 'step' or 'cosine', not {recipe.schedule!r}")


def _loss(recipe: FinetuneRecipe, logits: torch.Tensor, targets: torch.Tensor,
          batch_size: int) -> torch.Tensor:
    """The loss of a batch of ``batch_size`` items as the mean over all of them, of which
    ``logits`` are this rank's share (all of them in one process)."""
    reduction = "mean" if len(targets) == batch_size else "sum"
    if recipe.loss == "bce":
        loss = F.binary_cross_entropy_with_logits(logits, (targets == 1).float(), reduction=reduction)
        return loss if reduction == "mean" else loss / (batch_size * logits.shape[1])
    if recipe.loss == "ce":
        loss = F.cross_entropy(logits, targets.long(), reduction=reduction)
        return loss if reduction == "mean" else loss / batch_size
    raise ValueError(f"fine-tune loss must be 'ce' or 'bce', not {recipe.loss!r}")


def _distributed(model: Classifier, device: torch.device | str, world: int) -> nn.Module:
    """The module a rank trains: ``model`` itself alone; else DistributedDataParallel on it (its
    BatchNorm synchronised across ranks on CUDA, so that it normalises over the whole batch as
    one process does; gloo has no SyncBatchNorm)."""
    if world == 1:
        return model
    if torch.device(device).type == "cuda":
        model.backbone = nn.SyncBatchNorm.convert_sync_batchnorm(model.backbone)
        return nn.parallel.DistributedDataParallel(model, device_ids=[torch.device(device)])
    return nn.parallel.DistributedDataParallel(model)


def pin_memory(device: torch.device | str) -> bool:
    """Whether a loader feeding ``device`` pins its batches (CUDA: faster, asynchronous copies)."""
    return torch.device(device).type == "cuda"


def epoch_batches(size: int, batch_size: int, drop_last: bool,
                  generator: torch.Generator) -> list[list[int]]:
    """The index batches of one epoch, as ``DataLoader(shuffle=True, generator=generator)``
    draws them (it takes its workers' base seed from ``generator`` before shuffling), so that an
    epoch can be rebuilt from the generator's state at its start and resumed at any batch."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)
    order = RandomSampler(range(size), generator=generator)
    return list(BatchSampler(order, batch_size, drop_last))


def fine_tune(
    backbone: nn.Module,
    num_classes: int,
    train_set: Dataset,
    recipe: FinetuneRecipe,
    device: torch.device | str,
    seed: int,
    num_workers: int = 0,
    progress: TaskProgress | None = None,
) -> Classifier:
    """Fine-tune ``backbone`` + a new linear head on ``train_set``; returns the final model.
    ``num_workers`` data-loader processes (the job's CPUs less one, see
    benchmark/harness/job_request.py) read it, into pinned memory on CUDA.

    With ``progress`` the run checkpoints after every optimizer step (model, optimizer,
    scheduler, step, the epoch's shuffle and the augmentation RNG; tasks/progress.py) and a
    saved state is resumed exactly (with ``num_workers`` 0: the workers' augmentation RNG
    restarts at a resumed epoch).

    Under torch.distributed every rank draws the same batches and trains on its share of each
    (``batch[rank::world]``) under DistributedDataParallel, the loss scaled to the whole batch's
    mean: the same steps as one process (with the same BatchNorm statistics on CUDA, where it is
    synchronised). Each rank draws its own augmentation (torch's RNG seeded by seed, step and
    rank where it starts or resumes); rank 0 saves the progress, all ranks load it; the
    BatchNorm statistics of rank 0 are given to every rank at the end, so all return one model."""
    rank, world = rank_and_world()
    torch.manual_seed(seed)
    model = Classifier(backbone, num_classes).to(device).train()
    net = _distributed(model, device, world)
    wd = recipe.weight_decay / recipe.lr if recipe.weight_decay_over_lr else recipe.weight_decay
    optimizer = torch.optim.SGD(
        [
            {"params": model.backbone.parameters(), "lr": recipe.lr},
            {"params": model.head.parameters(), "lr": recipe.lr * recipe.head_lr_mult},
        ],
        lr=recipe.lr,
        momentum=recipe.momentum,
        weight_decay=wd,
        nesterov=recipe.nesterov,
    )
    drop_last = recipe.drop_last and len(train_set) > recipe.batch_size
    per_epoch = len(train_set) // recipe.batch_size if drop_last else math.ceil(len(train_set) / recipe.batch_size)
    smallest = recipe.batch_size if drop_last else (len(train_set) % recipe.batch_size or recipe.batch_size)
    if smallest < world:
        raise ValueError(f"a fine-tune batch of {smallest} images cannot be shared by {world} "
                         "processes; set drop_last: true or a batch_size that leaves no such batch")
    total = recipe.steps if recipe.steps > 0 else recipe.epochs * per_epoch
    factor = _lr_factor(recipe, total, per_epoch)
    head_factor = factor if recipe.decay_head_lr else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [factor, head_factor])
    shuffle = torch.Generator().manual_seed(seed)
    step, position = 0, 0
    saved = progress.load() if progress is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, position = int(saved["step"]), int(saved["position"])
        shuffle.set_state(saved["epoch_shuffle"])
        torch.set_rng_state(saved["rng"])
    if world > 1:  # each rank its own augmentation draws, from where it starts
        torch.manual_seed(augmentation_seed(seed, step, rank))
    while step < total:
        epoch_start = shuffle.get_state()
        batches = epoch_batches(len(train_set), recipe.batch_size, drop_last, shuffle)
        loader = DataLoader(train_set, batch_sampler=[b[rank::world] for b in batches[position:]],
                            num_workers=num_workers, pin_memory=pin_memory(device),
                            generator=torch.Generator().manual_seed((seed + step) * world + rank))
        for batch, (images, targets) in zip(batches[position:], loader):
            loss = _loss(recipe, net(images.to(device, non_blocking=True)),
                         targets.to(device, non_blocking=True), len(batch))
            if world > 1:
                loss = loss * world  # DDP averages the ranks' gradients: their sum is wanted
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step, position = step + 1, position + 1
            if progress is not None:
                progress.step_done_together(lambda: {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step,
                    "position": position % len(batches), "rng": torch.get_rng_state(),
                    "epoch_shuffle": shuffle.get_state() if position == len(batches) else epoch_start,
                }, f"fine-tune step {step} of {total}", device)
            if step >= total:
                break
        position = 0
    broadcast_in_place([b for b in model.buffers() if b.is_floating_point()])
    return model.eval()


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, device: torch.device | str, batch_size: int = 256,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N, classes) and targets of ``dataset`` under ``model`` in eval mode."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=pin_memory(device))
    scores, targets = [], []
    for images, target in loader:
        scores.append(model(images.to(device, non_blocking=True)).float().cpu())
        targets.append(torch.as_tensor(target))
    return torch.cat(scores), torch.cat(targets)
