"""KNN-positive baselines (docs/methods/knn-positive.md), registered as ``knn`` with ``variant``:

* ``invp`` — the InvP-framework KNN of the paper's Table 5: everything as InvP except that the
  positives are the K graph neighbours N_K(i) (``k``), all used, with the same top-M loss and
  ramp-up. With k=4 this is the official code run with ``--diffusion_layer 1``.
* ``and`` — AND-faithful: full non-parametric softmax over the bank; round 0 is plain instance
  discrimination; at each round r = 1..``and_rounds`` the lowest-entropy r/R of the data become
  anchors with fixed ``and_anchor_k``-NN neighbourhoods, trained with -log(p_ii + sum_j p_ij).
  A round lasts ``and_round_epochs`` epochs (AND also restarts the lr per round; that is the
  pretraining schedule's job). AND's own temperature is 0.1 (docs/methods/knn-positive.md §AND).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from benchmark.core.settings import ANY_TYPE, read_settings, require
from methods.base import LossOutput, Method, register
from methods.invp import InvP, InvPSettings
from methods.parts.anchor_neighbourhoods import bank_entropies_and_neighbours, select_anchors
from methods.parts.bank_method import BankMethod, no_autocast
from methods.parts.diagnostics import label_precision
from methods.parts.losses import and_loss
from methods.parts.ramp import RampSettings


@dataclass(frozen=True)
class KNNSettings:
    """Options of ``knn``; the and_* ones apply to ``variant: and`` only."""

    variant: str = "invp"  # invp | and
    temperature: float = 0.07
    memory_momentum: float = 0.5
    k: int = 4  # K nearest neighbours used as positives (invp variant)
    n_background: int | str = dataclasses.field(default=4096, metadata=ANY_TYPE)
    exclusive: bool = True
    lam: float = 0.6
    ramp: RampSettings = RampSettings()
    and_rounds: int = 4  # curriculum rounds after round 0
    and_round_epochs: int = 200  # epochs per round
    and_anchor_k: int = 1  # neighbourhood size of an anchor


def read_knn_settings(config: Mapping[str, Any]) -> KNNSettings:
    settings = read_settings(KNNSettings, config, "knn")
    require(settings.variant in ("invp", "and"), "knn", f"variant must be invp or and, got {settings.variant!r}")
    return settings


class InvPFrameworkKNN(InvP):
    """InvP with steps=1 and all K graph neighbours as positives (docs/methods/knn-positive.md §InvP-framework KNN)."""

    name = "knn"
    summary = "KNN positives inside the InvP framework"

    def _read_settings(self, config: Mapping[str, Any]) -> InvPSettings:
        s = read_knn_settings(config)
        return InvPSettings(temperature=s.temperature, memory_momentum=s.memory_momentum, k=s.k, steps=1,
                            n_pos=s.k, n_background=s.n_background, exclusive=s.exclusive, hard_positive=True,
                            propagation="concat", lam=s.lam, ramp=s.ramp)


class ANDCurriculum(BankMethod):
    """AND (Huang et al. 2019) with anchor neighbourhoods fixed per curriculum round (docs/methods/knn-positive.md §AND)."""

    name = "knn"
    summary = "AND: curriculum anchor neighbourhoods over a full softmax"

    def __init__(self, config: Mapping[str, Any], num_samples: int):
        self.settings = read_knn_settings(config)
        s = self.settings
        require(s.temperature > 0, self.name, f"temperature must be > 0, got {s.temperature}")
        require(s.and_rounds >= 1, self.name, f"and_rounds must be >= 1, got {s.and_rounds}")
        require(s.and_round_epochs >= 1, self.name, f"and_round_epochs must be >= 1, got {s.and_round_epochs}")
        require(1 <= s.and_anchor_k < num_samples, self.name,
                f"and_anchor_k must be in [1, {num_samples - 1}], got {s.and_anchor_k}")
        super().__init__(config, num_samples, s.memory_momentum)
        self.round = 0
        self.is_anchor = torch.zeros(num_samples, dtype=torch.bool)
        self.anchor_neighbours = torch.zeros(num_samples, s.and_anchor_k, dtype=torch.long)

    def round_of(self, epoch: int) -> int:
        """Curriculum round of a 1-based epoch: 0 (instance discrimination) up to and_rounds."""
        return min((epoch - 1) // self.settings.and_round_epochs, self.settings.and_rounds)

    def on_epoch_start(self, epoch: int) -> None:
        target = self.round_of(epoch)
        if target == self.round or self.bank is None:
            return
        self.round = target
        if target == 0:
            self.is_anchor.zero_()
            return
        entropies, neighbours = bank_entropies_and_neighbours(self.bank.weight, self.settings.temperature,
                                                              self.settings.and_anchor_k)
        self.is_anchor = select_anchors(entropies, target / self.settings.and_rounds)
        self.anchor_neighbours = neighbours

    def loss(self, embeddings: torch.Tensor, indices: torch.Tensor, epoch: int) -> LossOutput:
        v, idx, bank = self._prepare(embeddings, indices)
        with no_autocast(self.device):
            logits = v @ bank.weight.T / self.settings.temperature
            neighbours = self.anchor_neighbours[idx]
            anchored = self.is_anchor[idx].view(-1, 1).expand_as(neighbours)
            loss = and_loss(logits, idx, neighbours, anchored).mean()
        self._stash(v, idx)
        logs = {"loss_and": loss, "and_round": self.round, "anchor_fraction": self.is_anchor[idx].float().mean()}
        if self.diagnostic_labels is not None and self.round > 0:
            logs["pos_precision"] = label_precision(self.diagnostic_labels, idx, neighbours, anchored)
        return self._finish(loss, logs)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "and_round": self.round, "is_anchor": self.is_anchor.cpu().clone(),
                "anchor_neighbours": self.anchor_neighbours.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if tuple(state["anchor_neighbours"].shape) != tuple(self.anchor_neighbours.shape):
            raise ValueError(f"checkpoint AND neighbourhoods have shape {tuple(state['anchor_neighbours'].shape)}, "
                             f"this run needs {tuple(self.anchor_neighbours.shape)}; keep and_anchor_k and the data")
        self.round = int(state["and_round"])
        self.is_anchor = state["is_anchor"].to(self.device, torch.bool).clone()
        self.anchor_neighbours = state["anchor_neighbours"].to(self.device, torch.long).clone()

    def to(self, device: torch.device | str) -> "ANDCurriculum":
        super().to(device)
        self.is_anchor = self.is_anchor.to(self.device)
        self.anchor_neighbours = self.anchor_neighbours.to(self.device)
        return self


@register
class KNNPositive(Method):
    """Registry entry ``knn``: builds the variant named by ``config['variant']``."""

    name = "knn"
    summary = "KNN positives: InvP-framework K nearest neighbours (variant invp) or AND rounds (variant and)"

    @classmethod
    def create(cls, config: Mapping[str, Any], num_samples: int) -> Method:
        """The variant named by ``config['variant']``."""
        variant = read_knn_settings(config).variant
        return (ANDCurriculum if variant == "and" else InvPFrameworkKNN)(config, num_samples)
