"""Linear heads trained on cached frozen features (InvP 17-head probe, Goyal/VISSL heads).

Every head is ``norm -> Linear`` on one feature layer; all heads train together on the same
mini-batches with the cross-entropy losses summed, as the official multi-head script does.
Every head is scored on every evaluation set before training and after each epoch, so a task
can select (head, epoch) on a held-out set and read the test number at that selection without
re-training (and read the official script's scores, taken before each epoch).

A head's BatchNorm either keeps its initial running statistics (``frozen_stats``: the official
InvP script trains with the whole network in ``eval()``, so the BN is a learnable affine with
mean 0 and variance 1) or normalises with batch statistics (``batch_stats``: VISSL/Goyal).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


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


@torch.no_grad()
def _score_heads(
    heads: nn.ModuleList, features: Sequence[torch.Tensor], labels: torch.Tensor, device, batch: int
) -> torch.Tensor:
    """(heads, 2) top-1 and top-5 accuracy of each head."""
    heads.eval()
    hits = torch.zeros(len(heads), 2)
    labels = labels.to(device)
    for start in range(0, len(labels), batch):
        y = labels[start : start + batch]
        for h, (head, feats) in enumerate(zip(heads, features)):
            logits = head(feats[start : start + batch].to(device).float())
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
            hits[h, 0] += top[:, 0].sum().item()
            hits[h, 1] += top.any(dim=1).sum().item()
    return hits / max(len(labels), 1)


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


def train_probe(
    train_features: Sequence[torch.Tensor],
    train_labels: torch.Tensor,
    eval_sets: Mapping[str, tuple[Sequence[torch.Tensor], torch.Tensor]],
    num_classes: int,
    schedule: ProbeSchedule,
    device: torch.device | str,
    seed: int,
) -> dict[str, torch.Tensor]:
    """Train one head per feature matrix; returns per eval set an (epochs + 1, heads, 2) tensor
    of top-1/top-5 accuracy, row ``e`` after ``e`` epochs (row 0: the untrained heads)."""
    if schedule.head_bn not in HEAD_BN_MODES:
        raise ValueError(f"probe head_bn must be one of {', '.join(HEAD_BN_MODES)}, "
                         f"not {schedule.head_bn!r}")
    batch_stats = schedule.head_bn == "batch_stats"
    with single_thread_on_cpu(device):
        torch.manual_seed(seed)
        heads = nn.ModuleList(
            make_head(f.shape[1], num_classes, schedule.norm, schedule.head_init)
            for f in train_features
        ).to(device)
        optimizer = torch.optim.SGD(
            heads.parameters(),
            lr=schedule.lr,
            momentum=schedule.momentum,
            weight_decay=schedule.weight_decay,
            nesterov=schedule.nesterov,
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, list(schedule.milestones), schedule.gamma
        )
        train_on_device = [f.to(device) for f in train_features]
        labels = train_labels.to(device).long()
        generator = torch.Generator().manual_seed(seed)
        history: dict[str, list[torch.Tensor]] = {name: [] for name in eval_sets}

        def score() -> None:
            for name, (feats, y) in eval_sets.items():
                history[name].append(_score_heads(heads, feats, y, device, 4 * schedule.batch_size))

        score()
        for _ in range(schedule.epochs):
            heads.train(batch_stats)  # frozen_stats: eval mode, running statistics never move
            order = torch.randperm(len(labels), generator=generator).to(device)
            for start in range(0, len(order), schedule.batch_size):
                idx = order[start : start + schedule.batch_size]
                if batch_stats and len(idx) < 2:  # batch statistics need two samples
                    continue
                loss = sum(
                    F.cross_entropy(head(feats[idx].float()), labels[idx])
                    for head, feats in zip(heads, train_on_device)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            score()
        return {name: torch.stack(rows) for name, rows in history.items()}
