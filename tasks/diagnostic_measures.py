"""The maths of the representation diagnostics, shared by the ``diagnostics`` task, the
pretraining monitor (benchmark/engine/monitor.py) and the report's Fig. 2a.

Every function takes L2-normalised rows ``z`` unless it says otherwise; none draws random numbers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RANKME_EPS = 1e-7  # Garrido et al.'s epsilon added to the normalised singular values
DIAGNOSTIC_METRICS = ("alignment", "uniformity", "rankme", "mean_cosine", "nn_same_class_sim",
                      "nn_diff_class_sim", "collapsed")


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Mean squared distance between the normalised views ``z1[i]`` and ``z2[i]`` (alpha = 2)."""
    return float((z1 - z2).pow(2).sum(dim=1).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log mean over pairs i < j of exp(-t ||z_i - z_j||²) of normalised rows ``z``."""
    return float(torch.pdist(z.double()).pow(2).mul(-t).exp().mean().log())


def effective_rank(features: torch.Tensor) -> float:
    """RankMe: exp of the entropy of the singular values of ``features`` (N, D), normalised."""
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum() + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def mean_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity over ordered pairs i != j of normalised rows ``z``."""
    zd = z.double()
    n = zd.shape[0]
    total = zd.sum(dim=0).pow(2).sum() - zd.pow(2).sum()  # sum over i != j of z_i . z_j
    return float(total / (n * (n - 1)))


def nearest_similarities(
    features: torch.Tensor, labels: torch.Tensor, k: int = 5, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every row of ``features`` to its ``k`` nearest same-class and
    different-class rows (itself excluded): two (N, k) tensors, rows sorted descending, -inf
    where a row has fewer than ``k`` of that kind. Computed ``chunk`` rows at a time."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    z = F.normalize(features, dim=1)
    k = min(k, z.shape[0] - 1)
    same_out, diff_out = [], []
    for start in range(0, z.shape[0], chunk):
        sims = z[start : start + chunk] @ z.T
        rows = torch.arange(sims.shape[0], device=z.device)
        same = labels[start : start + chunk].view(-1, 1) == labels.view(1, -1)
        diff_out.append(sims.masked_fill(same, -math.inf).topk(k, dim=1).values)
        sims[rows, rows + start] = -math.inf  # a row is not its own neighbour
        same_out.append(sims.masked_fill(~same, -math.inf).topk(k, dim=1).values)
    return torch.cat(same_out), torch.cat(diff_out)


def neighbour_similarities(z: torch.Tensor, labels: torch.Tensor, neighbours: int) -> tuple[float, float]:
    """Mean cosine of each row to its ``neighbours`` nearest same-class rows and to its nearest
    different-class rows (rows without enough of either are left out of that mean)."""
    out = []
    for top in nearest_similarities(z.double(), labels, neighbours):
        full = torch.isfinite(top).all(dim=1)
        out.append(float(top[full].mean()) if full.any() else math.nan)
    return out[0], out[1]


def is_collapsed(cosine: float, rank: float, collapse_cosine: float, collapse_rank: float) -> bool:
    """The collapse rule: a narrow cone (mean cosine at or above ``collapse_cosine``) or about
    ``collapse_rank`` directions or fewer (RankMe)."""
    return cosine >= collapse_cosine or rank <= collapse_rank


def diagnose(features: torch.Tensor, labels: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor,
             neighbours: int, collapse_cosine: float, collapse_rank: float) -> dict[str, float]:
    """Every metric of ``DIAGNOSTIC_METRICS`` from eval ``features`` (N, D) with ``labels`` and
    two augmented views (M, D) of M images; ``collapsed`` is 1.0 or 0.0."""
    z = F.normalize(features.double(), dim=1)
    same, different = neighbour_similarities(z, labels, neighbours)
    values = {
        "alignment": alignment(F.normalize(view1.double(), dim=1), F.normalize(view2.double(), dim=1)),
        "uniformity": uniformity(z),
        "rankme": effective_rank(features),
        "mean_cosine": mean_cosine(z),
        "nn_same_class_sim": same,
        "nn_diff_class_sim": different,
    }
    values["collapsed"] = float(is_collapsed(values["mean_cosine"], values["rankme"],
                                             collapse_cosine, collapse_rank))
    return values
