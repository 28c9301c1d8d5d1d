"""The interface every pretext method implements, and the method registry.

Life cycle inside the pretraining engine, per step::

    out = method.loss(embeddings, indices, epoch)   # embeddings: (B, D) L2-normalised, with grad
    out.loss.backward(); optimizer.step()
    method.update()                                 # bank / graph update from the pre-step
                                                    # embeddings, all-gathered across ranks

``on_epoch_start(epoch)`` runs before the first step of every epoch (1-based epochs, as the
official InvP code counts them). Labels, when known, reach a method only through
``set_diagnostic_labels`` and may only be used for logged diagnostics, never for the loss.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import torch


@dataclass
class LossOutput:
    """A method's loss for one step and the named scalars it wants logged."""

    loss: torch.Tensor
    logs: dict[str, float] = field(default_factory=dict)


class Method(ABC):
    """A memory-bank pretext method (InvP, InsDis, KNN-positive, ...)."""

    name: ClassVar[str]
    summary: ClassVar[str]

    def __init__(self, config: Mapping[str, Any], num_samples: int):
        self.config = config
        self.num_samples = num_samples
        self.diagnostic_labels: torch.Tensor | None = None

    @abstractmethod
    def loss(self, embeddings: torch.Tensor, indices: torch.Tensor, epoch: int) -> LossOutput:
        """Loss of a batch of L2-normalised embeddings (B, D) of samples ``indices`` (B,)."""

    @abstractmethod
    def update(self) -> None:
        """Apply the state update prepared by the last ``loss`` call (after the optimizer step)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Hook before the first step of ``epoch`` (1-based)."""

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


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> dict[str, str]:
    """Registered method names and their one-line summaries."""
    import methods  # noqa: F401  (importing the package registers every method)

    return {name: cls.summary for name, cls in sorted(_REGISTRY.items())}


def build_method(config: Mapping[str, Any], num_samples: int) -> Method:
    """Instantiate the method named ``config['name']`` for a dataset of ``num_samples``."""
    import methods  # noqa: F401

    name = config["name"]
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](config, num_samples)
