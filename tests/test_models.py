"""Backbones, heads, initialisation and encoder loading (docs/CONTRACTS.md "Backbone")."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.core.config import ConfigError, resolve
from benchmark.models import build_backbone, build_head
from benchmark.models.encoders import load_encoder_backbone
from tasks.base import EncoderHandle


def test_mini_resnet_exposes_every_block() -> None:
    backbone = build_backbone({"backbone": "mini_resnet", "width": 8, "depths": [2, 1, 1, 1], "in_channels": 1,
                               "init": "pytorch"})
    x = torch.randn(3, 1, 28, 28)
    blocks = backbone.forward_blocks(x)
    assert backbone.block_names == ["stem", "layer1.0", "layer1.1", "layer2.0", "layer3.0", "layer4.0"]
    assert len(blocks) == len(backbone.block_names)
    assert [b.shape[1:] for b in blocks] == [(8, 28, 28), (8, 28, 28), (8, 28, 28), (16, 14, 14),
                                            (32, 7, 7), (64, 4, 4)]
    assert backbone.feature_dim == 64
    torch.testing.assert_close(backbone(x), blocks[-1].mean(dim=(2, 3)))


def test_cifar_resnet18_keeps_resolution_in_the_stem() -> None:
    backbone = build_backbone({"backbone": "resnet18_cifar", "in_channels": 3, "init": "pytorch"})
    blocks = backbone.forward_blocks(torch.randn(2, 3, 32, 32))
    assert backbone.feature_dim == 512 and len(blocks) == 9
    assert blocks[0].shape[-2:] == (32, 32)  # 3x3 stride-1 stem, no max-pool
    assert blocks[-1].shape[1:] == (512, 4, 4)


def test_resnet50_has_the_17_probe_points() -> None:
    backbone = build_backbone({"backbone": "resnet50", "in_channels": 3, "init": "kaiming_xavier"})
    with torch.no_grad():
        blocks = backbone.forward_blocks(torch.randn(1, 3, 64, 64))
    assert len(backbone.block_names) == len(blocks) == 17
    assert backbone.feature_dim == blocks[-1].shape[1] == 2048
    assert blocks[0].shape[-2:] == (16, 16)  # stride-2 conv and max-pool


def _conv_std(backbone: nn.Module) -> float:
    return backbone.stages[3][0].conv2.weight.std().item()  # 128 -> 128, 3x3


def test_initialisation_schemes_follow_the_official_code() -> None:
    # models/resnet.py (InvP ImageNet): kaiming_normal_(fan_out, relu) convs, xavier_uniform_ Linear
    # with zero bias, BN 1/0. models/resnet_cifar.py: no init code (PyTorch defaults). MoCo:
    # torchvision's kaiming convs, default Linear (builder.py's MLP).
    mini = {"backbone": "mini_resnet", "width": 16, "depths": [1, 1, 1, 1], "in_channels": 1}
    kaiming_std = math.sqrt(2 / (128 * 9))  # fan_out = 128 * 9
    default_std = math.sqrt(1 / 3) / math.sqrt(128 * 9)  # kaiming_uniform_(a=sqrt(5)), fan_in = 128 * 9
    for scheme in ("kaiming_xavier", "kaiming"):
        backbone = build_backbone({**mini, "init": scheme})
        assert _conv_std(backbone) == pytest.approx(kaiming_std, rel=0.05)
        norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
        assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    assert _conv_std(build_backbone({**mini, "init": "pytorch"})) == pytest.approx(default_std, rel=0.05)
    xavier = build_head({"head": "linear", "embed_dim": 128, "init": "kaiming_xavier"}, 128)
    assert xavier.weight.abs().max() <= math.sqrt(6 / (128 + 128)) and torch.all(xavier.bias == 0)
    for scheme in ("kaiming", "pytorch"):  # nn.Linear's default: U(+-1/sqrt(fan_in)), bias too
        head = build_head({"head": "linear", "embed_dim": 128, "init": scheme}, 1024)
        assert head.weight.abs().max() <= 1 / math.sqrt(1024) and head.bias.abs().max() > 0
        assert head.weight.abs().max() < math.sqrt(6 / (1024 + 128)) / 2
    with pytest.raises(ValueError, match="model.init='orthogonal'"):
        build_head({"head": "linear", "embed_dim": 8, "init": "orthogonal"}, 8)


def test_resnet50_default_init_resets_torchvision_init() -> None:
    conv = lambda scheme: build_backbone({"backbone": "resnet50", "in_channels": 3, "init": scheme}).stages[3][0].conv2
    fan_out, fan_in = 512 * 9, 512 * 9
    assert conv("kaiming").weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert conv("pytorch").weight.std().item() == pytest.approx(math.sqrt(1 / 3 / fan_in), rel=0.05)


@pytest.mark.parametrize("profile, method, scheme", [
    ("imagenet", "invp", "kaiming_xavier"), ("imagenet-mlp", "invp", "kaiming_xavier"),
    ("cifar", "invp", "pytorch"), ("cifar", "insdis", "pytorch"), ("mini", "invp", "pytorch"),
    ("imagenet", "mocov2", "kaiming"), ("cifar", "interclr", "kaiming"), ("mini", "clim", "kaiming"),
])
def test_profiles_use_the_official_init(profile: str, method: str, scheme: str) -> None:
    assert resolve(profile, method).model.init == scheme


def test_heads() -> None:
    mlp = build_head({"head": "mlp", "embed_dim": 128, "init": "pytorch"}, 512)
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 512), (512, 128)]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    assert build_head({"head": "linear", "embed_dim": 64, "init": "pytorch"}, 2048)(torch.randn(2, 2048)).shape == (2, 64)
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
