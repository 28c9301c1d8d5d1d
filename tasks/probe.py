"""Linear heads trained on frozen features (InvP 17-head probe, Goyal/VISSL heads): one loop for
every feature source (cached matrices or the frozen trunk online, tasks/probe_sources.py).

Every head is ``norm -> Linear`` on one feature layer; all heads train together on the same
mini-batches with the cross-entropy losses summed, as the official multi-head script does. Several
learning rates train side by side, one head set per lr, on the same batches (one feature pass per
batch for all of them). Every head is scored on every evaluation set before training and after
each epoch, so a task can select (lr, head, epoch) on a held-out set and read the test number at
that selection without re-training (and read the official script's scores, taken before each
epoch).

A head's BatchNorm either keeps its initial running statistics (``frozen_stats``: the official
InvP script trains with the whole network in ``eval()``, so the BN is a learnable affine with
mean 0 and variance 1) or normalises with batch statistics (``batch_stats``: VISSL/Goyal).

Under ``torch.distributed`` (world > 1) every rank draws the same permutation each epoch and takes
its share of every batch; the losses are scaled to the whole batch's mean and the head gradients
summed, so the heads are those of one process (up to float summation order, with
``frozen_stats``; with ``batch_stats`` each rank normalises its share of the batch, as
per-GPU BatchNorm under DDP does, and the running statistics are averaged over ranks after
every step). Scores are counted per rank and summed. With a :class:`TaskProgress` the state
(heads, optimizer, scheduler, epoch, position in the epoch, generator states, score history) is
checkpointed after optimizer steps and resumed exactly.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from benchmark.core.distributed import all_reduce_in_place, rank_and_world
from tasks.probe_sources import Batch, CachedFeatures, FeatureRows
from tasks.progress import TaskProgress


@dataclass(frozen=True)
class ProbeSchedule:
    """Optimisation settings of a linear probe (SGD with step decay)."""

    epochs: int
    lr: float
    batch_size: int = 256
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    norm: str = "bn"  # PROBE_NORMS: bn (BatchNorm1d, InvP) | bn_noaffine (Goyal, mmselfsup) | none
    head_bn: str = "frozen_stats"  # HEAD_BN_MODES: frozen_stats (InvP) | batch_stats (VISSL)
    head_init: str = "normal_std_0.01"  # HEAD_INITS


PROBE_NORMS = ("bn", "bn_noaffine", "none")
HEAD_BN_MODES = ("frozen_stats", "batch_stats")
# The linear layer's weight init (bias 0): N(0, 0.01) (InvP LinearModelMulti.py, VISSL) or
# N(0, sqrt(2 / classes)) (InvP LinearModel.py, the CIFAR probe of eval_linear.py).
HEAD_INITS = ("normal_std_0.01", "normal_std_sqrt2_over_classes")
EVAL_BATCH_FACTOR = 4  # evaluation batches are this many training batches (no gradients kept)

class FeatureSource(Protocol):
    """Where a probe's features come from (tasks/probe_sources.py): per-layer vectors and labels
    of index batches of the training set (``part`` ``train``) or of an evaluation set."""

    train_size: int
    eval_sizes: Mapping[str, int]  # the evaluation sets, scored in this order

    def dims(self) -> list[int]:
        """The feature dimension of every layer."""

    def batches(self, part: str, index_batches: Sequence[torch.Tensor], epoch: int) -> Iterator[Batch]:
        """Features and labels (on the probe's device) of each batch of item positions of ``part``;
        ``epoch`` seeds the training augmentation where there is one."""


def make_head(dim: int, num_classes: int, norm: str, init: str = "normal_std_0.01") -> nn.Sequential:
    """``norm -> Linear(dim, num_classes)``, the weight drawn by ``init`` (HEAD_INITS), bias 0."""
    norms = {
        "bn": lambda: nn.BatchNorm1d(dim),
        "bn_noaffine": lambda: nn.BatchNorm1d(dim, affine=False),
        "none": nn.Identity,
    }
    stds = {"normal_std_0.01": 0.01, "normal_std_sqrt2_over_classes": (2.0 / num_classes) ** 0.5}
    if norm not in PROBE_NORMS:
        raise ValueError(f"probe norm must be one of {', '.join(PROBE_NORMS)}, not {norm!r}")
    if init not in HEAD_INITS:
        raise ValueError(f"probe head_init must be one of {', '.join(HEAD_INITS)}, not {init!r}")
    linear = nn.Linear(dim, num_classes)
    nn.init.normal_(linear.weight, std=stds[init])
    nn.init.zeros_(linear.bias)
    return nn.Sequential(norms[norm](), linear)


@contextmanager
def single_thread_on_cpu(device: torch.device | str) -> Iterator[None]:
    """Run small CPU tensor work on one intra-op thread: a probe's tiny matmuls gain nothing
    from more threads and slow down ~100x when spinning threads compete on a busy machine."""
    previous = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@dataclass
class ProbeRun:
    """A trained probe: ``scores`` per evaluation set, an (lrs, epochs + 1, heads, 2) tensor of
    top-1/top-5 accuracy (row ``e`` after ``e`` epochs, row 0 the untrained heads); ``heads``:
    one ModuleList of heads per lr."""

    scores: dict[str, torch.Tensor]
    heads: nn.ModuleList


def train_heads(
    source: FeatureSource,
    num_classes: int,
    schedule: ProbeSchedule,
    lrs: Sequence[float],
    device: torch.device | str,
    seed: int,
    progress: TaskProgress | None = None,
) -> ProbeRun:
    """Train one head per layer of ``source`` for every lr in ``lrs`` (``schedule.lr`` unused),
    scoring every head on every evaluation set before training and after each epoch; every
    head set starts from the same seeded init and sees the same batches."""
    if schedule.head_bn not in HEAD_BN_MODES:
        raise ValueError(f"probe head_bn must be one of {', '.join(HEAD_BN_MODES)}, "
                         f"not {schedule.head_bn!r}")
    batch_stats = schedule.head_bn == "batch_stats"
    rank, world = rank_and_world()
    with single_thread_on_cpu(device):
        heads = nn.ModuleList(_seeded_heads(source.dims(), num_classes, schedule, seed)
                              for _ in lrs).to(device)
        optimizer = torch.optim.SGD(
            [{"params": group.parameters(), "lr": float(lr)} for group, lr in zip(heads, lrs)],
            lr=float(lrs[0]), momentum=schedule.momentum, weight_decay=schedule.weight_decay,
            nesterov=schedule.nesterov,
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(schedule.milestones), schedule.gamma
        )
        generator = torch.Generator().manual_seed(seed)
        eval_batch = EVAL_BATCH_FACTOR * schedule.batch_size
        history: dict[str, list[torch.Tensor]] = {name: [] for name in source.eval_sizes}

        def score() -> None:
            for name, size in source.eval_sizes.items():
                history[name].append(_score(heads, source, name, size, eval_batch, rank, world))

        saved = progress.load() if progress is not None else None
        start_epoch, start_step = 0, 0
        if saved is None:
            score()
        else:
            heads.load_state_dict(saved["heads"])
            optimizer.load_state_dict(saved["optimizer"])
            optimizer._opt_called = True  # it has stepped (scheduler.step would warn otherwise)
            scheduler.load_state_dict(saved["scheduler"])
            generator.set_state(saved["order_rng"])
            torch.set_rng_state(saved["torch_rng"])
            history = {name: list(rows) for name, rows in saved["history"].items()}
            start_epoch, start_step = int(saved["epoch"]), int(saved["step"])
        for epoch in range(start_epoch, schedule.epochs):
            order_rng = generator.get_state()  # the state this epoch's permutation is drawn from
            order = torch.randperm(source.train_size, generator=generator)
            first = start_step if epoch == start_epoch else 0
            steps = [(k, b) for k, b in enumerate(order.split(schedule.batch_size))
                     if k >= first and not (batch_stats and len(b) < 2 * world)]  # BN needs 2
            heads.train(batch_stats)  # frozen_stats: eval mode, running statistics never move
            shards = [b[rank::world] for _, b in steps]
            for (k, batch), (feats, labels) in zip(steps, source.batches("train", shards, epoch)):
                loss = sum(_loss(head(f), labels, len(batch))
                           for group in heads for head, f in zip(group, feats))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    _sum_gradients(heads)
                optimizer.step()
                if world > 1 and batch_stats:
                    _average_statistics(heads, world)
                if progress is not None:
                    state = _state_fn(heads, optimizer, scheduler, order_rng, history, epoch, k + 1)
                    progress.step_done_together(state, f"epoch {epoch + 1} step {k + 1}",
                                                labels.device)
            scheduler.step()
            score()
        scores = {name: torch.stack(rows).transpose(0, 1).contiguous() for name, rows in history.items()}
        return ProbeRun(scores, heads)


def _seeded_heads(dims: Sequence[int], num_classes: int, schedule: ProbeSchedule,
                  seed: int) -> nn.ModuleList:
    torch.manual_seed(seed)
    return nn.ModuleList(make_head(d, num_classes, schedule.norm, schedule.head_init) for d in dims)


def _loss(logits: torch.Tensor, labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cross-entropy as the mean over the whole batch of ``batch_size`` items, of which
    ``labels`` are this rank's share."""
    if len(labels) == batch_size:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels, reduction="sum") / batch_size


