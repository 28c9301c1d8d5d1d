"""Weights files for the external-weights tests: a suite backbone saved in torchvision's layout."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import weight_formats_support

from benchmark.models import build_backbone
from benchmark.models.weight_formats import torchvision_name


def torchvision_file(path: Path, model_cfg: Mapping[str, Any], drop: str | None = None) -> Path:
    """A torchvision-layout state dict (``conv1``/``bn1``/``layerK`` + an ``fc`` classifier) of a
    randomly initialised (seed 0) suite backbone built from ``model_cfg``, saved at ``path``;
    ``drop``: a trunk key left out."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = build_backbone(model_cfg)
        fc = {"weight": torch.randn(10, backbone.feature_dim), "bias": torch.zeros(10)}
    trunk = {torchvision_name(key): value for key, value in backbone.state_dict().items()}
    trunk.pop(drop, None)
    return weight_formats_support.save("torchvision", trunk, fc, path)
