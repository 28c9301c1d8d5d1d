"""Backbone builders by name (``model.backbone``); ``timm:<name>`` is routed to timm."""
from __future__ import annotations

from typing import Any, Callable, Mapping

from benchmark.config import ConfigError
from benchmark.models.backbone import Backbone

BackboneBuilder = Callable[[Mapping[str, Any]], Backbone]
_BUILDERS: dict[str, BackboneBuilder] = {}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: make ``builder(model_cfg) -> Backbone`` available as ``model.backbone=name``."""

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        _BUILDERS[name] = builder
        return builder

    return wrap


def available_backbones() -> list[str]:
    """Registered backbone names (``timm:<name>`` works too when timm is installed)."""
    return sorted(_BUILDERS)


def build_backbone(model_cfg: Mapping[str, Any]) -> Backbone:
    """The backbone named by ``model_cfg['backbone']``, freshly initialised (docs/methods/invp.md §Networks)."""
    name = str(model_cfg.get("backbone", ""))
    if name.startswith("timm:"):
        return _BUILDERS["timm"](model_cfg)
    if name not in _BUILDERS:
        raise ConfigError(
            f"model.backbone={name!r} is unknown; valid backbones: "
            f"{', '.join(available_backbones())} or timm:<model name>"
        )
    return _BUILDERS[name](model_cfg)
