"""Shared part of the momentum-encoder methods (MoCo v2, InterCLR, CLIM): two named views, the
engine's key encoder, the queue of negative keys, the post-step update and checkpoint state.

``loss`` receives {"query": q, "key": k} (both L2-normalised, k without gradient). ``update``
(after the optimizer step) all-gathers the batch's indices and keys, so every rank applies the
same update: enqueue the keys, then ``after_step(indices, keys, step)``, the hook for subclasses
that keep more state (a bank, pseudo-labels) or do periodic work keyed on the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from benchmark.core.settings import read_settings, require
from methods.base import KEY_MOMENTUM_SCHEDULES, KeyEncoderSpec, LossOutput, Method
from methods.parts.bank_method import check_batch
from methods.parts.dist_utils import all_gather_cat, broadcast_from_rank0
from methods.parts.key_queue import KeyQueue

QUERY, KEY = "query", "key"


@dataclass(frozen=True)
class MomentumSettings:
    """Options every momentum-encoder method has (defaults: MoCo v2 on ImageNet)."""

    temperature: float = 0.2
    queue_size: int = 65536
    key_momentum: float = 0.999
    key_momentum_schedule: str = "constant"  # constant | cosine (raised to 1 over training)
    bn_splits: int = 1  # shuffled sub-batches per process with their own BN statistics (keys)


class MomentumMethod(Method):
    """A method with a momentum key encoder and a queue of keys; subclasses define ``loss``."""

    views = (QUERY, KEY)
    settings_class: type[MomentumSettings] = MomentumSettings

    def __init__(self, config: Mapping[str, Any], num_samples: int):
        super().__init__(config, num_samples)
        self.settings = read_settings(self.settings_class, config, self.name)
        s = self.settings
        require(s.temperature > 0, self.name, f"option temperature must be > 0, got {s.temperature}")
        require(1 <= s.queue_size < num_samples, self.name,
                f"option queue_size must be in [1, {num_samples}) (fewer keys than training samples), "
                f"got {s.queue_size}")
        require(0 <= s.key_momentum < 1, self.name, f"option key_momentum must be in [0, 1), got {s.key_momentum}")
        require(s.key_momentum_schedule in KEY_MOMENTUM_SCHEDULES, self.name,
                f"option key_momentum_schedule must be one of {', '.join(KEY_MOMENTUM_SCHEDULES)}, "
                f"got {s.key_momentum_schedule!r}")
        require(s.bn_splits >= 1, self.name, f"option bn_splits must be >= 1, got {s.bn_splits}")
        self.key_encoder_spec = KeyEncoderSpec((KEY,), s.key_momentum, s.key_momentum_schedule, s.bn_splits)
        self.device = torch.device("cpu")
        self.queue: KeyQueue | None = None  # created at the first loss, when D is known
        self.steps = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _prepare(self, embeddings: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the views; return float32 (q, k) and int64 indices, and stash (indices, k)."""
        if not isinstance(embeddings, Mapping) or not {QUERY, KEY} <= set(embeddings):
            got = sorted(embeddings) if isinstance(embeddings, Mapping) else type(embeddings).__name__
            raise ValueError(f"method {self.name!r}: expected embeddings of the views {QUERY!r} and {KEY!r}, "
                             f"got {got}")
        q, k = embeddings[QUERY], embeddings[KEY]
        for view in (q, k):
            check_batch(view, indices, self.num_samples, self.name)
            if view.device != self.device:
                raise ValueError(f"method {self.name!r}: embeddings are on {view.device} but the method's "
                                 f"state is on {self.device}; call method.to(device) after building it")
        if q.shape != k.shape:
            raise ValueError(f"method {self.name!r}: query and key embeddings differ in shape: "
                             f"{tuple(q.shape)} vs {tuple(k.shape)}")
        self._ensure_queue(q.shape[1])
        idx = indices.to(self.device, torch.long)
        self._pending = (idx, k.detach().float())
        return q.float(), k.detach().float(), idx

    def _ensure_queue(self, dim: int) -> KeyQueue:
        if self.queue is None:
            self.queue = KeyQueue.random(self.settings.queue_size, dim, self.device)
            broadcast_from_rank0(self.queue.keys)
        elif self.queue.keys.shape[1] != dim:
            raise ValueError(f"method {self.name!r}: embeddings have D={dim} but the queue has "
                             f"D={self.queue.keys.shape[1]}; model.embed_dim must not change during a run")
        return self.queue

    @staticmethod
    def _output(loss: torch.Tensor, logs: Mapping[str, torch.Tensor]) -> LossOutput:
        """The LossOutput with every log a float (one host transfer)."""
        values = torch.stack([t.detach().float() for t in logs.values()]).tolist()
        return LossOutput(loss, dict(zip(logs, values)))

    def update(self) -> None:
        if self._pending is None:
            raise RuntimeError(f"method {self.name!r}: update() called without a preceding loss()")
        indices, keys = (all_gather_cat(t) for t in self._pending)
        self._pending = None
        assert self.queue is not None
        self.queue.enqueue(keys)
        self.after_step(indices, keys, self.steps)
        self.steps += 1

    def after_step(self, indices: torch.Tensor, keys: torch.Tensor, step: int) -> None:
        """Hook after the enqueue with every rank's ``indices`` (n,) and ``keys`` (n, D) of step
        ``step`` (0-based count of this run's updates)."""

    def state_dict(self) -> dict[str, Any]:
        return {"queue": None if self.queue is None else self.queue.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        queue = state.get("queue")
        self.queue = None if queue is None else KeyQueue.restored(queue, self.settings.queue_size).to(self.device)
        self.steps = int(state.get("steps", 0))

    def to(self, device: torch.device | str) -> "MomentumMethod":
        self.device = torch.empty(0, device=device).device
        if self.queue is not None:
            self.queue.to(self.device)
        if self.diagnostic_labels is not None:
            self.diagnostic_labels = self.diagnostic_labels.to(self.device)
        return self
