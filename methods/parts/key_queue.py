"""MoCo's queue of negative keys: a FIFO ring of the K most recent (all-gathered) momentum keys.

Initialised, as MoCo does, with random unit vectors (``random_unit_keys``), which act as
negatives until overwritten.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.state import Stateful


def random_unit_keys(size: int, dim: int) -> torch.Tensor:
    """(size, dim) random unit vectors, drawn on the CPU from torch's global generator."""
    return F.normalize(torch.randn(size, dim), dim=1)


class KeyQueue(Stateful):
    """(K, D) keys and the write pointer; ``enqueue`` overwrites the oldest rows. ``filled`` is
    False until the initial keys are set (``fill``)."""

    state_names = ("keys", "pointer", "filled")
    state_shapes = "the key queue is method.queue_size x model.embed_dim"

    def __init__(self, keys: torch.Tensor, pointer: int = 0, filled: bool = True):
        self.keys = keys
        self.pointer = pointer
        self.filled = filled
        self.check_loaded_state()

    @classmethod
    def empty(cls, size: int, dim: int) -> "KeyQueue":
        """An unfilled queue of ``size`` zero keys of width ``dim``."""
        return cls(torch.zeros(size, dim), filled=False)

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    def fill(self, keys: torch.Tensor) -> None:
        """Set the initial keys (K, D), kept as float32 on the queue's device."""
        self.keys = self.initial_tensor("keys", keys)
        self.filled = True

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (n, D) over the oldest rows, in order (as n single writes would; when
        n > K only the last K stay)."""
        count = keys.shape[0]
        slots = (self.pointer + torch.arange(count, device=self.keys.device)) % self.size
        self.keys[slots[-self.size :]] = keys.detach().to(self.keys)[-self.size :]
        self.pointer = (self.pointer + count) % self.size

    def check_loaded_state(self) -> None:
        if self.keys.dim() != 2 or not 0 <= self.pointer < self.keys.shape[0]:
            raise ValueError(f"queue keys must be (K, D) with 0 <= pointer < K, got {tuple(self.keys.shape)}, "
                             f"{self.pointer}")
