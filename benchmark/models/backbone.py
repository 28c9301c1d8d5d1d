"""The backbone shape every task relies on: a stem, residual stages, global average pooling."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Backbone(nn.Module):
    """Stem followed by residual stages; ``forward`` returns pooled features (B, feature_dim).

    ``forward_blocks`` returns the stem output and then the output of every residual block, in
    order, named by ``block_names`` (``stem``, ``layer1.0``, ``layer1.1``, ...).
    """

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Sequential], feature_dim: int):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.feature_dim = feature_dim
        self.block_names = ["stem"] + [
            f"layer{s + 1}.{b}" for s, stage in enumerate(self.stages) for b in range(len(stage))
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stem output, then every residual block's output (feature maps, not pooled)."""
        x = self.stem(x)
        outputs = [x]
        for stage in self.stages:
            for block in stage:
                x = block(x)
                outputs.append(x)
        return outputs
