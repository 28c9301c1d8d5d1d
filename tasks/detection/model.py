"""Faster R-CNN C4 on torchvision's detection API, with detectron2's C4 defaults (docs/protocols.md §detectron2 defaults, §torchvision mapping).

A backbone (stem + residual stages, ``benchmark.models.Backbone``) is split at its last stage:
the stem and every other stage form the trunk (one feature map; stride 16 for ResNet-50 =
res4), the RPN runs on that map, a 14x14 RoIAlign with ``aligned=True`` (detectron2's
ROIAlignV2) pools each proposal, and the last stage (stride-2 first block = res5), an optional
extra norm (MoCo's ``Res5ROIHeadsExtraNorm``) and average pooling form the box head.

Where torchvision's defaults differ from detectron2's, :class:`C4Config` holds detectron2's:
L1 box losses (smooth-L1 beta 0, not 1/9), 12000/2000 train and 6000/1000 test RPN proposals,
anchors 32-512 at one level, aligned RoIAlign, predictor init std 0.01 / 0.001, RPN losses
normalised by 256 x images. BatchNorm: ``sync`` trains BN (SyncBatchNorm, which is plain BN
in a single process), ``frozen`` freezes the statistics and affine parameters
(FrozenBatchNorm2d).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import FrozenBatchNorm2d, roi_align

from benchmark.core.config import ConfigError
from benchmark.core.fields import Bool, Choice, Float, Int, ListOf, Tuple
from benchmark.core.settings import read_typed, setting, settings_section
from benchmark.data.augment import IMAGENET_MEAN, IMAGENET_STD
from tasks.errors import TaskNotApplicable

NORMS = ("sync", "frozen")
PROBABILITY = Float(ge=0, le=1)


@dataclass(frozen=True)
class C4Config:
    """Detector settings; the defaults are detectron2's R50-C4 on VOC (MoCo's recipe)."""

    min_size_train: tuple[int, ...] = setting(tuple(range(480, 801, 32)), ListOf(Int(ge=1), min_len=1))
    min_size_test: int = setting(800, Int(ge=1))
    max_size: int = setting(1333, Int(ge=1))
    pixel_mean: tuple[float, ...] = setting(IMAGENET_MEAN, ListOf(Float(), min_len=1))  # images enter in [0, 1]
    pixel_std: tuple[float, ...] = setting(IMAGENET_STD, ListOf(Float(gt=0), min_len=1))
    anchor_sizes: tuple[int, ...] = setting((32, 64, 128, 256, 512), ListOf(Int(ge=1), min_len=1))
    aspect_ratios: tuple[float, ...] = setting((0.5, 1.0, 2.0), ListOf(Float(gt=0), min_len=1))
    rpn_pre_nms_train: int = setting(12000, Int(ge=1))
    rpn_post_nms_train: int = setting(2000, Int(ge=1))
    rpn_pre_nms_test: int = setting(6000, Int(ge=1))
    rpn_post_nms_test: int = setting(1000, Int(ge=1))
    rpn_nms: float = setting(0.7, PROBABILITY)
    rpn_batch_per_image: int = setting(256, Int(ge=1))
    rpn_positive_fraction: float = setting(0.5, PROBABILITY)
    rpn_iou: tuple[float, float] = setting((0.3, 0.7), Tuple(PROBABILITY, PROBABILITY))
    roi_size: int = setting(14, Int(ge=1))
    box_batch_per_image: int = setting(512, Int(ge=1))
    box_positive_fraction: float = setting(0.25, PROBABILITY)
    box_iou: float = setting(0.5, PROBABILITY)
    score_thresh: float = setting(0.05, PROBABILITY)
    box_nms: float = setting(0.5, PROBABILITY)
    detections_per_image: int = setting(100, Int(ge=1))
    smooth_l1_beta: float = setting(0.0, Float(ge=0))
    norm: str = setting("sync", Choice(NORMS))
    extra_norm: bool = setting(True, Bool())

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], where: str = "tasks.detection.detector") -> "C4Config":
        """Defaults overridden by ``settings``; unknown keys and bad values name the option."""
        config = read_typed(cls, settings, where)
        if len(config.pixel_mean) != len(config.pixel_std):
            raise ConfigError(f"{where}: pixel_mean and pixel_std need one value per channel each")
        return config


C4_FIELDS = settings_section(C4Config).fields  # the ``tasks.detection.detector`` settings


@dataclass
class C4Parts:
    """A backbone cut for C4: trunk (image -> one feature map) and head (RoI map -> map)."""

    trunk: nn.Module
    head: nn.Module
    in_channels: int
    trunk_channels: int
    head_channels: int
    stride: int


def split_c4(backbone: nn.Module, probe_size: int = 64) -> C4Parts:
    """Split a stem+stages backbone: trunk = stem + all stages but the last, head = last stage.

    Channel counts and the trunk's stride are read off one forward pass of a blank
    ``probe_size`` image in eval mode (no BN statistics change). A backbone without that split
    (a non-ResNet timm model) raises TaskNotApplicable: the job is recorded as skipped, with why.
    """
    if not (hasattr(backbone, "stem") and hasattr(backbone, "stages") and len(backbone.stages) >= 2):
        blocks = getattr(backbone, "block_names", None)
        raise TaskNotApplicable(
            f"the C4 detector splits a stem + stages backbone (the suite's ResNets, a timm ResNet; "
            f"docs/CONTRACTS.md), and {type(backbone).__name__} is none"
            + (f" (its blocks: {', '.join(map(str, blocks))})" if blocks else "")
        )
    trunk = nn.Sequential(backbone.stem, *backbone.stages[:-1])
    head = backbone.stages[-1]
    in_channels = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d)).in_channels
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        probe = next(backbone.parameters()).new_zeros(1, in_channels, probe_size, probe_size)
        features = trunk(probe)
        pooled = head(features)
    backbone.train(was_training)
    return C4Parts(trunk, head, in_channels, features.shape[1], pooled.shape[1], probe_size // features.shape[-1])


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d in ``module`` by a FrozenBatchNorm2d holding its statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        frozen.weight.copy_(module.weight.detach())
        frozen.bias.copy_(module.bias.detach())
        frozen.running_mean.copy_(module.running_mean)
        frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        module.add_module(name, freeze_batchnorm(child))
    return module


class AlignedRoIPool(nn.Module):
    """RoIAlign of one feature map with ``aligned=True`` (detectron2's ROIAlignV2)."""

    def __init__(self, output_size: int, stride: int, sampling_ratio: int = 0):
        super().__init__()
        self.output_size, self.scale, self.sampling_ratio = output_size, 1.0 / stride, sampling_ratio

    def forward(
        self, features: Mapping[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: Any
    ) -> torch.Tensor:
        return roi_align(
            features["0"], proposals, self.output_size, self.scale, self.sampling_ratio, aligned=True
        )


class C4BoxHead(nn.Module):
    """Last backbone stage (res5), optional extra BatchNorm, global average pooling."""

    def __init__(self, stage: nn.Module, channels: int, extra_norm: bool):
        super().__init__()
        self.stage = stage
        self.extra_norm = nn.BatchNorm2d(channels) if extra_norm else nn.Identity()
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.extra_norm(self.stage(x)), 1), 1)


