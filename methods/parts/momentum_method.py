"""Shared part of the momentum-encoder methods (MoCo v2, InterCLR, CLIM): two named views, the
engine's key encoder, the queue of negative keys and the post-step update.

``loss`` receives {"query": q, "key": k} (both L2-normalised, k without gradient). ``update``
(after the optimizer step) all-gathers the batch's indices and keys, so every rank applies the
same update: enqueue the keys, then ``after_step(indices, keys, step)``, the hook for subclasses
that keep more state (a bank, pseudo-labels) or do periodic work keyed on the step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from benchmark.core.fields import Choice, Float, Int
from benchmark.core.settings import require, setting
from methods.base import KEY_MOMENTUM_SCHEDULES, KeyEncoderSpec, Method
from methods.parts.dist_utils import all_gather_cat, broadcast_from_rank0
from methods.parts.key_queue import KeyQueue, random_unit_keys

QUERY, KEY = "query", "key"


@dataclass(frozen=True)
class MomentumSettings:
    """Options every momentum-encoder method has (values: the profile's methods block; MoCo v2 on
    ImageNet in profiles/methods/imagenet.yaml)."""

    temperature: float = setting(spec=Float(gt=0))
    queue_size: int = setting(spec=Int(ge=1))
    key_momentum: float = setting(spec=Float(ge=0, lt=1))
    # constant | cosine (raised to 1 over training)
    key_momentum_schedule: str = setting(spec=Choice(KEY_MOMENTUM_SCHEDULES))
    bn_splits: int = setting(spec=Int(ge=1))  # shuffled sub-batches per process with their own BN statistics (keys)


class MomentumMethod(Method):
    """A method with a momentum key encoder and a queue of keys; subclasses define ``loss``.

    The queue (K, D) is allocated when the method is built; its initial keys are drawn from
    torch's global generator at the first ``loss`` (unless a checkpoint filled it), after what
    ``on_train_start``, ``on_epoch_start`` and ``prepare_batch`` draw (InterCLR's seed, CLIM's
    k-means seed and mixing draws): the order of the recorded runs. Under DDP rank 0's keys are
    broadcast.
    """

    views = (QUERY, KEY)
    settings_class = MomentumSettings
    drop_last = True  # main_moco.py; equal batches for the queue and the shuffled/split key BN
    state_names = ("queue", "steps")

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        s = self.settings
        require(s.queue_size < num_samples, self.name, "queue_size",
                f"below the {num_samples} training samples (fewer keys than samples)", s.queue_size)
        self.key_encoder_spec = KeyEncoderSpec((KEY,), s.key_momentum, s.key_momentum_schedule, s.bn_splits)
        self.queue = KeyQueue.empty(s.queue_size, embed_dim)
        self.steps = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def _prepare(self, embeddings: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the views; return float32 (q, k) and int64 indices, and stash (indices, k); the
        initial queue is drawn first if it is still empty."""
        if not isinstance(embeddings, Mapping) or not {QUERY, KEY} <= set(embeddings):
            got = sorted(embeddings) if isinstance(embeddings, Mapping) else type(embeddings).__name__
            raise ValueError(f"method {self.name!r}: expected embeddings of the views {QUERY!r} and {KEY!r}, "
                             f"got {got}")
        q, k = embeddings[QUERY], embeddings[KEY]
        if q.shape != k.shape:
            raise ValueError(f"method {self.name!r}: query and key embeddings differ in shape: "
                             f"{tuple(q.shape)} vs {tuple(k.shape)}")
        q, k = self.checked_view(q, indices), self.checked_view(k, indices).detach()
        if not self.queue.filled:
            self.queue.fill(random_unit_keys(self.queue.size, self.embed_dim))
            broadcast_from_rank0(self.queue.keys)
        idx = indices.to(self.device, torch.long)
        self._pending = (idx, k)
        return q, k, idx

    def update(self) -> None:
        if self._pending is None:
            raise RuntimeError(f"method {self.name!r}: update() called without a preceding loss()")
        indices, keys = (all_gather_cat(t) for t in self._pending)
        self._pending = None
        self.queue.enqueue(keys)
        self.after_step(indices, keys, self.steps)
        self.steps += 1

    def after_step(self, indices: torch.Tensor, keys: torch.Tensor, step: int) -> None:
        """Hook after the enqueue with every rank's ``indices`` (n,) and ``keys`` (n, D) of step
        ``step`` (0-based count of this run's updates)."""
