"""The interface every pretext method implements, and the method registry.

Life cycle inside the pretraining engine, per step::

    out = method.loss(embeddings, indices, epoch)   # embeddings: (B, D) L2-normalised, with grad
    out.loss.backward(); optimizer.step()
    method.update()                                 # bank / graph update from the pre-step
                                                    # embeddings, all-gathered across ranks

``on_epoch_start(epoch)`` runs before the first step of every epoch (1-based epochs, as the
official InvP code counts them). Labels, when known, reach a method only through
``set_diagnostic_labels`` and may only be used for logged diagnostics, never for the loss.

Multi-view methods (MoCo v2 and its family) declare named ``views``: the data path then gives
every image one independently augmented view per name, and ``loss`` receives a dict of
L2-normalised embeddings by view name; ``view_sizes(config)`` may add views (e.g. at lower
resolutions) that depend on the method's options. A method whose ``key_encoder_spec`` is set makes the
engine own a momentum (EMA) copy of backbone + head that encodes the spec's views without
gradient (shuffled, split-batch BN); the other views go through the trained encoder. Per step::

    views = method.prepare_batch(views, indices, fetch)  # input-level work (e.g. mixing)
    out = method.loss({name: embedding}, indices, epoch)
    ...; method.update()

``on_train_start(extract)`` runs once before the first step of a fresh run (never on resume);
``extract()`` returns the clean (eval-transform) normalised embeddings of the whole training set.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import torch

from benchmark.core.registry import Registry


@dataclass
class LossOutput:
    """A method's loss for one step and the named scalars it wants logged."""
    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


KEY_MOMENTUM_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class KeyEncoderSpec:
    """What a method asks of the engine's momentum key encoder.

    ``views``: the named views it encodes (no gradient); ``momentum``: the EMA momentum m
    (key <- m * key + (1 - m) * query), constant or raised to 1 on a half-cosine over training
    (``schedule``: constant | cosine, BYOL's rule); ``bn_splits``: sub-batches per process whose
    BatchNorm statistics are computed apart, on a shuffled batch (MoCo's shuffle-BN; under DDP the
    shuffle spans all ranks).
    """

    views: tuple[str, ...]
    momentum: float
    schedule: str = "constant"
    bn_splits: int = 1

    def momentum_at(self, step: int, total_steps: int) -> float:
        """The momentum of global step ``step`` (0-based) of ``total_steps``."""
        if self.schedule == "constant":
            return self.momentum
        return 1.0 - (1.0 - self.momentum) * (math.cos(math.pi * step / max(total_steps, 1)) + 1.0) / 2.0


Fetch = Callable[[torch.Tensor], dict[str, torch.Tensor]]  # training views of any sample indices


class Method(ABC):
    """A pretext method (InvP, InsDis, KNN-positive, MoCo v2, ...)."""
    name: ClassVar[str]
    summary: ClassVar[str]
    views: ClassVar[tuple[str, ...]] = ()  # named views per image; () = one unnamed view (a tensor)

    def __init__(self, config: Mapping[str, Any], num_samples: int):
        self.config = config
        self.num_samples = num_samples
        self.diagnostic_labels: torch.Tensor | None = None
        self.key_encoder_spec: KeyEncoderSpec | None = None

    @classmethod
    def create(cls, config: Mapping[str, Any], num_samples: int) -> "Method":
        """The method for ``config`` (a registry entry may build one of its variants)."""
        return cls(config, num_samples)

    @classmethod
    def view_sizes(cls, config: Mapping[str, Any]) -> dict[str, int | None]:
        """The named views the data path draws for a run of ``config``, each with its output side
        (None = the recipe's; smaller sides give multi-resolution views). Default: ``views``."""
        return dict.fromkeys(cls.views)

    @property
    def needs_key_encoder(self) -> bool:
        """True when the engine must keep a momentum key encoder for this method."""
        return self.key_encoder_spec is not None

    @abstractmethod
    def loss(self, embeddings: Any, indices: torch.Tensor, epoch: int) -> LossOutput:
        """Loss of samples ``indices`` (B,) given their L2-normalised embeddings: a tensor (B, D)
        for single-view methods, else a dict of (B, D) tensors by view name."""

    @abstractmethod
    def update(self) -> None:
        """Apply the state update prepared by the last ``loss`` call (after the optimizer step)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before the first step of ``epoch`` (1-based)."""

    def on_train_start(self, extract: Callable[[], torch.Tensor]) -> None:
        """Hook once before the first step of a fresh run; ``extract()`` gives the clean
        embeddings (N, D) of every training sample (computed only if called)."""

    def prepare_batch(self, views: dict[str, torch.Tensor], indices: torch.Tensor,
                      fetch: Fetch) -> dict[str, torch.Tensor]:
        """Multi-view methods: the views to encode, on the device, from the loaded ones (e.g. add
        a mixed view); ``fetch(idx)`` loads the training views of other samples."""
        return views

    def set_diagnostic_labels(self, labels: torch.Tensor | None) -> None:
        """Labels of the training samples, for logged diagnostics only (never for the loss)."""
        self.diagnostic_labels = labels

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (bank, neighbour table, counters)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    @abstractmethod
    def to(self, device: torch.device | str) -> "Method":
        """Move the method's state to ``device``; returns self."""


METHODS: Registry[type[Method]] = Registry("method")
register = METHODS.register  # class decorator: make a method available by its ``name``


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line summaries."""
    return {name: cls.summary for name, cls in METHODS.items()}


def method_class(name: str) -> type[Method]:
    """The registered class of method ``name`` (its class attributes, e.g. ``views``)."""
    return METHODS.get(name)


def build_method(config: Mapping[str, Any], num_samples: int) -> Method:
    """Instantiate the method named ``config['name']`` for a dataset of ``num_samples``."""
    return method_class(config["name"]).create(config, num_samples)
