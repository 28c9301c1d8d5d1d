"""Backbone builders by name (``model.backbone``); ``timm:<name>`` is routed to timm."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from benchmark.core.fields import required
from benchmark.core.registry import Registry
from benchmark.models.backbone import Backbone

BackboneBuilder = Callable[[Mapping[str, Any]], Backbone]
BACKBONES: Registry[BackboneBuilder] = Registry("backbone", key="model.backbone",
                                                hint="or timm:<model name>")


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: make ``builder(model_cfg) -> Backbone`` available as ``model.backbone=name``."""

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        return BACKBONES.add(name, builder)

    return wrap


def available_backbones() -> list[str]:
    """Registered backbone names (``timm:<name>`` works too when timm is installed)."""
    return BACKBONES.names()


def build_backbone(model_cfg: Mapping[str, Any]) -> Backbone:
    """The backbone named by ``model_cfg['backbone']``, freshly initialised (docs/methods/invp.md §Networks)."""
    name = str(required(model_cfg, "backbone", "model"))
    return BACKBONES.get("timm" if name.startswith("timm:") else name)(model_cfg)
