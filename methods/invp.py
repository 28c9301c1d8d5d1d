"""Invariance Propagation (Wang et al., NeurIPS 2020), faithful to the official step (docs/methods/invp.md §Official step, steps 1-13).

Per step: dense similarity of the batch to the whole bank; top-M pool (M = ``n_background``);
L_ins over the pool; candidates by propagation over the kNN table (official concatenation or
the clean BFS variant); the P lowest-similarity candidates as hard positives; L_InvP with the
``exclusive`` denominator; total L_ins + lam * w(epoch) * L_InvP. L_InvP is computed while its
weight is 0, as the official code does. ``update`` then refreshes the visited graph rows from
this step's top-M list and EMA-updates the bank with the pre-step embeddings.

Ablation switches (each one option): ``hard_positive: false`` (P largest: "without hard
positive"), ``n_background: all`` ("without hard negative": the whole bank is the pool),
``steps: 1`` ("KNN" positives, see ``methods.knn_positive``), ``propagation: bfs``, any ``k``,
``ramp``. ``n_background`` larger than n is clamped to n (with a warning); ``n_pos`` larger than
the number of candidates takes them all, as the official code does.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch

from benchmark.core.fields import AnyOf, Bool, Choice, Float, Int
from benchmark.core.settings import block, require, setting
from methods.base import LossOutput, no_autocast, register
from methods.parts.bank_method import MEMORY_MOMENTUM, BankMethod
from methods.parts.diagnostics import label_precision, masked_mean, mean_unique
from methods.parts.losses import instance_loss, invp_loss
from methods.parts.neighbours import NeighbourTable, neighbours_from_topm
from methods.parts.positives import select_positives
from methods.parts.propagation import propagate_bfs, propagate_concat
from methods.parts.ramp import RampSettings, ramp_weight
from methods.parts.similarity import DenseScores, gathered_similarities
from methods.parts.top_m import top_m

PROPAGATIONS = ("concat", "bfs")


class Discovery(NamedTuple):
    """One step's propagated candidates (B, C) and the positives picked among them (B, P')."""

    candidates: torch.Tensor
    valid: torch.Tensor  # (B, C) False on BFS padding
    candidate_sims: torch.Tensor  # (B, C) current embedding vs each candidate's bank entry
    columns: torch.Tensor  # (B, P') the picked columns of ``candidates``
    positives: torch.Tensor
    picked_valid: torch.Tensor  # (B, P') False where a row had fewer valid candidates than P'


N_BACKGROUND = AnyOf(Int(ge=1), Choice(("all",)))  # M, or "all" (the whole bank)


@dataclass(frozen=True)
class InvPSettings:
    """Options of ``invp``, all set by the profile (official values: docs/methods/invp.md
    §Hyperparameters)."""

    temperature: float = setting(spec=Float(gt=0))
    memory_momentum: float = setting(spec=MEMORY_MOMENTUM)
    k: int = setting(spec=Int(ge=1))  # kNN-graph out-degree
    steps: int = setting(spec=Int(ge=1))  # propagation steps l
    n_pos: int = setting(spec=Int(ge=1))  # hard positives P
    n_background: int | str = setting(spec=N_BACKGROUND)  # M, or "all"
    exclusive: bool = setting(spec=Bool())  # drop the anchor's own term from the L_InvP denominator
    hard_positive: bool = setting(spec=Bool())  # P lowest (true) or P highest (false) candidates
    propagation: str = setting(spec=Choice(PROPAGATIONS))  # concat (official multiset) | bfs (clean)
    lam: float = setting(spec=Float(ge=0))  # lambda, weight of L_InvP
    ramp: RampSettings = block(RampSettings)


def pool_size(n_background: int | str, num_samples: int, k: int, method: str) -> int:
    """M as used: 'all' and values above n become n (warned); M must exceed k (graph refresh)."""
    if n_background == "all":
        size = num_samples
    else:
        size = int(n_background)
        if size > num_samples:
            warnings.warn(f"method {method!r}: n_background={size} > {num_samples} training samples; "
                          f"using the whole bank (n_background=all)", stacklevel=3)
            size = num_samples
    require(size >= k + 1, method, "n_background", f"at least k+1 = {k + 1} (M={size} after clamping to the "
            f"training set, which must hold more than k samples)", n_background)
    return size


@register
class InvP(BankMethod):
    name = "invp"
    summary = "Invariance Propagation: hard positives from kNN-graph propagation, top-M negatives"

    settings_class = InvPSettings
    state_names = ("neighbours",)

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        self.pool = pool_size(self.settings.n_background, num_samples, self.settings.k, self.name)
        self.neighbours = NeighbourTable(num_samples, self.settings.k)
        self._scores = DenseScores()

    @property
    def pool_is_bank(self) -> bool:
        """True when the pool is the whole bank (n_background: all): dense softmax denominator."""
        return self.pool == self.num_samples

    def _discover(self, anchors: torch.Tensor, sims: torch.Tensor) -> Discovery:
        """Propagate from ``anchors`` (B,) and pick positives by their similarities ``sims`` (B, n)."""
        s = self.settings
        if s.propagation == "bfs":
            candidates, valid = propagate_bfs(self.neighbours.table, anchors, s.steps)
        else:
            candidates = propagate_concat(self.neighbours.table, anchors, s.steps)
            valid = torch.ones_like(candidates, dtype=torch.bool)
        candidate_sims = sims.gather(1, candidates)
        columns, picked_valid = select_positives(candidate_sims, s.n_pos, s.hard_positive, valid)
        return Discovery(candidates, valid, candidate_sims, columns, candidates.gather(1, columns), picked_valid)

    def loss(self, embeddings: torch.Tensor, indices: torch.Tensor, epoch: int) -> LossOutput:
        v, idx, bank = self._prepare(embeddings, indices)
        s = self.settings
        with no_autocast(self.device):
            if self.pool_is_bank:
                dense = v @ bank.weight.T
                plain = dense.detach()
                top_idx = nearest = plain.topk(s.k + 1, dim=1).indices
            else:
                plain = self._scores(v, bank.weight)
                top_vals, top_idx = top_m(plain, self.pool)
                nearest = top_idx.gather(1, top_vals.topk(s.k + 1, dim=1).indices)
            found = self._discover(idx, plain)
            n_pos = found.positives.shape[1]

            pool_part = [] if self.pool_is_bank else [top_idx]
            wanted = torch.cat([idx.view(-1, 1), found.positives, *pool_part], dim=1)
            logits = gathered_similarities(v, bank.weight, wanted, dense=plain) / s.temperature
            self_logits, pos_logits = logits[:, 0], logits[:, 1 : 1 + n_pos]
            pool_logits = dense / s.temperature if self.pool_is_bank else logits[:, 1 + n_pos :]

            loss_ins = instance_loss(self_logits, pool_logits).mean()
            loss_invp = invp_loss(pos_logits, found.picked_valid, pool_logits, self_logits, s.exclusive).mean()
            weight = ramp_weight(epoch, s.ramp)
            loss = loss_ins + s.lam * weight * loss_invp
        self._stash(v, idx, neighbour_rows=neighbours_from_topm(nearest, idx, s.k))
        logs = {"loss_ins": loss_ins, "loss_invp": loss_invp, "ramp_weight": weight}
        logs.update(self._diagnostics(idx, found, None if self.pool_is_bank else top_idx))
        return self._finish(loss, logs)

    @torch.no_grad()
    def _diagnostics(self, idx: torch.Tensor, found: Discovery, pool: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Unique counts, hard vs easy candidate similarity, and label precision when labels are set."""
        s = self.settings
        picked = (found.columns, found.picked_valid)
        other = select_positives(found.candidate_sims, s.n_pos, not s.hard_positive, found.valid)
        (hard_cols, hard_valid), (easy_cols, easy_valid) = (picked, other) if s.hard_positive else (other, picked)
        logs = {
            "unique_candidates": mean_unique(found.candidates, found.valid, idx),
            "unique_positives": mean_unique(found.positives, found.picked_valid, idx),
            "hard_pos_sim": masked_mean(found.candidate_sims.gather(1, hard_cols), hard_valid),
            "easy_pos_sim": masked_mean(found.candidate_sims.gather(1, easy_cols), easy_valid),
        }
        labels = self.diagnostic_labels
        if labels is not None:
            logs["pos_precision"] = label_precision(labels, idx, found.positives, found.picked_valid)
            if pool is not None:
                logs["pool_precision"] = label_precision(labels, idx, pool, pool != idx.view(-1, 1))
        return logs

    def _apply_rows(self, gathered: Mapping[str, torch.Tensor]) -> None:
        self.neighbours.update(gathered["indices"], gathered["neighbour_rows"])
