"""Hard-positive selection among propagated candidates (docs/methods/invp.md §Hard positives and hard negatives; §Official step, step 8)."""
from __future__ import annotations

import torch


def select_positives(
    candidate_sims: torch.Tensor, n_pos: int, hardest: bool = True, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns of the P' = min(n_pos, C) lowest (``hardest``) or highest similarities per row.

    ``candidate_sims`` (B, C): similarity of the current embedding to each candidate's bank entry;
    repeated candidates count once per occurrence, as in the official code. ``mask`` (B, C) marks
    valid columns (None: all valid); a row with fewer valid columns than P' gets them all, and
    the returned mask (B, P') says which picked columns are real. Returns (columns, mask), both
    (B, P'). ``hardest=False`` is the paper's "without hard positive" ablation.
    """
    if n_pos < 1:
        raise ValueError(f"n_pos (P) must be >= 1, got {n_pos}")
    count = min(n_pos, candidate_sims.shape[1])
    sims = candidate_sims
    if mask is not None:
        sims = sims.masked_fill(~mask, float("inf") if hardest else float("-inf"))
    columns = sims.topk(count, dim=1, largest=not hardest).indices
    picked_mask = torch.ones_like(columns, dtype=torch.bool) if mask is None else mask.gather(1, columns)
    return columns, picked_mask
