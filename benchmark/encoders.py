"""Encoders for evaluation tasks: a pretrained backbone, a seeded random one, or raw pixels.

``load_encoder_backbone(handle, device)`` serves ``tasks.base.EncoderHandle.load``; the result
follows the backbone contract of docs/CONTRACTS.md and is in eval mode on ``device``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from benchmark.augment import get_recipe
from benchmark.models import build_backbone

ENCODER_KINDS = ("pretrained", "random", "pixels")


class PixelEncoder(nn.Module):
    """Raw pixels as features: the flattened image (feature_dim = C * H * W)."""

    block_names = ["pixels"]

    def __init__(self, input_shape: tuple[int, int, int]):
        super().__init__()
        channels, height, width = input_shape
        self.feature_dim = channels * height * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1)

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """A single "block": the flattened image."""
        return [self.forward(x)]


def _pretrained(handle: Any) -> nn.Module:
    if handle.checkpoint is None:
        raise ValueError("a pretrained EncoderHandle needs `checkpoint` (the run's encoder.pt)")
    state = torch.load(handle.checkpoint, map_location="cpu", weights_only=False)
    if "backbone" not in state or "config" not in state:
        raise ValueError(f"{handle.checkpoint} is not an encoder checkpoint (expected keys backbone, "
                         f"config; found {sorted(state)}); pass <run_dir>/encoder.pt")
    backbone = build_backbone(state["config"]["model"])
    backbone.load_state_dict(state["backbone"])
    return backbone


def _random(handle: Any) -> nn.Module:
    """The initial backbone of the run's pretraining (same seed), without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(handle.config.seed))
        return build_backbone(handle.config.model)


def load_encoder_backbone(handle: Any, device: torch.device | str = "cpu") -> nn.Module:
    """The backbone ``handle`` describes (``pretrained``: ``handle.checkpoint``; ``random``: built
    from ``handle.config.model`` with the run seed; ``pixels``: flattened images), eval mode."""
    if handle.kind == "pretrained":
        encoder = _pretrained(handle)
    elif handle.kind == "random":
        encoder = _random(handle)
    elif handle.kind == "pixels":
        encoder = PixelEncoder(get_recipe(handle.config.data.augment).input_shape)
    else:
        raise ValueError(f"encoder kind {handle.kind!r} is unknown; valid kinds: {', '.join(ENCODER_KINDS)}")
    return encoder.to(device).eval()
