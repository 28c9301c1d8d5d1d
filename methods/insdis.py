"""InsDis (Wu et al. 2018): instance discrimination against a memory bank (docs/methods/insdis.md).

``variant: softmax`` is the full non-parametric softmax over all n bank entries (the CIFAR
recipe, ``--nce-k 0``). ``variant: nce`` is the NCE approximation with K uniform noise draws per
anchor; its normaliser Z is either estimated once on the first batch and frozen (``nce_z:
frozen``, the original code) or tracked as an EMA of the per-batch estimate (``nce_z: ema``,
as CMC issue #23 recommends). Z is recorded in the method's state.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from benchmark.core.fields import Choice, Float, Int
from benchmark.core.settings import setting
from methods.base import LossOutput, no_autocast, register
from methods.parts.bank_method import MEMORY_MOMENTUM, BankMethod
from methods.parts.dist_utils import all_gather_cat
from methods.parts.losses import nce_loss
from methods.parts.similarity import DenseScores, gathered_similarities


@dataclass(frozen=True)
class InsDisSettings:
    """Options of ``insdis``, all set by the profile (official ImageNet values:
    docs/methods/insdis.md §Hyperparameters)."""

    temperature: float = setting(spec=Float(gt=0))
    memory_momentum: float = setting(spec=MEMORY_MOMENTUM)
    variant: str = setting(spec=Choice(("softmax", "nce")))
    nce_k: int = setting(spec=Int(ge=1))  # noise draws per anchor (nce only)
    nce_z: str = setting(spec=Choice(("ema", "frozen")))  # nce only
    nce_z_momentum: float = setting(spec=Float(ge=0, lt=1))  # EMA momentum of Z (nce_z: ema)


def row_normalisers(logits: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Per-anchor Monte-Carlo estimates of Z, n * mean_j exp(logits[b, j]), (B,) from (B, K+1) (docs/methods/insdis.md §NCE and its normaliser Z);
    their mean over the (gathered) batch is the batch estimate."""
    return num_samples * torch.exp(logits).mean(dim=1)


@register
class InsDis(BankMethod):
    name = "insdis"
    summary = "InsDis: instance discrimination with a memory bank (full softmax or NCE)"

    settings_class = InsDisSettings
    state_names = ("normaliser", "nce_z")

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        self.normaliser: torch.Tensor | None = None  # Z of the NCE variant (0-dim float64), once estimated
        self._scores = DenseScores()
        self._pending_estimate: torch.Tensor | None = None  # this step's Z estimate (NCE), for update()

    @property
    def nce_z(self) -> str:
        """How Z is kept (ema | frozen): recorded next to Z in the state, which a run with the
        other rule refuses to load."""
        return self.settings.nce_z

    def state_template(self, name: str) -> torch.Tensor | None:
        """Z loads into a 0-dim float64 tensor on the state's device."""
        return torch.zeros((), dtype=torch.float64, device=self.device) if name == "normaliser" else None

    def loss(self, embeddings: torch.Tensor, indices: torch.Tensor, epoch: int) -> LossOutput:
        v, idx, bank = self._prepare(embeddings, indices)
        with no_autocast(self.device):
            if self.settings.variant == "softmax":
                logits = v @ bank.weight.T / self.settings.temperature
                per_sample = F.cross_entropy(logits, idx, reduction="none")
                logs: dict[str, torch.Tensor] = {}
            else:
                per_sample, logs = self._nce(v, idx, bank.weight)
            loss = per_sample.mean()
        self._stash(v, idx)
        return self._finish(loss, {"loss_ins": loss, **logs})

    def _nce(
        self, v: torch.Tensor, idx: torch.Tensor, bank: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        noise = torch.randint(0, self.num_samples, (v.shape[0], self.settings.nce_k), device=self.device)
        columns = torch.cat([idx.view(-1, 1), noise], dim=1)
        dense = self._scores(v, bank) if self.num_samples <= columns.numel() else None  # the cheaper way
        logits = gathered_similarities(v, bank, columns, dense=dense) / self.settings.temperature
        self._pending_estimate = row_normalisers(logits.detach(), self.num_samples).double()
        log_z = torch.log(self._pending_estimate.mean() if self.normaliser is None else self.normaliser)
        return nce_loss(logits, log_z, self.num_samples), {"nce_log_z": log_z}

    def update(self) -> None:
        """Bank update, then Z from this step's estimate averaged over ranks: set on the first
        step, then frozen or EMA-updated (used from the next step on; no collective in ``loss``)."""
        estimate = self._pending_estimate
        super().update()
        if estimate is None:
            return
        estimate = all_gather_cat(estimate).mean()
        self._pending_estimate = None
        if self.normaliser is None:
            self.normaliser = estimate
        elif self.settings.nce_z == "ema":
            m = self.settings.nce_z_momentum
            self.normaliser = m * self.normaliser + (1 - m) * estimate