def _sum_gradients(heads: nn.Module) -> None:
    """Sum every head gradient across ranks (the losses are already scaled to the whole batch)."""
    all_reduce_in_place([p.grad for p in heads.parameters() if p.grad is not None])


def _average_statistics(heads: nn.Module, world: int) -> None:
    """Average the heads' BatchNorm running statistics over ranks (with batch statistics each
    rank normalises its own share of a batch), so that every rank holds, scores and saves the
    same heads. The running-statistics update is linear, so averaging after every step gives
    the average of the ranks' own running statistics."""
    all_reduce_in_place([b for b in heads.buffers() if b.is_floating_point()], 1.0 / world)


@torch.no_grad()
def _score(heads: nn.ModuleList, source: FeatureSource, name: str, size: int, batch: int,
           rank: int, world: int) -> torch.Tensor:
    """(lrs, heads, 2) top-1 and top-5 accuracy of every head on evaluation set ``name``."""
    heads.eval()
    device = next(heads.parameters()).device
    hits = torch.zeros(len(heads), len(heads[0]), 2, dtype=torch.long, device=device)
    positions = torch.arange(rank, size, world)
    for feats, labels in source.batches(name, positions.split(batch), 0):
        for g, group in enumerate(heads):
            for h, (head, f) in enumerate(zip(group, feats)):
                logits = head(f)
                top = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
                hits[g, h, 0] += top[:, 0].sum()
                hits[g, h, 1] += top.any(dim=1).sum()
    if world > 1:
        dist.all_reduce(hits)  # on the heads' device: NCCL reduces CUDA tensors only
    return hits.cpu().float() / max(size, 1)


