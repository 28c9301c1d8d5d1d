"""Model and optimizer wiring: the encoder (backbone + head), the method, its momentum key
encoder, SGD, the gradient scaler, autocast, and the DDP/compile wrapping of the trained model.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ContextManager, Iterator, Mapping

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.distributed import DistContext
from benchmark.core.runtime import seed_everything
from benchmark.engine.data import PretrainData
from benchmark.engine.key_encoder import KeyEncoder
from benchmark.models import build_backbone, build_head, embed_dim_of
from methods.base import Method, build_method

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = ("sgd",)


class Encoder(nn.Module):
    """Backbone followed by the projection head (un-normalised embeddings)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class GroupedEncoder(nn.Module):
    """The encoder applied to several image batches in one call (one per input resolution), so
    that under DDP a step is one forward and one backward of the wrapped model, DDP's documented
    pattern (several forwards before one backward did run in a 2-rank gloo toy on torch 2.14, but
    are outside that pattern)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, *batches: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.encoder(images) for images in batches)


def autocast_factory(pretrain_cfg: Mapping[str, Any], device: torch.device) -> Callable[[], ContextManager]:
    """A zero-argument factory of the autocast context ``pretrain.amp``/``amp_dtype`` ask for."""
    if not pretrain_cfg["amp"]:
        return nullcontext
    name = pretrain_cfg["amp_dtype"]
    if name not in AMP_DTYPES:
        raise ConfigError(f"pretrain.amp_dtype={name!r}; valid values: {', '.join(AMP_DTYPES)}")
    if device.type == "cpu" and name != "bfloat16":
        raise ConfigError("pretrain.amp on CPU supports only bfloat16; use --set pretrain.amp_dtype=bfloat16")
    return partial(torch.autocast, device_type=device.type, dtype=AMP_DTYPES[name])


def build_encoder(model_cfg: Mapping[str, Any]) -> Encoder:
    """Backbone + head of ``model_cfg``, initialised from torch's global generator."""
    backbone = build_backbone(model_cfg)
    return Encoder(backbone, build_head(model_cfg, backbone.feature_dim))


def build_optimizer(params: Iterator[nn.Parameter],
                    optimizer_cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD with the profile's lr, momentum, weight decay and Nesterov flag."""
    if optimizer_cfg["name"] not in OPTIMIZERS:
        raise ConfigError(f"pretrain.optimizer.name={optimizer_cfg['name']!r}; supported: "
                          f"{', '.join(OPTIMIZERS)}")
    return torch.optim.SGD(
        params,
        lr=float(optimizer_cfg["lr"]),
        momentum=float(optimizer_cfg["momentum"]),
        weight_decay=float(optimizer_cfg["weight_decay"]),
        nesterov=bool(optimizer_cfg["nesterov"]),
    )


@dataclass
class TrainingParts:
    """What the optimizer steps change: the encoder, the method's state (memory bank, queue...),
    the momentum key encoder (None when the method keeps none), SGD and the gradient scaler."""

    encoder: Encoder
    method: Method
    key_encoder: KeyEncoder | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        """Their states under the checkpoint's keys (docs/CONTRACTS.md)."""
        key_encoder = {} if self.key_encoder is None else {
            "key_encoder": self.key_encoder.module.state_dict()}
        return {
            "backbone": self.encoder.backbone.state_dict(),
            "head": self.encoder.head.state_dict(),
            **key_encoder,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "method": self.method.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Restore what :meth:`state_dict` saved (the method's state moved to ``device``)."""
        self.encoder.backbone.load_state_dict(state["backbone"])
        self.encoder.head.load_state_dict(state["head"])
        if self.key_encoder is not None:
            self.key_encoder.module.load_state_dict(state["key_encoder"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.method.load_state_dict(state["method"])
        self.method.to(device)


def build_training_parts(cfg: RunConfig, data: PretrainData, device: torch.device) -> TrainingParts:
    """The encoder, method, key encoder, optimizer and scaler of ``cfg`` on ``device``, initialised
    from the run seed (in this order: the draws of the global RNG must not move)."""
    pcfg = cfg.pretrain
    seed_everything(int(cfg.seed))
    encoder = build_encoder(cfg.model).to(device)
    if pcfg["channels_last"]:
        encoder = encoder.to(memory_format=torch.channels_last)
    method: Method = build_method(cfg.method, len(data.train), embed_dim_of(cfg.model)).to(device)
    method.set_diagnostic_labels(data.train_labels.to(device))
    spec = method.key_encoder_spec
    if spec is not None and not set(spec.views) <= set(method.views):
        raise ValueError(f"method {method.name!r}: key views {spec.views} are not among its views "
                         f"{method.views}")
    key_encoder = None if spec is None else KeyEncoder(encoder, spec.bn_splits)
    optimizer = build_optimizer(encoder.parameters(), pcfg.optimizer)
    use_scaler = bool(pcfg["amp"]) and pcfg["amp_dtype"] == "float16"
    return TrainingParts(encoder, method, key_encoder, optimizer,
                         torch.amp.GradScaler(device.type, enabled=use_scaler))


def wrap_for_training(model: nn.Module, dist: DistContext, compile_model: bool) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed, then ``torch.compile`` if asked."""
    if dist.enabled:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
    return torch.compile(model) if compile_model else model
