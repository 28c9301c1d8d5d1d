"""Fine-tune a detector with SGD under a :class:`DetectionSchedule`; DDP when distributed."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmark.core.config import ConfigError
from benchmark.core.distributed import all_reduce_mean, rank_and_world
from tasks.detection.data import EndlessShardedSampler, collate_detection
from tasks.detection.schedule import DetectionSchedule
from tasks.probe_sources import augmentation_seed
from tasks.progress import TaskProgress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainStats:
    """What a fine-tuning run did: iterations, wall time, speed and the last losses."""

    iterations: int
    seconds: float
    losses: dict[str, float]

    @property
    def iterations_per_s(self) -> float:
        return self.iterations / max(self.seconds, 1e-9)


def _param_groups(model: nn.Module, schedule: DetectionSchedule) -> list[dict]:
    """Weight decay on every weight except the norm layers' (detectron2's WEIGHT_DECAY_NORM)."""
    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        for p in m.parameters(recurse=False)
    }
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in norm_params], "weight_decay": schedule.weight_decay},
        {"params": [p for p in params if id(p) in norm_params], "weight_decay": schedule.weight_decay_norm},
    ]


def _on_device(loader: Iterable, device: torch.device) -> Iterator[tuple[list, list]]:
    """(images, targets with boxes and labels) batches moved to ``device``."""
    for images, targets in loader:
        yield (
            [image.to(device, non_blocking=True) for image in images],
            [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets],
        )


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, batches: Iterator[tuple[list, list]], iterations: int) -> None:
    """detectron2's precise BN: every BatchNorm's running mean/var becomes the plain average of
    its batch statistics over ``iterations`` training batches (model in train mode, no update)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms or iterations <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    for _, (images, targets) in zip(range(iterations), batches):
        model(images, targets)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def _distributed(model: nn.Module, device: torch.device, world: int) -> nn.Module:
    """The module a rank trains: ``model`` alone, else DistributedDataParallel on it (gradients
    averaged over the ranks; its SyncBatchNorm layers normalise over the whole batch on CUDA)."""
    if world == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def train_detector(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    schedule: DetectionSchedule,
    device: torch.device,
    seed: int,
    num_workers: int = 0,
    precise_bn_iters: int = 0,
    progress: TaskProgress | None = None,
) -> TrainStats:
    """Train ``model`` (a torchvision detection model) for ``schedule.iterations`` steps.

    ``schedule.batch_size`` is the global batch (detectron2's IMS_PER_BATCH); under
    torch.distributed (one process per GPU) each rank takes its share of every batch
    (``batch_size / world`` images) and trains under DistributedDataParallel, so every rank
    ends with the same weights. Images without a box are left out, as detectron2 does.
    ``precise_bn_iters`` > 0 then recomputes the BN statistics over that many batches (MoCo's
    ``TEST.PRECISE_BN``; SyncBN keeps ranks equal). The losses returned are the last batch's,
    averaged over the ranks' shares.

    With ``progress`` (one for all ranks: rank 0 writes it, every rank loads it) every
    iteration checkpoints (model, optimizer, scheduler, iteration, sampler position, RNG;
    tasks/progress.py), a stop request seen by any rank stops every rank at the same iteration,
    and a saved state is resumed exactly (with ``num_workers`` 0; workers restart their flip
    RNG). Alone, the flips and sampling draw from torch's RNG as seeded; with several ranks,
    each rank reseeds it at every iteration from (seed, iteration, rank), so that a resumed
    rank draws what it would have drawn uninterrupted.
    """
    rank, world = rank_and_world()
    if schedule.batch_size % world:
        raise ConfigError(f"tasks.detection.batch_size={schedule.batch_size} images per step cannot be "
                          f"shared by the {world} processes (one per GPU); set a multiple of {world} "
                          "or ask that many GPUs (launcher.task_kinds.detection)")
    with_boxes = [i for i in range(len(dataset)) if len(dataset.target(i)["boxes"]) > 0]
    per_rank = schedule.batch_size // world
    model.to(device).train()
    net = _distributed(model, device, world)
    optimizer = torch.optim.SGD(_param_groups(model, schedule), lr=schedule.lr, momentum=schedule.momentum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule.lr_factor)
    done, losses, seconds = 0, {}, 0.0
    saved = progress.load() if progress is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        done, losses, seconds = int(saved["iteration"]), dict(saved["losses"]), float(saved["seconds"])
    loader = DataLoader(
        dataset,
        batch_size=per_rank,
        sampler=EndlessShardedSampler(with_boxes, seed, rank, world, start=done * per_rank),
        collate_fn=collate_detection,
        num_workers=num_workers,
    )
    batches = _on_device(iter(loader), device)  # the loader draws its base seed from torch's RNG
    if saved is not None:
        torch.set_rng_state(saved["rng"])  # after that draw: the RNG as the saved step left it
    start = time.perf_counter() - seconds
    for iteration in tqdm(range(done, schedule.iterations), desc="detection", disable=rank != 0, leave=False):
        if world > 1:
            torch.manual_seed(augmentation_seed(seed, iteration, rank))
        images, targets = next(batches)
        loss_dict = net(images, targets)
        loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"detection loss is {loss.item()} at iteration {iteration}: {loss_dict}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        # the whole batch's losses (the mean of the ranks' shares), on every rank
        shares = torch.stack([v.detach() for v in loss_dict.values()])
        losses = dict(zip(loss_dict, all_reduce_mean(shares).tolist()))
        if rank == 0 and (iteration + 1) % max(1, schedule.iterations // 10) == 0:
            log.info("detection iter %d/%d loss %.4f %s", iteration + 1, schedule.iterations,
                     sum(losses.values()), losses)
        if progress is not None:
            progress.step_done_together(lambda: {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "iteration": iteration + 1, "losses": losses,
                "seconds": time.perf_counter() - start, "rng": torch.get_rng_state(),
            }, f"detection iteration {iteration + 1} of {schedule.iterations}", device)
    seconds = time.perf_counter() - start
    recompute_bn_statistics(net, batches, precise_bn_iters)
    return TrainStats(schedule.iterations, seconds, losses)
