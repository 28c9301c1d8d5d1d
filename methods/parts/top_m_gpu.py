"""Top-M of every row by a sampled threshold: the GPU path of ``top_m`` (methods/parts/top_m.py).

torch.topk with k = 4096 over rows of 1.28 M scores is most of an InvP step on a GPU. This
selection reads each row a few times at memory speed instead, in four device-agnostic steps:

1. a per-row threshold: the ``ceil(s * 2m / n)``-th largest of ``s`` evenly spaced columns (no
   random generator, so the training's RNG streams are untouched), so about 2m entries pass;
2. one pass marks the survivors (``not score < threshold``: NaN survives, as torch.topk ranks
   NaN above +inf) and counts them per row;
3. one compaction (``nonzero``) packs each row's survivors, in column order, into a (B, C)
   buffer, C the largest survivor count of the rows kept;
4. a stable descending sort of the buffer: its first m entries are the row's top m.

Rows with fewer than m survivors or more than ``CAP_FACTOR * m`` (many ties at the threshold)
take a stable sort of the whole row instead. The result is exact whatever the sample: the m
largest entries of each row, NaN largest, and among entries equal to the m-th largest the lower
columns win (the rule of the CPU kernel, methods/parts/native/top_m.cpp).
"""
from __future__ import annotations

import torch

SAMPLE_SIZE = 16384  # columns per row the threshold is estimated from
OVERSAMPLE = 2  # the threshold aims at OVERSAMPLE * m survivors
CAP_FACTOR = 8  # rows with more survivors than CAP_FACTOR * m take the whole-row sort


def sorted_top_m(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns) of the m largest entries per row by a stable descending sort of whole
    rows: NaN first, ties to the lower column. The exact rule, at the cost of a full sort."""
    values, columns = scores.sort(dim=1, descending=True, stable=True)
    return values[:, :m], columns[:, :m]


def row_thresholds(scores: torch.Tensor, m: int, sample_size: int = SAMPLE_SIZE) -> torch.Tensor:
    """(B, 1): per row, a score about OVERSAMPLE * m entries are not below (from a column sample)."""
    n = scores.shape[1]
    size = min(n, sample_size)
    columns = torch.arange(size, device=scores.device) * n // size
    sample = scores.index_select(1, columns)
    rank = min(size, -(-size * OVERSAMPLE * m // n))
    return sample.topk(rank, dim=1, sorted=False).values.amin(dim=1, keepdim=True)


def threshold_top_m(scores: torch.Tensor, m: int, sample_size: int = SAMPLE_SIZE,
                    cap_factor: int = CAP_FACTOR) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns), each (B, m), of the 2-D ``scores`` (B, n): the set :func:`sorted_top_m`
    selects (NaN largest, ties at the cut to the lower column), by a sampled threshold and one
    compaction pass (module docstring). Values are in descending order."""
    rows, n = scores.shape
    survives = ~(scores < row_thresholds(scores, m, sample_size))
    counts = survives.sum(dim=1)
    kept = (counts >= m) & (counts <= cap_factor * m)
    values = torch.empty(rows, m, dtype=scores.dtype, device=scores.device)
    columns = torch.empty(rows, m, dtype=torch.long, device=scores.device)
    if bool(kept.any()):
        width = int(counts[kept].max())
        row, column = survives.nonzero(as_tuple=True)  # row-major: each row's columns ascending
        starts = counts.cumsum(0) - counts
        slot = torch.arange(row.numel(), device=scores.device) - starts[row]
        use = kept[row]
        row, column, slot = row[use], column[use], slot[use]
        buffer = torch.full((rows, width), float("-inf"), dtype=scores.dtype, device=scores.device)
        buffer_columns = torch.zeros(rows, width, dtype=torch.long, device=scores.device)
        buffer[row, slot] = scores[row, column]
        buffer_columns[row, slot] = column
        # padding (-inf) sits after a row's real survivors, so the stable sort ranks it last
        best_values, best_slots = sorted_top_m(buffer, m)
        values[kept] = best_values[kept]
        columns[kept] = buffer_columns.gather(1, best_slots)[kept]
    if not bool(kept.all()):
        fallback = (~kept).nonzero(as_tuple=True)[0]
        values[fallback], columns[fallback] = sorted_top_m(scores[fallback], m)
    return values, columns
