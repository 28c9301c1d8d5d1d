"""Slow, loop-based references for the methods tests (written from docs/methods/*.md, not from
methods/): plain-Python graph walks and per-sample loss formulas."""
from __future__ import annotations

import math
from collections import deque

import torch
import torch.nn.functional as F


def unit_rows(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=1)


def propagation_width(k: int, steps: int) -> int:
    """Columns of the official concatenation: k + k^2 + ... + k^steps (84 for k=4, l=3)."""
    return sum(k**s for s in range(1, steps + 1))


def official_walk(table: list[list[int]], anchor: int, steps: int) -> list[int]:
    """docs/methods/invp.md §Official step, step 6, as a column walk: expand columns left to right, a layer counter per level."""
    columns = list(table[anchor])
    cursor, layer_end, layer = 0, len(columns) - 1, 2
    while layer <= steps:
        columns.extend(table[columns[cursor]])
        if cursor == layer_end:
            layer += 1
            layer_end = len(columns) - 1
        cursor += 1
    return columns


def bfs_ball(table: list[list[int]], anchor: int, steps: int) -> set[int]:
    """Nodes at graph distance 1..steps from ``anchor``, without the anchor."""
    dist = {anchor: 0}
    queue = deque([anchor])
    while queue:
        node = queue.popleft()
        if dist[node] == steps:
            continue
        for nxt in table[node]:
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return {node for node, d in dist.items() if d >= 1}


def instance_loss_loop(sims: list[float], self_sim: float, pool: list[int], tau: float) -> float:
    denominator = sum(math.exp(sims[j] / tau) for j in pool)
    return -math.log(math.exp(self_sim / tau) / denominator + 1e-7)


def invp_loss_loop(sims: list[float], self_sim: float, positives: list[int], pool: list[int], tau: float,
                   exclusive: bool) -> float:
    numerator = sum(math.exp(sims[j] / tau) for j in positives)
    denominator = sum(math.exp(sims[j] / tau) for j in pool) - (math.exp(self_sim / tau) if exclusive else 0.0)
    return -math.log(numerator / denominator + 1e-7)


def official_step_losses(v: torch.Tensor, bank: torch.Tensor, table: torch.Tensor, anchors: torch.Tensor, tau: float,
                         pool: int, steps: int, n_pos: int, exclusive: bool, hardest: bool) -> tuple[float, float]:
    """L_ins and L_InvP batch means of the official step, one anchor at a time in float64."""
    ins, inv = [], []
    rows = table.tolist()
    for b, anchor in enumerate(anchors.tolist()):
        sims = (bank.double() @ v[b].double()).tolist()
        order = sorted(range(len(sims)), key=lambda j: -sims[j])[:pool]
        candidates = official_walk(rows, anchor, steps)
        ranked = sorted(candidates, key=lambda j: sims[j], reverse=not hardest)[: min(n_pos, len(candidates))]
        ins.append(instance_loss_loop(sims, sims[anchor], order, tau))
        inv.append(invp_loss_loop(sims, sims[anchor], ranked, order, tau, exclusive))
    return sum(ins) / len(ins), sum(inv) / len(inv)


def dense_official_losses(v: torch.Tensor, bank: torch.Tensor, table: torch.Tensor, anchors: torch.Tensor, tau: float,
                          pool: int, steps: int, n_pos: int, exclusive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The official arithmetic with plain autograd (dense exp, topk): a gradient reference."""
    exp = torch.exp(v @ bank.T / tau)
    self_exp = exp[torch.arange(v.shape[0]), anchors]
    top = exp.topk(pool, dim=1).values
    loss_ins = -(self_exp / top.sum(1) + 1e-7).log().mean()
    rows = table.tolist()
    walks = torch.tensor([official_walk(rows, a, steps) for a in anchors.tolist()])
    pos = exp.gather(1, walks).topk(min(n_pos, walks.shape[1]), dim=1, largest=False).values
    denominator = top.sum(1) - (self_exp if exclusive else 0.0)
    loss_invp = -(pos.sum(1) / denominator + 1e-7).log().mean()
    return loss_ins, loss_invp
