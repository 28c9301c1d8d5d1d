"""The C4 detector: the backbone split, detectron2's settings, the losses, a few training steps,
the schedule, and the detectron2 export's key names."""
from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from benchmark.core.config import ConfigError
from benchmark.models import build_backbone
from tasks.detection.export import CheckpointMismatch, detectron2_key, export_detectron2
from tasks.detection.model import C4Config, L1RegionProposalNetwork, build_c4_detector, split_c4
from tasks.detection.schedule import MOCO_VOC, DetectionSchedule
from tasks.detection.train import recompute_bn_statistics
from tasks.errors import TaskNotApplicable

MINI = {"backbone": "mini_resnet", "width": 8, "depths": [1, 1, 1, 1], "in_channels": 1, "init": "kaiming_xavier"}
MINI_DETECTOR = C4Config(
    min_size_train=(48, 64), min_size_test=64, max_size=96, pixel_mean=(0.3,), pixel_std=(0.35,),
    anchor_sizes=(8, 16, 32), rpn_pre_nms_train=200, rpn_post_nms_train=50, rpn_pre_nms_test=100,
    rpn_post_nms_test=20, roi_size=7, box_batch_per_image=16,
)


def mini_backbone(seed: int = 0, in_channels: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_backbone({**MINI, "in_channels": in_channels})


def test_split_reads_stride_and_channels_off_the_backbone():
    parts = split_c4(mini_backbone())
    assert (parts.in_channels, parts.trunk_channels, parts.head_channels, parts.stride) == (1, 32, 64, 4)
    r50 = split_c4(build_backbone({"backbone": "resnet50", "in_channels": 3, "init": "kaiming_xavier"}))
    assert (r50.in_channels, r50.trunk_channels, r50.head_channels, r50.stride) == (3, 1024, 2048, 16)
    # ResNet-50's trunk is conv1/bn1/relu/maxpool + layer1-3; the head is layer4 (stride-2 first block)
    assert r50.head[0].conv2.stride == (2, 2) and len(r50.trunk) == 4
    with pytest.raises(TaskNotApplicable, match="stem \\+ stages backbone.*Conv2d is none"):
        split_c4(nn.Conv2d(1, 1, 1))


def test_detectron2_defaults_where_torchvision_differs():
    model = build_c4_detector(split_c4(mini_backbone(in_channels=3)), num_classes=10)
    rpn, heads = model.rpn, model.roi_heads
    assert rpn._pre_nms_top_n == {"training": 12000, "testing": 6000}
    assert rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    assert rpn.smooth_l1_beta == 0.0 and heads.smooth_l1_beta == 0.0
    assert model.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)
    assert heads.box_roi_pool.output_size == 14 and heads.box_roi_pool.scale == 1 / 4
    assert heads.box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert heads.fg_bg_sampler.batch_size_per_image == 512
    assert model.transform.min_size == tuple(range(480, 801, 32))
    assert model.eval().transform.min_size == (800,) and model.train().transform.min_size[0] == 480
    predictor = heads.box_predictor
    assert predictor.cls_score.out_features == 11 and predictor.bbox_pred.out_features == 44
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert isinstance(heads.box_head.extra_norm, nn.SyncBatchNorm)


def test_norm_flag_freezes_or_syncs_batchnorm():
    frozen = build_c4_detector(split_c4(mini_backbone()), 10, C4Config(norm="frozen", pixel_mean=(0.3,), pixel_std=(0.3,)))
    kinds = {type(m) for m in frozen.modules()}
    assert FrozenBatchNorm2d in kinds and nn.BatchNorm2d not in kinds and nn.SyncBatchNorm not in kinds
    synced = build_c4_detector(split_c4(mini_backbone()), 10, MINI_DETECTOR)
    assert not any(type(m) is nn.BatchNorm2d for m in synced.modules())
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.backbone.modules())


