"""Backbones, heads, initialisation and encoder loading (docs/CONTRACTS.md "Backbone")."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.core.config import ConfigError, resolve
from benchmark.models.encoders import load_encoder_backbone
from benchmark.models import build_backbone, build_head
from tasks.base import EncoderHandle


def test_mini_resnet_exposes_every_block() -> None:
    backbone = build_backbone({"backbone": "mini_resnet", "width": 8, "depths": [2, 1, 1, 1], "in_channels": 1})
    x = torch.randn(3, 1, 28, 28)
    blocks = backbone.forward_blocks(x)
    assert backbone.block_names == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer3.0", "layer4.0"]
    assert len(blocks) == len(backbone.block_names)
    assert [b.shape[1:] for b in blocks] == [(8, 28, 28), (8, 28, 28), (8, 28, 28), (16, 14, 14),
                                            (32, 7, 7), (64, 4, 4)]
    assert backbone.feature_dim == 64
    torch.testing.assert_close(backbone(x), blocks[-1].mean(dim=(2, 3)))


def test_cifar_resnet18_keeps_resolution_in_the_stem() -> None:
    backbone = build_backbone({"backbone": "resnet18_cifar", "in_channels": 3})
    blocks = backbone.forward_blocks(torch.randn(2, 3, 32, 32))
    assert backbone.feature_dim == 512 and len(blocks) == 9
    assert blocks[0].shape[-2:] == (32, 32)  # 3x3 stride-1 stem, no max-pool
    assert blocks[-1].shape[1:] == (512, 4, 4)


def test_resnet50_has_the_17_probe_points() -> None:
    backbone = build_backbone({"backbone": "resnet50", "in_channels": 3})
    with torch.no_grad():
        blocks = backbone.forward_blocks(torch.randn(1, 3, 64, 64))
    assert len(backbone.block_names) == len(blocks) == 17
    assert backbone.feature_dim == blocks[-1].shape[1] == 2048
    assert blocks[0].shape[-2:] == (16, 16)  # stride-2 conv and max-pool


def test_initialisation_follows_the_official_code() -> None:
    backbone = build_backbone({"backbone": "mini_resnet", "width": 16, "depths": [1, 1, 1, 1], "in_channels": 1})
    conv = backbone.stages[3][0].conv2  # 128 -> 128, 3x3: fan_out = 128 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    head = build_head({"head": "linear", "embed_dim": 128}, 128)
    bound = math.sqrt(6 / (128 + 128))  # Xavier-uniform
    assert head.weight.abs().max() <= bound and torch.all(head.bias == 0)


def test_heads() -> None:
    mlp = build_head({"head": "mlp", "embed_dim": 128}, 512)
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 128)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    assert build_head({"head": "linear", "embed_dim": 64}, 2048)(torch.randn(2, 2048)).shape == (2, 64)
    with pytest.raises(ConfigError, match="model.head"):
        build_head({"head": "transformer", "embed_dim": 8}, 8)


def test_bad_backbone_names_are_explained() -> None:
    with pytest.raises(ConfigError, match="model.backbone='resnet51'.*mini_resnet"):
        build_backbone({"backbone": "resnet51"})
    with pytest.raises(ConfigError, match="depths"):
        build_backbone({"backbone": "mini_resnet", "width": 8, "depths": [1, 1], "in_channels": 1})


def test_timm_absent_gives_an_install_hint() -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="pip install"):
            build_backbone({"backbone": "timm:resnet18", "in_channels": 3})
    else:
        backbone = build_backbone({"backbone": "timm:resnet18", "in_channels": 1})
        assert backbone(torch.randn(2, 1, 32, 32)).shape == (2, backbone.feature_dim)


def test_encoder_kinds(tmp_path: Path) -> None:
    cfg = resolve("mini", "invp", ["model.width=4"])
    pixels = load_encoder_backbone(EncoderHandle("pixels", cfg), "cpu")
    x = torch.randn(2, 1, 28, 28)
    assert pixels.feature_dim == 784 and torch.equal(pixels(x), x.flatten(1))
    assert torch.equal(pixels.forward_blocks(x)[0], x.flatten(1))

    first = load_encoder_backbone(EncoderHandle("random", cfg), "cpu")
    torch.manual_seed(cfg.seed)
    expected = build_backbone(cfg.model)
    assert not first.training
    for (name, a), b in zip(first.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), name

    trained = build_backbone(cfg.model)
    path = tmp_path / "encoder.pt"
    torch.save({"backbone": trained.state_dict(), "head": {}, "config": cfg.to_dict(),
                "config_hash": "x", "epoch": 1}, path)
    loaded = load_encoder_backbone(EncoderHandle("pretrained", cfg, checkpoint=path), "cpu")
    assert not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), trained.state_dict().values()))

    with pytest.raises(ValueError, match="valid kinds"):
        load_encoder_backbone(EncoderHandle("imagenet", cfg), "cpu")
