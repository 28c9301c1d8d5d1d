"""ResNets of the paper and of the mini profile.

* ``resnet50``: torchvision's ResNet-50 (ImageNet stem with max-pool), 2048-d features.
* ``resnet18_cifar``: the CIFAR ResNet-18 (3x3 stride-1 stem, no max-pool), 512-d features.
* ``mini_resnet``: the same CIFAR-style design with base width ``model.width`` and stage
  depths ``model.depths`` (default [1, 1, 1, 1]), for 28x28 inputs on a laptop CPU.

Each is initialised by ``model.init`` (benchmark/models/init.py).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from benchmark.core.config import ConfigError
from benchmark.core.fields import required
from benchmark.models.backbone import Backbone
from benchmark.models.init import initialise
from benchmark.models.registry import register_backbone


def _stage(in_planes: int, planes: int, depth: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    blocks = [BasicBlock(in_planes, planes, stride, downsample)]
    blocks += [BasicBlock(planes, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def cifar_resnet(in_channels: int, width: int, depths: Sequence[int]) -> Backbone:
    """CIFAR-style ResNet: 3x3 stride-1 stem, no max-pool, BasicBlock stages of widths
    width * (1, 2, 4, 8) with strides (1, 2, 2, 2), global average pooling."""
    if len(depths) != 4 or any(int(d) < 1 for d in depths):
        raise ConfigError(f"model.depths={list(depths)} must be four stage depths >= 1, e.g. [1,1,1,1]")
    if int(width) < 1:
        raise ConfigError(f"model.width={width} must be a positive base width, e.g. 16")
    stem = nn.Sequential(
        nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )
    widths = [width * 2**i for i in range(4)]
    stages, in_planes = [], width
    for planes, depth, stride in zip(widths, depths, (1, 2, 2, 2)):
        stages.append(_stage(in_planes, planes, int(depth), stride))
        in_planes = planes
    return Backbone(stem, stages, feature_dim=widths[-1])


@register_backbone("mini_resnet")
def mini_resnet(model_cfg: Mapping[str, Any]) -> Backbone:
    """Small CIFAR-style ResNet; ``model.width`` (base width), ``model.depths``, ``model.in_channels``."""
    return initialise(cifar_resnet(
        int(required(model_cfg, "in_channels", "model")),
        int(required(model_cfg, "width", "model")),
        required(model_cfg, "depths", "model"),
    ), required(model_cfg, "init", "model"))


@register_backbone("resnet18_cifar")
def resnet18_cifar(model_cfg: Mapping[str, Any]) -> Backbone:
    """The CIFAR ResNet-18 of the official code (``models/resnet_cifar.py``): 512-d features."""
    return initialise(cifar_resnet(int(required(model_cfg, "in_channels", "model")), 64, (2, 2, 2, 2)),
                      required(model_cfg, "init", "model"))


@register_backbone("resnet50")
def resnet50(model_cfg: Mapping[str, Any]) -> Backbone:
    """torchvision's ResNet-50 (InvP's models/resnet.py has the same layers), 17 probe points, 2048-d features."""
    net = torchvision.models.resnet50(weights=None)
    in_channels = int(required(model_cfg, "in_channels", "model"))
    if in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    return initialise(Backbone(stem, stages, feature_dim=2048), required(model_cfg, "init", "model"))
