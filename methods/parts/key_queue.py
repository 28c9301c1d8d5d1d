"""MoCo's queue of negative keys: a FIFO ring of the K most recent (all-gathered) momentum keys.

Initialised, as MoCo does, with random unit vectors, which act as negatives until overwritten.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class KeyQueue:
    """(K, D) keys and the write pointer; ``enqueue`` overwrites the oldest rows."""

    def __init__(self, keys: torch.Tensor, pointer: int = 0):
        if keys.dim() != 2 or not 0 <= pointer < keys.shape[0]:
            raise ValueError(f"queue keys must be (K, D) with 0 <= pointer < K, got {tuple(keys.shape)}, {pointer}")
        self.keys = keys
        self.pointer = pointer

    @classmethod
    def random(cls, size: int, dim: int, device: torch.device | str = "cpu") -> "KeyQueue":
        """A queue of ``size`` random unit keys (drawn from torch's global generator)."""
        return cls(F.normalize(torch.randn(size, dim), dim=1).to(device))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` (n, D) over the oldest rows, in order (as n single writes would; when
        n > K only the last K stay)."""
        count = keys.shape[0]
        slots = (self.pointer + torch.arange(count, device=self.keys.device)) % self.size
        self.keys[slots[-self.size :]] = keys.detach().to(self.keys)[-self.size :]
        self.pointer = (self.pointer + count) % self.size

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"keys": self.keys.detach().cpu().clone(), "pointer": self.pointer}

    @classmethod
    def restored(cls, state: dict, size: int) -> "KeyQueue":
        """The queue of a checkpoint, checking that it has ``size`` rows of finite keys."""
        keys = state["keys"]
        if keys.dim() != 2 or keys.shape[0] != size:
            raise ValueError(f"checkpoint queue has shape {tuple(keys.shape)} but queue_size is {size}; "
                             f"resume with the same method.queue_size")
        if not torch.isfinite(keys).all():
            raise ValueError("checkpoint queue holds NaN/inf keys; resume from an earlier checkpoint")
        return cls(keys.float().clone(), int(state["pointer"]))

    def to(self, device: torch.device | str) -> "KeyQueue":
        self.keys = self.keys.to(device)
        return self
