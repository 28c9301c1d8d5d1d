"""Weighted k-nearest-neighbour classifier (Wu et al. 2018; docs/protocols.md §kNN classification).

Each test feature votes with its ``k`` most cosine-similar training features, each weighted by
``exp(s / sigma)``; the class with the largest summed weight wins. Used by the pretraining
monitor and by the kNN task, so both report the same protocol.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    sigma: float = 0.1,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """Class scores (N_test, num_classes) from weighted kNN voting.

    ``train_features`` (N_train, D) and ``test_features`` (N_test, D) are L2-normalised here;
    ``train_labels`` (N_train,) are int64 in [0, num_classes). ``k`` is clamped to N_train.
    Work is chunked over test rows so memory stays at chunk_size x N_train.
    """
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_features has {train_features.shape[0]} rows but train_labels has "
            f"{train_labels.shape[0]}"
        )
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    labels = train_labels.to(train.device).long()
    scores = []
    for start in range(0, test.shape[0], chunk_size):
        sims, idx = (test[start : start + chunk_size] @ train.T).topk(k, dim=1)
        weights = (sims / sigma).exp()
        votes = torch.zeros(sims.shape[0], num_classes, device=train.device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: int = 1) -> float:
    """Fraction of rows whose true label is among the ``topk`` highest scores."""
    topk = min(topk, scores.shape[1])
    hits = (scores.topk(topk, dim=1).indices == labels.view(-1, 1).to(scores.device)).any(dim=1)
    return hits.float().mean().item()
