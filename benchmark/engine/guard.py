"""The NaN/inf guard of a training step: a non-finite embedding or loss is caught before the
backward, and every rank's verdict is agreed on, so that all ranks stop alike."""
from __future__ import annotations

import torch

from benchmark.core.distributed import DistContext
from methods.base import LossOutput, Method


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or inf; the last good state was checkpointed."""


def guarded_loss(method: Method, embeddings: torch.Tensor | dict[str, torch.Tensor], positions: torch.Tensor,
                 epoch: int) -> tuple[LossOutput | None, str]:
    """``method``'s loss, or None and the reason when embeddings or loss are not finite."""
    views = embeddings.values() if isinstance(embeddings, dict) else [embeddings]
    if not all(bool(torch.isfinite(view).all()) for view in views):
        return None, "the embeddings hold NaN/inf"
    try:
        out = method.loss(embeddings, positions, epoch)
    except FloatingPointError as exc:  # methods may detect a non-finite loss themselves
        return None, str(exc)
    if not bool(torch.isfinite(out.loss).item()):
        return None, f"loss = {out.loss.item()}"
    return out, ""


def any_rank(dist: DistContext, *flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over every rank (the flags themselves when not distributed)."""
    if not dist.enabled:
        return flags
    summed = torch.tensor([float(flag) for flag in flags], device=dist.device)
    torch.distributed.all_reduce(summed)
    return tuple(bool(total > 0) for total in summed)
