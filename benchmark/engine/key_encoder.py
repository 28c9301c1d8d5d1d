"""The engine's momentum key encoder (MoCo): an EMA copy of backbone + head that encodes key
views without gradient, with shuffle-BN.

Shuffle-BN: the keys of a step are computed on a random permutation of the global batch (all
ranks' images gathered), each rank encoding its shard in ``bn_splits`` sub-batches, so a key's
BatchNorm statistics come from other images than its query's (MoCo §3.3; one process with
``bn_splits`` > 1 is MoCo's single-GPU split-BN substitute). The permutation comes from a
generator seeded by (run seed, step): the same on every rank, and resumable, without touching
the global RNG.
"""
from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from methods.parts.dist_utils import all_gather_cat, is_distributed

_MIX = 1_000_003


def shuffle_order(size: int, seed: int, step: int) -> torch.Tensor:
    """The permutation of a global batch of ``size`` used for the keys of step ``step``."""
    return torch.randperm(size, generator=torch.Generator().manual_seed((seed * _MIX + step) % (2**63)))


class KeyEncoder:
    """EMA copy of ``encoder`` (parameters averaged; BN buffers are its own, from its forwards)."""

    def __init__(self, encoder: nn.Module, bn_splits: int = 1):
        if bn_splits < 1:
            raise ValueError(f"bn_splits must be >= 1, got {bn_splits}")
        self.module = copy.deepcopy(encoder)
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.bn_splits = bn_splits

    @torch.no_grad()
    def update(self, encoder: nn.Module, momentum: float) -> None:
        """key <- momentum * key + (1 - momentum) * query, for every parameter."""
        keys = list(self.module.parameters())
        torch._foreach_mul_(keys, momentum)
        torch._foreach_add_(keys, [p.detach() for p in encoder.parameters()], alpha=1.0 - momentum)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, seed: int, step: int,
               autocast: Callable[[], AbstractContextManager]) -> torch.Tensor:
        """L2-normalised float32 keys (B, D) of this rank's ``images`` (B, ...), shuffle-BN."""
        world = dist.get_world_size() if is_distributed() else 1
        rank = dist.get_rank() if is_distributed() else 0
        gathered = all_gather_cat(images)
        if gathered.shape[0] != world * images.shape[0]:
            raise ValueError("shuffle-BN needs the same batch size on every rank (drop_last=True)")
        order = shuffle_order(gathered.shape[0], seed, step).to(images.device)
        shard = gathered[order].chunk(world)[rank]
        with autocast():
            keys = torch.cat([self.module(part) for part in shard.chunk(self.bn_splits)])
        keys = all_gather_cat(F.normalize(keys.float(), dim=1))
        unshuffled = torch.empty_like(keys)
        unshuffled[order] = keys
        return unshuffled.chunk(world)[rank]

    def train(self, mode: bool = True) -> None:
        self.module.train(mode)
