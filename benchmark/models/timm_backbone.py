"""Any timm model as a backbone (``model.backbone=timm:<name>``), when timm is installed.

A timm ResNet (``conv1``, ``bn1``, ``act1``, ``maxpool``, ``layer1``..``layer4``: resnet18/50,
resnet10t, ResNet-D, ResNeXt, SE-ResNet, ...) is a :class:`TimmResNetBackbone`: its blocks are
named and tapped as the suite Backbone's (``stem``, ``layer1.0``, ...), so the probes' layer
settings and the detection task's C4 split (``stem``/``stages``) work on it. Any other model is a
:class:`TimmBackbone` with stage-level taps (``forward_intermediates``), named after timm's
``feature_info`` modules; it has no stem/stages split.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from benchmark.core.config import ConfigError
from benchmark.core.fields import required
from benchmark.models.backbone import Backbone
from benchmark.models.registry import register_backbone

RESNET_STEM = ("conv1", "bn1", "act1", "maxpool")
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


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


class TimmResNetBackbone(TimmBackbone):
    """A timm ResNet with the suite Backbone's taps: ``stem`` (conv1, bn1, act1, maxpool), then
    every residual block (``layer1.0``, ...); ``stem`` and ``stages`` view the timm modules (no
    copies: the state dict keeps timm's names under ``model.``)."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.block_names = ["stem"] + [f"{stage}.{b}" for stage in RESNET_STAGES
                                       for b in range(len(getattr(model, stage)))]

    @property
    def stem(self) -> nn.Sequential:
        """conv1, bn1, act1, maxpool of the timm model."""
        return nn.Sequential(*(getattr(self.model, name) for name in RESNET_STEM))

    @property
    def stages(self) -> nn.ModuleList:
        """layer1..layer4 of the timm model."""
        return nn.ModuleList(getattr(self.model, name) for name in RESNET_STAGES)

    forward_blocks = Backbone.forward_blocks  # the stem output, then every residual block's output


def has_resnet_layout(model: nn.Module) -> bool:
    """Whether ``model`` is built as a torchvision-style ResNet (stem modules, four Sequential stages)."""
    return all(isinstance(getattr(model, name, None), nn.Module) for name in RESNET_STEM) and all(
        isinstance(getattr(model, name, None), nn.Sequential) for name in RESNET_STAGES)


@register_backbone("timm")
def timm_backbone(model_cfg: Mapping[str, Any]) -> TimmBackbone:
    """``timm:<name>``, randomly initialised, ``num_classes=0``, ``in_chans=model.in_channels``;
    a :class:`TimmResNetBackbone` when the model has the ResNet layout."""
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
    return TimmResNetBackbone(model) if has_resnet_layout(model) else TimmBackbone(model)
