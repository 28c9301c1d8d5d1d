"""Weighted k-nearest-neighbour classifier (Wu et al. 2018; docs/protocols.md §kNN classification).

Each test feature votes with its ``k`` most cosine-similar training features, each weighted by
``exp(s / sigma)``; the class with the largest summed weight wins. Used by the pretraining
monitor and by the kNN task, so both report the same protocol.

The search streams: test rows go in batches of B against the training rows read C at a time
(memory-mapped features are paged in chunk by chunk), each chunk's top-k merged into a running
top-k. When the training rows come in several chunks and the work is on the CPU, faiss (exact
``IndexFlatIP``) does each chunk's search if it is installed, a torch matmul + top-k otherwise;
one chunk (all rows fit) is the dense torch product + top-k, bit for bit as before. Neighbours
tied with the k-th similarity are picked as the search picks them (as before), so a chunked
search can swap one such neighbour for another: the scores then differ by that neighbour's
weight, the predictions only when the tie decides the vote. Cost, for D-dim features in a cache
of s bytes/element:

- memory: ``C x D x (s + 4)`` (a chunk and its float32 copy) ``+ B x C x 4`` (its similarities)
  ``+ B x D x 4 + B x k x 24`` (the batch and the running top-k) ``+ N_train x 8`` (the labels);
  :func:`train_chunk_rows` picks C so this stays within half the job's memory;
- time: ``2 x N_test x N_train x D`` flops / the matmul's throughput, plus the top-k selection
  over the ``N_test x N_train`` similarities and one read of the train cache per test batch
  (``N_test / B`` reads; a read from RAM once the cache is paged in). ImageNet at D = 2048:
  2 x 50 k x 1.28 M x 2048 = 2.6e14 flops, seconds on a GPU, minutes on a many-core CPU; the
  128-dim embedding is 16x less.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import faiss
except ImportError:  # optional: the torch matmul does the same search
    faiss = None

MERGE_BYTES_PER_NEIGHBOUR = 24  # running + chunk candidates: float32 score + int64 index, twice
WORKING_BYTES = 4  # float32


def train_chunk_rows(budget: int, dim: int, element_bytes: int, test_batch: int, k: int) -> int:
    """Training rows per chunk C so that the search's memory (module docstring) stays within
    half of ``budget`` bytes; at least ``k`` rows."""
    fixed = test_batch * (dim * WORKING_BYTES + k * MERGE_BYTES_PER_NEIGHBOUR)
    per_row = dim * (element_bytes + WORKING_BYTES) + test_batch * WORKING_BYTES
    return max(k, 1, (budget // 2 - fixed) // per_row)


def weighted_knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    sigma: float = 0.1,
    chunk_size: int = 4096,
    train_chunk: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class scores (N_test, num_classes), on ``device``, from weighted kNN voting.

    ``train_features`` (N_train, D) and ``test_features`` (N_test, D), on any device or
    memory-mapped, are L2-normalised here; ``train_labels`` (N_train,) are int64 in
    [0, num_classes). ``k`` is clamped to N_train. Test rows go ``chunk_size`` at a time against
    ``train_chunk`` training rows at a time (None: all of them); ``device`` (None: that of
    ``train_features``) is where the work runs."""
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_features has {train_features.shape[0]} rows but train_labels has "
            f"{train_labels.shape[0]}"
        )
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    device = torch.device(device) if device is not None else train_features.device
    n_train = train_features.shape[0]
    k = min(k, n_train)
    step = n_train if train_chunk is None else max(1, int(train_chunk))
    labels = train_labels.to(device).long()
    search = _faiss_topk if faiss is not None and device.type == "cpu" and step < n_train else _torch_topk
    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        queries = F.normalize(test_features[start : start + chunk_size].to(device).float(), dim=1)
        sims = torch.empty(queries.shape[0], 0, device=device)
        idx = torch.empty(queries.shape[0], 0, dtype=torch.long, device=device)
        for first in range(0, n_train, step):
            rows = F.normalize(train_features[first : first + step].to(device).float(), dim=1)
            chunk_sims, chunk_idx = search(queries, rows, min(k, rows.shape[0]))
            sims, idx = _merge(sims, idx, chunk_sims, chunk_idx + first, k)
        weights = (sims / sigma).exp()
        votes = torch.zeros(queries.shape[0], num_classes, device=device)
        votes.scatter_add_(1, labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes, device=device)


def _torch_topk(queries: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest inner products of each query with ``rows`` and their row numbers."""
    return (queries @ rows.T).topk(k, dim=1)


def _faiss_topk(queries: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_torch_topk` by faiss's exact inner-product index (CPU tensors)."""
    faiss.omp_set_num_threads(torch.get_num_threads())
    index = faiss.IndexFlatIP(rows.shape[1])
    index.add(rows.contiguous().numpy())
    sims, idx = index.search(queries.contiguous().numpy(), k)
    return torch.from_numpy(sims), torch.from_numpy(idx)


def _merge(sims: torch.Tensor, idx: torch.Tensor, more_sims: torch.Tensor, more_idx: torch.Tensor,
           k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The running top-``k`` and a chunk's candidates merged: the ``k`` largest similarities
    (the lower training index first among equal ones)."""
    if sims.shape[1] == 0:
        return more_sims, more_idx
    sims, idx = torch.cat([sims, more_sims], 1), torch.cat([idx, more_idx], 1)
    by_index = idx.argsort(dim=1, stable=True)
    sims, idx = sims.gather(1, by_index), idx.gather(1, by_index)
    best = sims.argsort(dim=1, descending=True, stable=True)[:, :k]
    return sims.gather(1, best), idx.gather(1, best)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, topk: int = 1) -> float:
    """Fraction of rows whose true label is among the ``topk`` highest scores."""
    topk = min(topk, scores.shape[1])
    hits = (scores.topk(topk, dim=1).indices == labels.view(-1, 1).to(scores.device)).any(dim=1)
    return hits.float().mean().item()
