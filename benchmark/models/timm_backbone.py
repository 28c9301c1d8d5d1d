"""Any timm model as a backbone (``model.backbone=timm:<name>``), when timm is installed."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from benchmark.core.config import ConfigError
from benchmark.core.fields import required
from benchmark.models.registry import register_backbone


class TimmBackbone(nn.Module):
    """A timm model without classifier; ``forward_blocks`` returns its stage outputs
    (``forward_intermediates``), named after timm's ``feature_info`` modules."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.feature_dim = int(model.num_features)
        self.block_names = [info["module"] for info in model.feature_info]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs as timm reports them (stage granularity, not every block)."""
        return list(self.model.forward_intermediates(x, intermediates_only=True))


@register_backbone("timm")
def timm_backbone(model_cfg: Mapping[str, Any]) -> TimmBackbone:
    """``timm:<name>``, randomly initialised, ``num_classes=0``, ``in_chans=model.in_channels``."""
    name = str(model_cfg["backbone"]).split(":", 1)[1]
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"model.backbone=timm:{name} needs timm: `pip install 'invp-bench[timm]'`"
        ) from None
    if not timm.is_model(name):
        raise ConfigError(f"model.backbone=timm:{name}: timm has no model {name!r} (see timm.list_models())")
    model = timm.create_model(
        name, pretrained=False, num_classes=0, in_chans=int(required(model_cfg, "in_channels", "model"))
    )
    return TimmBackbone(model)
