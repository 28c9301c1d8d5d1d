"""Loss terms of InvP, InsDis-NCE, AND and the InfoNCE of MoCo's family as pure per-sample
functions of logits (s / tau).

All take logits (similarities of the current embedding to bank entries divided by tau) and
return a per-sample loss (B,); the methods average over the batch. Sums of exponentials are
computed after subtracting a per-row maximum, which equals the official arithmetic wherever
that one does not overflow.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RATIO_EPS = 1e-7  # the official code adds 1e-7 to the probability ratio inside the log (docs/methods/invp.md §Official step, steps 5 and 10)


def instance_loss(self_logits: torch.Tensor, pool_logits: torch.Tensor) -> torch.Tensor:
    """L_ins over the top-M pool (docs/methods/invp.md §Equations, Eq 6; §Official step, step 5): -log(exp(self) / sum exp(pool) + 1e-7).

    ``self_logits`` (B,): the anchor against its own bank entry; ``pool_logits`` (B, M): the
    top-M bank entries (the pool normally contains the anchor). Returns (B,).
    """
    ratio = torch.exp(self_logits - torch.logsumexp(pool_logits, dim=1))
    return -torch.log(ratio + RATIO_EPS)


def invp_loss(
    pos_logits: torch.Tensor,
    pos_mask: torch.Tensor,
    pool_logits: torch.Tensor,
    self_logits: torch.Tensor,
    exclusive: bool = True,
) -> torch.Tensor:
    """L_InvP (docs/methods/invp.md §Equations, Eq 4/5; §Official step, steps 9-10): -log(sum_P exp(pos) / D + 1e-7), per sample (B,).

    ``pos_logits`` (B, P): the selected (hard) positives, repeats counted per occurrence;
    ``pos_mask`` (B, P): which of them are real (padding contributes 0). D is the sum of
    exp(pool) over the top-M ``pool_logits`` (B, M), minus exp(self) when ``exclusive`` (the
    official default; subtracted even when the anchor is not in the pool). D is clamped at the
    smallest positive float, so the loss stays finite.
    """
    shift = torch.maximum(pool_logits.max(dim=1).values, self_logits)
    shift = torch.maximum(shift, pos_logits.max(dim=1).values).detach().view(-1, 1)
    numerator = (torch.exp(pos_logits - shift) * pos_mask).sum(dim=1)
    denominator = torch.exp(pool_logits - shift).sum(dim=1)
    if exclusive:
        denominator = denominator - torch.exp(self_logits - shift.view(-1))
    denominator = denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    return -torch.log(numerator / denominator + RATIO_EPS)


def nce_loss(logits: torch.Tensor, log_z: torch.Tensor | float, num_samples: int) -> torch.Tensor:
    """InsDis NCE loss (docs/methods/insdis.md §NCE and its normaliser Z), per sample (B,); column 0 of ``logits`` (B, K+1) is the positive.

    Model density P_m = exp(logit) / Z, noise density 1/n, K noise draws; the loss is
    -[log P_m(pos) / (P_m(pos) + K/n) + sum_noise log (K/n) / (P_m(noise) + K/n)], in log space.
    """
    noise_count = logits.shape[1] - 1
    log_noise = math.log(noise_count / num_samples)
    log_model = logits - log_z
    positive = F.softplus(log_noise - log_model[:, 0])
    negatives = F.softplus(log_model[:, 1:] - log_noise).sum(dim=1)
    return positive + negatives


def and_loss(
    logits: torch.Tensor, targets: torch.Tensor, neighbours: torch.Tensor, neighbour_mask: torch.Tensor
) -> torch.Tensor:
    """AND loss over the full non-parametric softmax (docs/methods/knn-positive.md §AND), per sample (B,).

    ``logits`` (B, n) over the whole bank; ``targets`` (B,) the anchors' own indices;
    ``neighbours`` (B, k) their neighbourhood; ``neighbour_mask`` (B, k) False for samples that
    are not curriculum anchors (their loss is -log p_ii). Anchors get -log(p_ii + sum_j p_ij).
    """
    own = logits.gather(1, targets.view(-1, 1))
    near = logits.gather(1, neighbours).masked_fill(~neighbour_mask, float("-inf"))
    return torch.logsumexp(logits, dim=1) - torch.logsumexp(torch.cat([own, near], dim=1), dim=1)


def info_nce(positive: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """InfoNCE, the term of MoCo and its family: -log(exp(p) / (exp(p) + sum_j exp(n_j))) per
    sample (B,), i.e. cross-entropy with target 0 over [positive, negatives]; ``positive`` (B,)
    and ``negatives`` (B, K) are logits."""
    return torch.logsumexp(torch.cat([positive.unsqueeze(1), negatives], dim=1), dim=1) - positive