def test_frozen_batchnorm_keeps_the_pretrained_statistics():
    backbone = mini_backbone()
    bn = backbone.stem[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.weight.uniform_(0.5, 2)
    expected = (bn.running_mean.clone(), bn.weight.detach().clone())
    model = build_c4_detector(split_c4(backbone), 10, C4Config(norm="frozen", pixel_mean=(0.3,), pixel_std=(0.3,)))
    frozen = model.backbone.body[0][1]
    assert isinstance(frozen, FrozenBatchNorm2d)
    torch.testing.assert_close(frozen.running_mean, expected[0])
    torch.testing.assert_close(frozen.weight, expected[1])


def test_config_errors_name_the_option():
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) \\['anchors'\\]"):
        C4Config.from_settings({"anchors": [1]})
    with pytest.raises(ConfigError, match="norm must be one of sync, frozen, got 'group'"):
        C4Config.from_settings({"norm": "group"})
    with pytest.raises(ConfigError, match="pixel_mean has 3 values"):
        build_c4_detector(split_c4(mini_backbone(in_channels=1)), 10, C4Config())


def test_rpn_loss_is_l1_over_256_per_image():
    rpn = build_c4_detector(split_c4(mini_backbone()), 10, MINI_DETECTOR).rpn
    assert isinstance(rpn, L1RegionProposalNetwork)
    labels = [torch.tensor([1.0, 1.0, 0.0, 0.0, -1.0])]  # -1: ignored anchor
    targets = [torch.tensor([[0.5, 0.0, 0.0, 0.0], [0.0, -2.0, 0.0, 0.0]] + [[9.0, 9, 9, 9]] * 3)]
    deltas = torch.zeros(5, 4)
    logits = torch.tensor([0.0, 2.0, -1.0, 1.0, 5.0])
    objectness, box = rpn.compute_loss(logits, deltas, labels, targets)
    assert box.item() == pytest.approx((0.5 + 2.0) / 256)  # L1 (beta 0), not smooth-L1 with 1/9
    expected = F.binary_cross_entropy_with_logits(logits[:4], labels[0][:4], reduction="sum") / 256
    assert objectness.item() == pytest.approx(expected.item())