def _state_fn(heads: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
              order_rng: torch.Tensor, history: Mapping[str, list[torch.Tensor]], epoch: int,
              step: int) -> Callable[[], dict[str, Any]]:
    """The probe's resumable state after ``step`` batches of ``epoch`` (built only when saved)."""
    return lambda: {
        "heads": heads.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "order_rng": order_rng,
        "torch_rng": torch.get_rng_state(), "history": {n: list(r) for n, r in history.items()},
        "epoch": epoch, "step": step,
    }


def train_probe(
    train_features: Sequence[torch.Tensor],
    train_labels: torch.Tensor,
    eval_sets: Mapping[str, tuple[Sequence[torch.Tensor], torch.Tensor]],
    num_classes: int,
    schedule: ProbeSchedule,
    device: torch.device | str,
    seed: int,
) -> dict[str, torch.Tensor]:
    """:func:`train_heads` on in-memory feature matrices at ``schedule.lr``; returns per eval set
    an (epochs + 1, heads, 2) tensor of top-1/top-5 accuracy, row ``e`` after ``e`` epochs."""
    source = CachedFeatures(FeatureRows(train_features, train_labels),
                            {name: FeatureRows(*part) for name, part in eval_sets.items()}, device)
    run = train_heads(source, num_classes, schedule, [schedule.lr], device, seed)
    return {name: scores[0] for name, scores in run.scores.items()}