class C4Trunk(nn.Module):
    """Trunk returning torchvision's feature dict (one level, key ``"0"``)."""

    def __init__(self, trunk: nn.Module, out_channels: int):
        super().__init__()
        self.body, self.out_channels = trunk, out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return OrderedDict([("0", self.body(x))])


class L1RegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with detectron2's loss: smooth-L1 ``beta``, both terms / (256 x images)."""

    def __init__(self, *args: Any, smooth_l1_beta: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta

    def compute_loss(
        self,
        objectness: torch.Tensor,
        pred_bbox_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        positive, negative = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(positive))[0]
        sampled = torch.cat([positive, torch.where(torch.cat(negative))[0]])
        normaliser = self.fg_bg_sampler.batch_size_per_image * len(labels)
        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[positive],
            torch.cat(regression_targets)[positive],
            beta=self.smooth_l1_beta,
            reduction="sum",
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], torch.cat(labels)[sampled], reduction="sum"
        )
        return objectness_loss / normaliser, box_loss / normaliser


class L1RoIHeads(RoIHeads):
    """torchvision's RoI heads with detectron2's box loss (smooth-L1 ``beta``) in training."""

    def __init__(self, *args: Any, smooth_l1_beta: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta

    def forward(
        self,
        features: Mapping[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        pooled = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(pooled)
        labels, regression_targets = torch.cat(labels), torch.cat(regression_targets)
        positive = torch.where(labels > 0)[0]
        box_regression = box_regression.reshape(len(labels), -1, 4)[positive, labels[positive]]
        box_loss = F.smooth_l1_loss(
            box_regression, regression_targets[positive], beta=self.smooth_l1_beta, reduction="sum"
        )
        return [], {
            "loss_classifier": F.cross_entropy(class_logits, labels),
            "loss_box_reg": box_loss / labels.numel(),
        }


class C4FasterRCNN(FasterRCNN):
    """FasterRCNN that resizes to a random ``min_size_train`` in training, ``min_size_test`` in eval."""

    def __init__(self, *args: Any, min_size_train: Sequence[int], min_size_test: int, **kwargs: Any):
        super().__init__(*args, min_size=tuple(min_size_train), **kwargs)
        self.min_size_train, self.min_size_test = tuple(min_size_train), (min_size_test,)

    def train(self, mode: bool = True) -> "C4FasterRCNN":
        super().train(mode)
        self.transform.min_size = self.min_size_train if mode else self.min_size_test
        return self


def _predictor(channels: int, num_classes: int) -> FastRCNNPredictor:
    """Class and box predictor with detectron2's init (normal std 0.01 / 0.001, zero bias)."""
    predictor = FastRCNNPredictor(channels, num_classes + 1)
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
    return predictor


def build_c4_detector(parts: C4Parts, num_classes: int, config: C4Config = C4Config()) -> C4FasterRCNN:
    """Faster R-CNN C4 over ``parts`` for ``num_classes`` object classes (+ background)."""
    if len(config.pixel_mean) != parts.in_channels:
        raise ConfigError(
            f"detector pixel_mean has {len(config.pixel_mean)} values but the backbone reads "
            f"{parts.in_channels}-channel images; set tasks.detection.detector.pixel_mean/pixel_std"
        )
    anchors = AnchorGenerator(sizes=(config.anchor_sizes,), aspect_ratios=(config.aspect_ratios,))
    rpn = L1RegionProposalNetwork(
        anchors,
        RPNHead(parts.trunk_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=config.rpn_iou[1],
        bg_iou_thresh=config.rpn_iou[0],
        batch_size_per_image=config.rpn_batch_per_image,
        positive_fraction=config.rpn_positive_fraction,
        pre_nms_top_n={"training": config.rpn_pre_nms_train, "testing": config.rpn_pre_nms_test},
        post_nms_top_n={"training": config.rpn_post_nms_train, "testing": config.rpn_post_nms_test},
        nms_thresh=config.rpn_nms,
        smooth_l1_beta=config.smooth_l1_beta,
    )
    roi_heads = L1RoIHeads(
        AlignedRoIPool(config.roi_size, parts.stride),
        C4BoxHead(parts.head, parts.head_channels, config.extra_norm),
        _predictor(parts.head_channels, num_classes),
        fg_iou_thresh=config.box_iou,
        bg_iou_thresh=config.box_iou,
        batch_size_per_image=config.box_batch_per_image,
        positive_fraction=config.box_positive_fraction,
        bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=config.score_thresh,
        nms_thresh=config.box_nms,
        detections_per_img=config.detections_per_image,
        smooth_l1_beta=config.smooth_l1_beta,
    )
    model = C4FasterRCNN(
        C4Trunk(parts.trunk, parts.trunk_channels),
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=rpn.head,
        min_size_train=config.min_size_train,
        min_size_test=config.min_size_test,
        max_size=config.max_size,
        image_mean=list(config.pixel_mean),
        image_std=list(config.pixel_std),
        box_head=roi_heads.box_head,
        box_predictor=roi_heads.box_predictor,
    )
    model.rpn, model.roi_heads = rpn, roi_heads  # detectron2's losses and aligned RoIAlign
    if config.norm == "frozen":
        freeze_batchnorm(model)
    else:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.train()