def synthetic_batch(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images, targets = [], []
    for _ in range(n):
        image = torch.zeros(1, 64, 72)
        x, y = torch.randint(0, 40, (2,), generator=g).tolist()
        image[:, y : y + 20, x : x + 20] = 1.0
        images.append(image)
        targets.append({"boxes": torch.tensor([[x, y, x + 20.0, y + 20.0]]), "labels": torch.tensor([3])})
    return images, targets


def test_a_few_training_steps_lower_the_loss_and_eval_returns_detections():
    torch.manual_seed(0)
    model = build_c4_detector(split_c4(mini_backbone()), 10, MINI_DETECTOR)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    images, targets = synthetic_batch(2, seed=1)
    history = []
    for _ in range(12):
        losses = model(images, targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(total.item())
    assert all(torch.isfinite(torch.tensor(history)))
    assert sum(history[-3:]) < sum(history[:3])
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    assert len(outputs) == 2
    for out in outputs:
        assert out["boxes"].shape[1] == 4 and out["boxes"].shape[0] == out["scores"].shape[0] == out["labels"].shape[0]
        assert out["boxes"].shape[0] <= 100
        assert (out["labels"] >= 1).all() and (out["labels"] <= 10).all()
        assert (out["boxes"][:, 2] <= 72).all() and (out["boxes"][:, 3] <= 64).all()  # original image frame


def test_schedule_linear_rule_gives_the_invp_repo_schedule():
    invp = MOCO_VOC.scaled_to(4)
    assert invp.lr == pytest.approx(0.005)
    assert (invp.iterations, invp.steps, invp.warmup_iters) == (96000, (72000, 88000), 400)
    assert MOCO_VOC.scaled_to(16) == MOCO_VOC
    assert MOCO_VOC.lr_factor(0) == pytest.approx(1e-3)
    assert MOCO_VOC.lr_factor(50) == pytest.approx(1e-3 * 0.5 + 0.5)
    assert [MOCO_VOC.lr_factor(i) for i in (100, 17999, 18000, 22000)] == pytest.approx([1, 1, 0.1, 0.01])
    with pytest.raises(ConfigError, match="steps"):
        DetectionSchedule.from_settings({"batch_size": 2, "lr": 0.1, "iterations": 10, "steps": [20], "warmup_iters": 1})
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) \\['batch'\\]"):
        DetectionSchedule.from_settings({"batch": 2})


def test_detectron2_key_renaming_follows_moco():
    assert detectron2_key("conv1.weight") == "stem.conv1.weight"
    assert detectron2_key("bn1.running_var") == "stem.conv1.norm.running_var"
    assert detectron2_key("layer1.0.bn3.bias") == "res2.0.conv3.norm.bias"
    assert detectron2_key("layer4.0.downsample.0.weight") == "res5.0.shortcut.weight"
    assert detectron2_key("layer3.5.downsample.1.running_mean") == "res4.5.shortcut.norm.running_mean"


@pytest.mark.parametrize("prefix", ["", "module."])
def test_export_writes_detectron2_names_from_our_checkpoint(tmp_path, prefix):
    torch.manual_seed(0)
    backbone = build_backbone({"backbone": "resnet50", "in_channels": 3, "init": "kaiming_xavier"})
    state = {prefix + k: v for k, v in backbone.state_dict().items()}
    torch.save({"backbone": state, "head": {}, "config": {}, "config_hash": "x", "epoch": 1}, tmp_path / "encoder.pt")
    out = export_detectron2(tmp_path / "encoder.pt", tmp_path / "d2" / "r50.pkl")
    with open(out, "rb") as fh:
        exported = pickle.load(fh)
    assert exported["matching_heuristics"] is True
    model = exported["model"]
    conv_weights = [k for k in model if k.endswith("weight") and "norm" not in k]
    assert len(conv_weights) == 53  # ResNet-50: stem + 16 blocks x 3 convs + 4 shortcuts
    assert {"stem.conv1.weight", "res2.0.shortcut.weight", "res5.2.conv3.norm.running_var"} <= set(model)
    assert not any(k.startswith(("layer", "fc", "stages")) for k in model)
    torch.testing.assert_close(torch.from_numpy(model["res4.3.conv2.weight"]), backbone.stages[2][3].conv2.weight.detach())
    torch.testing.assert_close(torch.from_numpy(model["stem.conv1.norm.running_mean"]), backbone.stem[1].running_mean)


def test_export_refuses_a_non_resnet50_checkpoint(tmp_path):
    torch.save({"backbone": mini_backbone().state_dict()}, tmp_path / "mini.pt")
    with pytest.raises(CheckpointMismatch, match="mini.pt is not a ResNet-50"):
        export_detectron2(tmp_path / "mini.pt", tmp_path / "out.pkl")
    torch.save({"weights": {}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointMismatch, match="no 'backbone'"):
        export_detectron2(tmp_path / "odd.pt", tmp_path / "out.pkl")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        export_detectron2(tmp_path / "absent.pt", tmp_path / "out.pkl")


class StackedBatchNorm(nn.Module):
    """A detector-shaped stand-in: ``model(images, targets)`` runs one BatchNorm on the batch."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, images, targets):
        return self.bn(torch.stack(images))


def test_precise_bn_sets_the_average_of_batch_statistics():
    torch.manual_seed(0)
    model = StackedBatchNorm()
    model.bn.running_mean.fill_(5.0)
    batches = [([torch.randn(2, 3, 3) * (k + 1) + k for _ in range(4)], [None] * 4) for k in range(4)]
    recompute_bn_statistics(model, iter(batches), iterations=3)
    used = [torch.stack(images) for images, _ in batches[:3]]
    torch.testing.assert_close(model.bn.running_mean, torch.stack([b.mean(dim=(0, 2, 3)) for b in used]).mean(0))
    torch.testing.assert_close(model.bn.running_var, torch.stack([b.var(dim=(0, 2, 3)) for b in used]).mean(0))
    assert model.bn.momentum == 0.1
