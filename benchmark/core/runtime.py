"""Process-level set-up shared by every job: device choice, threads, cuDNN autotuning, seeding."""
from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; otherwise the named device (checked). CUDA devices
    always carry their index."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if spec == "auto" else spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available; use --set device=cpu")
    if device.type == "cuda" and device.index is None:
        # always indexed, so that devices compare equal to the ones tensors report ("cuda:0")
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def configure_threads(threads: int) -> None:
    """Set torch's intra-op threads (0 keeps torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def configure_cudnn(benchmark: bool) -> None:
    """cuDNN's autotuner on or off: on, each new input shape is timed once over the convolution
    algorithms and the fastest kept (for fixed-size inputs; results then depend on which won)."""
    torch.backends.cudnn.benchmark = benchmark


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from one run seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
