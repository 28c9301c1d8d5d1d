"""Stand-ins shared by the task tests: a tiny backbone that follows the backbone contract of
docs/CONTRACTS.md, an encoder handle that returns it, and a TaskContext builder."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from benchmark.core.config import RunConfig
from tasks.base import TaskContext


class TinyBackbone(nn.Module):
    """stem -> two residual-free blocks; ``forward`` = global average of the last block."""

    block_names = ["stem", "layer1.0", "layer2.0"]

    def __init__(self, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.feature_dim = 2 * width

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        stem = self.stem(x)
        one = self.layer1(stem)
        return [stem, one, self.layer2(one)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x)[-1].mean(dim=(2, 3))


class PixelBackbone(nn.Module):
    """The raw-pixels sanity encoder: the flattened image, no parameters, no blocks."""

    block_names: list[str] = []

    def __init__(self, feature_dim: int):
        super().__init__()
        self.feature_dim = feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@dataclass
class StandInEncoder:
    """EncoderHandle-like: ``load`` returns a fresh copy of ``backbone`` in eval mode,
    ``load_head`` one of ``head`` (a seeded Linear to 8 dimensions unless given; None for pixels)."""

    backbone: nn.Module
    config: Any
    kind: str = "pretrained"
    checkpoint_hash: str | None = "standin0001"
    loads: list[int] = field(default_factory=list)
    head: nn.Module | None = None

    def load(self, device: Any = "cpu") -> nn.Module:
        self.loads.append(1)
        return copy.deepcopy(self.backbone).to(device).eval()

    def load_head(self, backbone: nn.Module, device: Any = "cpu") -> nn.Module | None:
        if self.kind == "pixels":
            return None
        if self.head is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(1)
                self.head = nn.Linear(backbone.feature_dim, 8)
        return copy.deepcopy(self.head).to(device).eval()


def make_context(
    tmp_path: Path,
    task: str,
    settings: dict[str, Any],
    backbone: nn.Module | None = None,
    data_root: Path | None = None,
    kind: str = "pretrained",
) -> TaskContext:
    """A TaskContext for ``task`` with ``settings`` and a seeded TinyBackbone by default."""
    torch.manual_seed(0)
    config = RunConfig.from_dict(
        {"profile": "test", "seed": 0, "threads": 1, "data": {"num_workers": 0},
         "pretrain": {"channels_last": False}, "tasks": {task: settings}}
    )
    encoder = StandInEncoder(backbone or TinyBackbone(), config, kind=kind,
                             checkpoint_hash="standin0001" if kind == "pretrained" else None)
    return TaskContext(
        config=config,
        encoder=encoder,
        data_root=data_root or tmp_path / "data",
        device=torch.device("cpu"),
        seed=0,
        cache_dir=tmp_path / "cache",
        task_name=task,
    )
