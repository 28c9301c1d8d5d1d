"""Collectives the methods need under DDP, written so that one process needs no process group.

Every rank must hold the same memory bank and neighbour table; each rank therefore all-gathers
the batch's embeddings, indices and prepared rows and applies the same update (docs/methods/invp.md §Official step,
step 13, docs/methods/memory-bank.md §Distributed training). Works with any backend (gloo on CPU, NCCL on GPU).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (N_r, ...) from every rank along dim 0, in rank order.

    Identity when not distributed. Ranks may hold different N_r (a short last batch): sizes are
    exchanged first and the rows padded for the collective, then trimmed. The result carries no
    gradient.
    """
    if not is_distributed():
        return tensor.detach()
    world = dist.get_world_size()
    local = tensor.detach().contiguous()
    size = torch.tensor([local.shape[0]], device=local.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    padded = local.new_zeros((max(counts), *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def broadcast_from_rank0(tensor: torch.Tensor) -> None:
    """Overwrite ``tensor`` in place with rank 0's copy; a no-op when not distributed."""
    if is_distributed():
        dist.broadcast(tensor, src=0)
