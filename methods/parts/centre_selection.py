"""CLIM's center-wise local selection (docs/methods/clim.md §Center-wise selection) over a memory bank V.

N_k(i): the k nearest bank rows of v_i by cosine, i excluded. S(i): the members j of N_k(i) with
v_j . mu_a(i) > v_i . mu_a(i), i.e. closer to the anchor's cluster centre than the anchor (for unit
rows the dot product orders the L2 distances to mu whether mu is normalised or not), optionally
only those in the anchor's cluster. A partner is drawn uniformly from S(i).
"""
from __future__ import annotations

import torch

from methods.parts.neighbours import neighbours_from_topm

CHUNK_ELEMENTS = 2**25  # similarity entries per chunk (128 MB of float32)


@torch.no_grad()
def bank_knn(bank: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) indices of each row's k most cosine-similar other rows of ``bank`` (n, D, unit
    rows), most similar first; row chunks keep memory at ``CHUNK_ELEMENTS`` entries."""
    n = bank.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n}) (fewer neighbours than bank rows), got {k}")
    rows = max(1, CHUNK_ELEMENTS // n)
    parts = []
    for start in range(0, n, rows):
        chunk = bank[start : start + rows]
        top = (chunk @ bank.T).topk(k + 1, dim=1).indices
        parts.append(neighbours_from_topm(top, torch.arange(start, start + chunk.shape[0], device=bank.device), k))
    return torch.cat(parts)


@torch.no_grad()
def centre_wise_selection(bank: torch.Tensor, neighbours: torch.Tensor, assignments: torch.Tensor,
                          centroids: torch.Tensor, same_cluster: bool = False) -> torch.Tensor:
    """(n, k) bool: neighbour j of row i is selected when v_j . mu_a(i) > v_i . mu_a(i) (and, with
    ``same_cluster``, a(j) = a(i))."""
    centres = centroids[assignments]
    anchor_score = (bank * centres).sum(dim=1, keepdim=True)
    rows = max(1, CHUNK_ELEMENTS // max(1, neighbours.shape[1] * bank.shape[1]))
    scores = torch.cat([torch.einsum("nkd,nd->nk", bank[nb], c)
                        for nb, c in zip(neighbours.split(rows), centres.split(rows))])
    selected = scores > anchor_score
    if same_cluster:
        selected &= assignments[neighbours] == assignments.view(-1, 1)
    return selected


def pick_partners(anchors: torch.Tensor, neighbours: torch.Tensor, selected: torch.Tensor,
                  uniforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One partner per anchor (B,), uniform over its selected neighbours (rows (B, k) of the
    tables), chosen by ``uniforms`` (B,) in [0, 1); anchors with an empty selection get themselves.
    Returns (partners, has_partner)."""
    counts = selected.sum(dim=1)
    rank = (uniforms.to(selected.device) * counts).floor().long().clamp(max=(counts - 1).clamp_min(0))
    hit = selected & (selected.cumsum(dim=1) == (rank + 1).view(-1, 1))
    column = hit.float().argmax(dim=1, keepdim=True)
    has = counts > 0
    return torch.where(has, neighbours.gather(1, column).squeeze(1), anchors), has
