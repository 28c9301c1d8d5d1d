"""MoCo v2 (Chen et al. 2020, on MoCo, He et al. 2020): InfoNCE of the query against its own
momentum key (positive) and the queue of past keys (negatives), tau 0.2, MLP head (set by the
profiles), keys from the engine's momentum encoder with shuffle-BN (docs/methods/mocov2.md §Model and loss,
L_intra; the MoCo-v2 baseline of the InterCLR comparison).
"""
from __future__ import annotations

from typing import Any

import torch

from methods.base import LossOutput, no_autocast, pack_output, register
from methods.parts.losses import info_nce
from methods.parts.momentum_method import MomentumMethod


@register
class MoCoV2(MomentumMethod):
    name = "mocov2"
    summary = "MoCo v2: momentum key encoder, queue of negative keys, InfoNCE (tau 0.2, MLP head)"

    def intra_loss(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean InfoNCE of queries ``q`` against their keys ``k`` and the queue, with its logs."""
        with no_autocast(self.device):
            positive = (q * k).sum(dim=1)
            negatives = q @ self.queue.keys.T
            loss = info_nce(positive / self.settings.temperature, negatives / self.settings.temperature).mean()
        return loss, {"loss_moco": loss, "positive_similarity": positive.mean(),
                      "negative_similarity": negatives.mean()}

    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> LossOutput:
        q, k, _ = self._prepare(embeddings, indices)
        return pack_output(*self.intra_loss(q, k))[0]
