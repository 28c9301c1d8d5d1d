"""Linear heads trained on cached frozen features (InvP 17-head probe, Goyal/VISSL heads).

Every head is ``norm -> Linear`` on one feature layer; all heads train together on the same
mini-batches with the cross-entropy losses summed, as the official multi-head script does.
After each epoch every head is scored on every evaluation set, so a task can select (head,
epoch) on a held-out set and read the test number at that selection without re-training.
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


PROBE_NORMS = ("bn", "bn_noaffine", "none")


def make_head(dim: int, num_classes: int, norm: str) -> nn.Sequential:
    """``norm -> Linear(dim, num_classes)`` with the weight N(0, 0.01) and zero bias."""
    norms = {
        "bn": lambda: nn.BatchNorm1d(dim),
        "bn_noaffine": lambda: nn.BatchNorm1d(dim, affine=False),
        "none": nn.Identity,
    }
    if norm not in PROBE_NORMS:
        raise ValueError(f"probe norm must be one of {', '.join(PROBE_NORMS)}, not {norm!r}")
    linear = nn.Linear(dim, num_classes)
    nn.init.normal_(linear.weight, std=0.01)
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
    """Train one head per feature matrix; returns per eval set an (epochs, heads, 2) tensor of
    top-1/top-5 accuracy after each epoch."""
    with single_thread_on_cpu(device):
        torch.manual_seed(seed)
        heads = nn.ModuleList(
            make_head(f.shape[1], num_classes, schedule.norm) for f in train_features
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
        for _ in range(schedule.epochs):
            heads.train()
            order = torch.randperm(len(labels), generator=generator).to(device)
            for start in range(0, len(order), schedule.batch_size):
                idx = order[start : start + schedule.batch_size]
                if len(idx) < 2:  # BatchNorm needs two samples
                    continue
                loss = sum(
                    F.cross_entropy(head(feats[idx].float()), labels[idx])
                    for head, feats in zip(heads, train_on_device)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
            for name, (feats, y) in eval_sets.items():
                history[name].append(_score_heads(heads, feats, y, device, 4 * schedule.batch_size))
        return {name: torch.stack(rows) for name, rows in history.items()}
