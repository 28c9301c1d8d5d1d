"""Projection heads: linear (feature_dim -> embed_dim) or the 2-layer MLP without BN."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from benchmark.core.config import ConfigError
from benchmark.core.fields import required
from benchmark.models.init import initialise

HEADS = ("linear", "mlp")


def embed_dim_of(model_cfg: Mapping[str, Any]) -> int:
    """The width D of the head's embeddings: ``model.embed_dim``."""
    return int(required(model_cfg, "embed_dim", "model"))


def build_head(model_cfg: Mapping[str, Any], feature_dim: int) -> nn.Module:
    """``model.head``: ``linear`` -> Linear(feature_dim, embed_dim); ``mlp`` ->
    Linear(feature_dim, feature_dim) -> ReLU -> Linear(feature_dim, embed_dim) (no BN); initialised
    by ``model.init``."""
    kind = required(model_cfg, "head", "model")
    embed_dim = embed_dim_of(model_cfg)
    if kind == "linear":
        head: nn.Module = nn.Linear(feature_dim, embed_dim)
    elif kind == "mlp":
        head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, embed_dim)
        )
    else:
        raise ConfigError(f"model.head={kind!r} is not a head; use --set model.head="
                          f"{' or '.join(HEADS)}")
    return initialise(head, required(model_cfg, "init", "model"))
