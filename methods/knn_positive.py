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

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from benchmark.core.fields import Bool, Choice, Float, Int
from benchmark.core.settings import block, read_settings, require, setting
from methods.base import LossOutput, Method, no_autocast, register
from methods.invp import N_BACKGROUND, InvP, InvPSettings
from methods.parts.anchor_neighbourhoods import bank_entropies_and_neighbours, select_anchors
from methods.parts.bank_method import MEMORY_MOMENTUM, BankMethod
from methods.parts.diagnostics import label_precision
from methods.parts.losses import and_loss
from methods.parts.ramp import RampSettings


@dataclass(frozen=True)
class KNNSettings:
    """Options of ``knn``; the and_* ones apply to ``variant: and`` only."""

    variant: str = setting(spec=Choice(("invp", "and")))
    temperature: float = setting(spec=Float(gt=0))
    memory_momentum: float = setting(spec=MEMORY_MOMENTUM)
    k: int = setting(spec=Int(ge=1))  # K nearest neighbours used as positives (invp variant)
    n_background: int | str = setting(spec=N_BACKGROUND)
    exclusive: bool = setting(spec=Bool())
    lam: float = setting(spec=Float(ge=0))
    ramp: RampSettings = block(RampSettings)
    and_rounds: int = setting(spec=Int(ge=1))  # curriculum rounds after round 0
    and_round_epochs: int = setting(spec=Int(ge=1))  # epochs per round
    and_anchor_k: int = setting(spec=Int(ge=1))  # neighbourhood size of an anchor


def read_knn_settings(config: Mapping[str, Any]) -> KNNSettings:
    """The ``knn`` options of ``config``, typed and checked."""
    return read_settings(KNNSettings, config, "knn")


class InvPFrameworkKNN(InvP):
    """InvP with steps=1 and all K graph neighbours as positives (docs/methods/knn-positive.md §InvP-framework KNN)."""

    name = "knn"
    summary = "KNN positives inside the InvP framework"

    @classmethod
    def check_settings(cls, config: Mapping[str, Any]) -> InvPSettings:
        """The ``knn`` options as the InvP settings they stand for (steps 1, all K neighbours)."""
        s = read_knn_settings(config)
        settings = InvPSettings(temperature=s.temperature, memory_momentum=s.memory_momentum, k=s.k, steps=1,
                                n_pos=s.k, n_background=s.n_background, exclusive=s.exclusive, hard_positive=True,
                                propagation="concat", lam=s.lam, ramp=s.ramp)
        cls.validate_settings(settings)
        return settings


class ANDCurriculum(BankMethod):
    """AND (Huang et al. 2019) with anchor neighbourhoods fixed per curriculum round (docs/methods/knn-positive.md §AND)."""

    name = "knn"
    summary = "AND: curriculum anchor neighbourhoods over a full softmax"

    settings_class = KNNSettings
    state_names = ("round", "is_anchor", "anchor_neighbours")
    state_shapes = "AND's anchor neighbourhoods are training samples x method.and_anchor_k"

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        s = self.settings
        require(s.and_anchor_k < num_samples, self.name, "and_anchor_k", f"in [1, {num_samples - 1}]",
                s.and_anchor_k)
        self.round = 0
        self.is_anchor = torch.zeros(num_samples, dtype=torch.bool)
        self.anchor_neighbours = torch.zeros(num_samples, s.and_anchor_k, dtype=torch.long)

    def round_of(self, epoch: int) -> int:
        """Curriculum round of a 1-based epoch: 0 (instance discrimination) up to and_rounds."""
        return min((epoch - 1) // self.settings.and_round_epochs, self.settings.and_rounds)

    def on_epoch_start(self, epoch: int) -> None:
        target = self.round_of(epoch)
        if target == self.round or not self.bank.filled:
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


@register
class KNNPositive(Method):
    """Registry entry ``knn``: builds the variant named by ``config['variant']``."""

    name = "knn"
    summary = "KNN positives: InvP-framework K nearest neighbours (variant invp) or AND rounds (variant and)"

    @staticmethod
    def variant_class(config: Mapping[str, Any]) -> type[Method]:
        """The class of the variant named by ``config['variant']``."""
        return ANDCurriculum if read_knn_settings(config).variant == "and" else InvPFrameworkKNN

    @classmethod
    def check_settings(cls, config: Mapping[str, Any]) -> Any:
        return cls.variant_class(config).check_settings(config)

    @classmethod
    def create(cls, config: Mapping[str, Any], num_samples: int, embed_dim: int) -> Method:
        """The variant named by ``config['variant']``."""
        return cls.variant_class(config)(config, num_samples, embed_dim)
