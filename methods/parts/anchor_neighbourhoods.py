"""AND's curriculum anchor neighbourhoods (Huang et al. 2019; docs/methods/knn-positive.md §AND).

At the start of round r the bank is both query and key: the samples whose softmax over the bank
(temperature tau, self term included) has the lowest entropy become anchors, a fraction r/R of
the data, and each anchor's neighbourhood is its k nearest bank entries other than itself. The
neighbourhoods stay fixed for the whole round.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def bank_entropies_and_neighbours(
    bank: torch.Tensor, temperature: float, k: int, chunk_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (n,) of softmax(bank_i . bank_j / tau) over all j, and the k nearest j != i (n, k).

    Works in row chunks, so memory stays at chunk_size x n; the cost is O(n^2 D).
    """
    entropies, neighbours = [], []
    eye_offset = 0
    for chunk in bank.split(chunk_size):
        sims = chunk @ bank.T
        log_p = torch.log_softmax(sims / temperature, dim=1)
        entropies.append(-(log_p.exp() * log_p).sum(dim=1))
        rows = torch.arange(chunk.shape[0], device=bank.device)
        sims[rows, rows + eye_offset] = float("-inf")
        neighbours.append(sims.topk(k, dim=1).indices)
        eye_offset += chunk.shape[0]
    return torch.cat(entropies), torch.cat(neighbours)


def select_anchors(entropies: torch.Tensor, fraction: float) -> torch.Tensor:
    """Boolean mask (n,) of the floor(n * fraction) lowest-entropy samples."""
    count = int(entropies.shape[0] * fraction)
    mask = torch.zeros_like(entropies, dtype=torch.bool)
    mask[entropies.topk(count, largest=False).indices] = True
    return mask
