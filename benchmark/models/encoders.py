"""Encoders for evaluation tasks: a pretrained backbone, a seeded random one, or raw pixels.

``load_encoder_backbone(handle, device)`` serves ``tasks.base.EncoderHandle.load``; the result
follows the backbone contract of docs/CONTRACTS.md and is in eval mode on ``device``.
``load_encoder_head(handle, backbone, device)`` serves ``EncoderHandle.load_head``: the projection
head whose output is the embedding the methods train (the kNN task's ``layer: embedding``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from benchmark.core.safe_load import CorruptFile, load_weights_only
from benchmark.data.augment import get_recipe
from benchmark.models.heads import build_head
from benchmark.models.registry import build_backbone

ENCODER_KINDS = ("pretrained", "random", "pixels")
ENCODER_KEYS = ("backbone", "config")
ENCODER_REMEDY = "Pretrain it again with `--force` (or delete it)"
HEAD_REMEDY = "Pretrain it again with `--force`, or use the backbone features (e.g. --set tasks.knn.layer=pooled)"


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


def read_encoder_checkpoint(path: str | Path, remedy: str = ENCODER_REMEDY) -> Mapping[str, Any]:
    """The contents of an ``encoder.pt`` (loaded without running code), checked to hold a
    backbone and its config; raises :class:`benchmark.core.safe_load.LoadError` naming the file and
    ending with ``remedy`` otherwise."""
    state = load_weights_only(path, remedy)
    if not isinstance(state, Mapping) or not all(key in state for key in ENCODER_KEYS):
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise CorruptFile(path, f"is not an encoder checkpoint (expected keys {', '.join(ENCODER_KEYS)}; "
                                f"found {found})", remedy)
    return state


def _pretrained(handle: Any) -> nn.Module:
    if handle.checkpoint is None:
        raise ValueError("a pretrained EncoderHandle needs `checkpoint` (the run's encoder.pt)")
    state = read_encoder_checkpoint(handle.checkpoint)
    backbone = build_backbone(state["config"]["model"])
    backbone.load_state_dict(state["backbone"])
    return backbone


def _random(handle: Any) -> nn.Module:
    """The initial backbone of the run's pretraining (same seed), without touching the caller's RNG."""
    return _initial_encoder(handle)[0]


def _initial_encoder(handle: Any) -> tuple[nn.Module, nn.Module]:
    """Backbone and head as the run's pretraining builds them before its first step (the run
    seed, backbone first), without touching the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(handle.config.seed))
        backbone = build_backbone(handle.config.model)
        return backbone, build_head(handle.config.model, backbone.feature_dim)


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


def load_encoder_head(handle: Any, backbone: nn.Module, device: torch.device | str = "cpu") -> nn.Module | None:
    """The projection head of ``handle`` on top of ``backbone`` (``pretrained``: the head saved in
    ``handle.checkpoint``; ``random``: the run's initial head), eval mode; None for ``pixels``,
    which has no head. An encoder file without a head raises a LoadError naming it."""
    if handle.kind == "pixels":
        return None
    if handle.kind == "pretrained":
        state = read_encoder_checkpoint(handle.checkpoint)
        if "head" not in state:
            raise CorruptFile(handle.checkpoint, "holds no projection head (key `head`), which the "
                              "embedding layer needs", HEAD_REMEDY)
        head = build_head(state["config"]["model"], backbone.feature_dim)
        head.load_state_dict(state["head"])
    elif handle.kind == "random":
        head = _initial_encoder(handle)[1]
    else:
        raise ValueError(f"encoder kind {handle.kind!r} is unknown; valid kinds: {', '.join(ENCODER_KINDS)}")
    return head.to(device).eval()
