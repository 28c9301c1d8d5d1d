"""The InfoNCE term of MoCo and its family, as a per-sample function of logits (s / tau)."""
from __future__ import annotations

import torch


def info_nce(positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """-log(exp(p) / (exp(p) + sum_j exp(n_j))) per sample (B,), i.e. cross-entropy with target 0
    over [positive, negatives]; ``positive`` (B,) and ``negatives`` (B, K) are logits."""
    return torch.logsumexp(torch.cat([positive.unsqueeze(1), negatives], dim=1), dim=1) - positive
