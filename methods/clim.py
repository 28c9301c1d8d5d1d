"""CLIM (Li, Zhang, Xiong, "Center-wise Local Image Mixture", BMVC 2021) on MoCo v2, as
docs/methods/clim.md §Algorithm reconstructs it (no public code; only the abstract is verified, so every
choice below beyond "kNN positives kept when closer to their cluster centre, instantiated by image
mixing, plus multi-resolution views" is [recon]/[suite] and an option).

Per step: L = L_moco + w_mix * L_mix + w_mr * L_mr, all InfoNCE against the MoCo queue (tau):

* L_moco = mean_i l(q_i, k_i), MoCo v2.
* L_mix: a query view of anchor i mixed (CutMix or mixup, ``methods/parts/mixing.py``) with the query
  view of a partner p drawn uniformly from S(i) (``methods/parts/centre_selection.py``); target
  ``soft``: lam l(q~, k_i) + (1 - lam) l(q~, v_p) with v_p the partner's bank row, or ``anchor``:
  l(q~, k_i). Anchors with an empty S(i) contribute 0; the sum is divided by the batch size B
  (not by the number of mixed anchors), so a rank's loss is a plain batch mean and DDP's gradient
  average equals one process on the whole batch.
* L_mr = mean_i mean_r l(q_i^(r), k_i) over the extra query views at ``multires_sizes``.

The bank V (N x D) is initialised by one clean extraction pass and each visited row replaced by
the image's latest key (``bank_momentum`` beta = 1, as InterCLR). k-means (``methods/parts/kmeans.py``),
the kNN table and the selection are refreshed at the start of every ``refresh_epochs``-th epoch
after ``warmup_epochs`` epochs without the mixed term, identically on every rank. The per-sample
draws (partner, lambda, box) come from torch's global generator (checkpointed by the engine),
one draw per sample of the global batch assigned by sample index, so that DDP equals one process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from benchmark.core.fields import Bool, Choice, Float, Int, ListOf
from benchmark.core.settings import require, setting
from methods.base import Fetch, LossOutput, no_autocast, pack_output, register
from methods.mocov2 import MoCoV2
from methods.parts.centre_selection import bank_knn, centre_wise_selection, pick_partners
from methods.parts.diagnostics import label_precision, masked_mean
from methods.parts.dist_utils import all_gather_cat, broadcast_from_rank0
from methods.parts.kmeans import BACKENDS, kmeans
from methods.parts.losses import info_nce
from methods.parts.memory_bank import MemoryBank
from methods.parts.mixing import MIXES, draw_mix, mix_images
from methods.parts.momentum_method import KEY, QUERY, MomentumSettings
from methods.state import Stateful

MIXED = "mixed"
MULTIRES = "multires"  # extra query views multires0, multires1, ... at multires_sizes
MIX_TARGETS = ("soft", "anchor")


@dataclass(frozen=True)
class CLIMSettings(MomentumSettings):
    """CLIM's options, all set by the profile (ImageNet [suite] values: docs/methods/clim.md §Hyperparameters;
    none is a verified paper value)."""

    k: int = setting(spec=Int(ge=1))                 # |N_k(i)|
    num_clusters: int = setting(spec=Int(ge=1))    # C of k-means
    kmeans_iterations: int = setting(spec=Int(ge=1))
    kmeans_backend: str = setting(spec=Choice(BACKENDS))  # auto (faiss when importable) | faiss | torch
    refresh_epochs: int = setting(spec=Int(ge=1))     # k-means + kNN + selection every this many epochs
    require_same_cluster: bool = setting(spec=Bool())  # also require a(j) = a(i) in S(i)
    mix: str = setting(spec=Choice((*MIXES, "none")))  # cutmix | mixup | none (no mixed term, no bank)
    mix_alpha: float = setting(spec=Float(gt=0))    # lambda ~ Beta(alpha, alpha)
    mix_target: str = setting(spec=Choice(MIX_TARGETS))  # soft (label interpolation) | anchor
    mix_weight: float = setting(spec=Float(ge=0))
    multires_sizes: tuple[int, ...] = setting(spec=ListOf(Int(ge=1)))  # sides of the extra query views
    multires_weight: float = setting(spec=Float(ge=0))
    warmup_epochs: int = setting(spec=Int(ge=0))      # epochs before the first selection (no mixed term)
    # beta: row <- normalise((1 - beta) row + beta key); 1 = latest key
    bank_momentum: float = setting(spec=Float(gt=0, le=1))


@dataclass
class SelectionTables(Stateful):
    """The refreshed tables: kNN (N, k), selection mask (N, k), assignment (N,), centroids (C, D)."""

    state_names = ("neighbours", "selected", "assignments", "centroids")
    state_shapes = ("selection tables are training samples x method.k; centroids are method.num_clusters x "
                    "model.embed_dim")

    neighbours: torch.Tensor
    selected: torch.Tensor
    assignments: torch.Tensor
    centroids: torch.Tensor

    @classmethod
    def empty(cls, num_samples: int, k: int, num_clusters: int, dim: int) -> "SelectionTables":
        """Zero tables of the shapes and dtypes a refresh produces."""
        return cls(torch.zeros(num_samples, k, dtype=torch.long), torch.zeros(num_samples, k, dtype=torch.bool),
                   torch.zeros(num_samples, dtype=torch.long), torch.zeros(num_clusters, dim))


@register
class CLIM(MoCoV2):
    name = "clim"
    summary = "CLIM: MoCo v2 + CutMix with center-wise selected kNN partners + multi-resolution views"
    settings_class = CLIMSettings
    state_names = ("bank", "tables")

    @classmethod
    def view_sizes(cls, config: Mapping[str, Any]) -> dict[str, int | None]:
        sizes = cls.check_settings(config).multires_sizes
        return {QUERY: None, KEY: None, **{f"{MULTIRES}{r}": size for r, size in enumerate(sizes)}}

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        s: CLIMSettings = self.settings  # type: ignore[assignment]
        self.multires_views = tuple(self.view_sizes(config))[2:]
        require(s.k < num_samples, self.name, "k", f"in [1, {num_samples})", s.k)
        require(s.num_clusters <= num_samples, self.name, "num_clusters", f"in [1, {num_samples}]", s.num_clusters)
        self.mixing = s.mix != "none"
        # the bank (only with mixing) is filled by on_train_start; the tables exist once refreshed
        self.bank = MemoryBank.empty(num_samples, embed_dim, 1.0 - s.bank_momentum) if self.mixing else None
        self.tables: SelectionTables | None = None
        self._mix: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def state_template(self, name: str) -> SelectionTables | None:
        """Tables load into zero tables of this run's shapes (with mixing only)."""
        s: CLIMSettings = self.settings  # type: ignore[assignment]
        if name != "tables" or not self.mixing:
            return None
        return SelectionTables.empty(self.num_samples, s.k, s.num_clusters, self.embed_dim).to(self.device)

    # ------------------------------------------------------------------ tables
    def on_train_start(self, extract: Callable[[], torch.Tensor]) -> None:
        if self.bank is not None:
            self.bank.fill(extract().float().to(self.device))
            broadcast_from_rank0(self.bank.weight)

    def on_epoch_start(self, epoch: int) -> None:
        s: CLIMSettings = self.settings  # type: ignore[assignment]
        if self.mixing and epoch > s.warmup_epochs and (epoch - s.warmup_epochs - 1) % s.refresh_epochs == 0:
            self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """k-means on the bank, its kNN table and the center-wise selection (same on every rank:
        the seed is drawn from the global generator and rank 0's tables are broadcast)."""
        if self.bank is None or not self.bank.filled:
            raise RuntimeError(f"method {self.name!r}: no memory bank; on_train_start(extract) must run first")
        s: CLIMSettings = self.settings  # type: ignore[assignment]
        bank = self.bank.weight
        clusters = kmeans(bank, s.num_clusters, s.kmeans_iterations, seed=int(torch.randint(2**31 - 1, ())),
                          backend=s.kmeans_backend)
        neighbours = bank_knn(bank, s.k)
        for table in (clusters.centroids, clusters.labels, neighbours):
            broadcast_from_rank0(table)
        selected = centre_wise_selection(bank, neighbours, clusters.labels, clusters.centroids, s.require_same_cluster)
        self.tables = SelectionTables(neighbours, selected, clusters.labels, clusters.centroids)

    # ------------------------------------------------------------------ step
    def _batch_draws(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(uniform, lambda, box centre) per anchor: one draw per sample of the global batch,
        given to the samples in index order (so every rank and one process see the same draws)."""
        everyone = all_gather_cat(indices)
        lam, centres = draw_mix(everyone.shape[0], self.settings.mix_alpha)
        uniforms = torch.rand(everyone.shape[0])
        position = torch.searchsorted(everyone.sort().values, indices).cpu()
        return tuple(t[position].to(self.device) for t in (uniforms, lam, centres))  # type: ignore[return-value]

    def prepare_batch(self, views: dict[str, torch.Tensor], indices: torch.Tensor,
                      fetch: Fetch) -> dict[str, torch.Tensor]:
        """Add the ``mixed`` view (anchor's query view mixed with its partner's) once tables exist."""
        if self.tables is None:
            return views
        idx = indices.to(self.device, torch.long)
        uniforms, lam, centres = self._batch_draws(idx)
        partners, has = pick_partners(idx, self.tables.neighbours[idx], self.tables.selected[idx], uniforms)
        query = views[QUERY]
        partner_images = query.clone()
        if bool(has.any()):
            partner_images[has] = fetch(partners[has])[QUERY].to(query)
        mixed, kept = mix_images(self.settings.mix, query, partner_images, torch.where(has, lam, 1.0), centres)
        self._mix = (partners, has, kept)
        return {**views, MIXED: mixed}

    def _contrast(self, queries: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
        """Per-sample InfoNCE (B,) of ``queries`` with ``positives`` against the queue (the
        mixed term weights it per sample; ``intra_loss`` is its batch mean)."""
        tau = self.settings.temperature
        return info_nce((queries * positives).sum(dim=1) / tau, queries @ self.queue.keys.T / tau)

    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> LossOutput:
        q, k, idx = self._prepare(embeddings, indices)
        s: CLIMSettings = self.settings  # type: ignore[assignment]
        missing = [v for v in self.multires_views if v not in embeddings]
        if missing:
            raise ValueError(f"method {self.name!r}: multires_sizes asks for the views {missing}; got "
                             f"{sorted(embeddings)}")
        loss, logs = self.intra_loss(q, k)
        if self.multires_views:
            multires = torch.stack([self.intra_loss(self.checked_view(embeddings[v], indices), k)[0]
                                    for v in self.multires_views]).mean()
            loss = loss + s.multires_weight * multires
            logs["loss_multires"] = multires
        if MIXED in embeddings:
            with no_autocast(self.device):
                mixed, mix_logs = self._mix_term(self.checked_view(embeddings[MIXED], indices), k, idx)
            loss = loss + s.mix_weight * mixed
            logs.update(loss_mix=mixed, **mix_logs)
        return pack_output(loss, logs)[0]

    def _mix_term(self, mixed: torch.Tensor, k: torch.Tensor,
                  idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L_mix (anchors without a partner count 0, divided by B) and its diagnostics."""
        if self._mix is None or self.bank is None or self.tables is None:
            raise RuntimeError(f"method {self.name!r}: a {MIXED!r} view without prepare_batch's partners")
        partners, has, kept = self._mix
        self._mix = None
        term = self._contrast(mixed, k)
        if self.settings.mix_target == "soft":
            term = kept * term + (1.0 - kept) * self._contrast(mixed, self.bank.weight[partners])
        logs = {"empty_selection": (~has).float().mean(),
                "selection_size": self.tables.selected[idx].sum(dim=1).float().mean(),
                "mean_lambda": masked_mean(kept, has)}
        labels = self.diagnostic_labels
        if labels is not None:
            logs["pos_precision"] = label_precision(labels, idx, partners.view(-1, 1), has.view(-1, 1))
            logs["knn_precision"] = label_precision(labels, idx, self.tables.neighbours[idx])
        return (term * has).sum() / term.shape[0], logs

    def after_step(self, indices: torch.Tensor, keys: torch.Tensor, step: int) -> None:
        if self.bank is not None and self.bank.filled:
            self.bank.update(indices, keys)
