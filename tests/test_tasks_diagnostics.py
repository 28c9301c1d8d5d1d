"""Representation diagnostics on synthetic embeddings with known answers, and one run on a
random encoder of the mini profile."""
from __future__ import annotations

import math

import pytest
import torch

from tasks.diagnostic_measures import (
    alignment,
    diagnose,
    effective_rank,
    is_collapsed,
    mean_cosine,
    neighbour_similarities,
    uniformity,
)


def test_a_collapsed_embedding_has_rank_one_cosine_one_and_uniformity_zero() -> None:
    z = torch.ones(50, 8) / math.sqrt(8)  # every image at the same point
    assert effective_rank(z) == pytest.approx(1.0, abs=1e-4)
    assert mean_cosine(z) == pytest.approx(1.0)
    assert uniformity(z) == pytest.approx(0.0)
    assert is_collapsed(mean_cosine(z), effective_rank(z), 0.9, 2.0)


def test_orthonormal_directions_have_full_rank_and_cosine_zero() -> None:
    z = torch.eye(16)
    # equal singular values: p = 1/16 each, entropy log 16 -> rank 16
    assert effective_rank(z) == pytest.approx(16.0, rel=1e-4)
    assert mean_cosine(z) == pytest.approx(0.0)
    # every pair at squared distance 2: log exp(-2 * 2) = -4, the bound of perfect spread
    assert uniformity(z) == pytest.approx(-4.0)
    assert not is_collapsed(mean_cosine(z), effective_rank(z), 0.9, 2.0)


def test_rank_counts_directions_not_points() -> None:
    # 40 points on two orthogonal axes with equal energy: singular values equal -> rank 2
    z = torch.cat([torch.eye(2)[:1].repeat(20, 1), torch.eye(2)[1:].repeat(20, 1)])
    assert effective_rank(torch.nn.functional.pad(z, (0, 6))) == pytest.approx(2.0, rel=1e-4)
    assert is_collapsed(0.0, 2.0, 0.9, 2.0)  # about two directions: at the threshold


def test_alignment_is_zero_for_equal_views_and_four_for_opposite_ones() -> None:
    z = torch.nn.functional.normalize(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    assert alignment(z, z) == pytest.approx(0.0)
    assert alignment(z, -z) == pytest.approx(4.0)


def test_neighbour_similarities_by_hand() -> None:
    # class 0 at angles 0 and 60 degrees, class 1 at 180 and 120 degrees (unit circle)
    angles = torch.tensor([0.0, 60.0, 180.0, 120.0]) * math.pi / 180
    z = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    same, different = neighbour_similarities(z, labels, 1)
    assert same == pytest.approx(0.5)  # every point's class partner is 60 degrees away
    # nearest other-class point: 0 -> 120 (cos -0.5), 60 -> 120 (0.5), 180 -> 60 (-0.5), 120 -> 60 (0.5)
    assert different == pytest.approx(0.0, abs=1e-6)


def test_diagnose_reports_every_metric_with_the_flag() -> None:
    gen = torch.Generator().manual_seed(0)
    features, labels = torch.randn(60, 8, generator=gen), torch.arange(60) % 3
    values = diagnose(features, labels, features[:10], features[:10] + 0.01, neighbours=5,
                      collapse_cosine=0.9, collapse_rank=2.0)
    assert set(values) == {"alignment", "uniformity", "rankme", "mean_cosine", "nn_same_class_sim",
                           "nn_diff_class_sim", "collapsed"}
    assert values["alignment"] < 1e-3 and 4 < values["rankme"] <= 8 and values["collapsed"] == 0.0


def test_the_task_runs_on_raw_pixels_and_flags_a_constant_head_as_collapsed(tmp_path) -> None:
    from tasks_support import PixelBackbone, make_context
    from torch import nn

    from tasks.base import get_task

    settings = {"dataset": "digits", "augment": "mini", "limit": 200, "align_images": 40}
    ctx = make_context(tmp_path / "a", "diagnostics", settings, backbone=PixelBackbone(28 * 28), kind="pixels")
    pooled = {m.metric: m for m in get_task("diagnostics").run(ctx)}  # raw pixels: no head
    assert set(pooled) == set(get_task("diagnostics").metrics)
    assert pooled["collapsed"].value == 0.0 and pooled["rankme"].value > 10
    assert pooled["nn_same_class_sim"].value > pooled["nn_diff_class_sim"].value
    assert pooled["rankme"].extra == {"layer": "pooled", "images": 200, "align_images": 40, "augment": "mini",
                                      "neighbours": 5, "collapse_cosine": 0.9, "collapse_rank": 2.0}
    assert pooled["rankme"].split == "test" and pooled["rankme"].dataset == "digits"

    ctx = make_context(tmp_path / "b", "diagnostics", settings)
    constant = nn.Linear(ctx.encoder.backbone.feature_dim, 4)  # every image -> one embedding
    nn.init.zeros_(constant.weight)
    nn.init.ones_(constant.bias)
    ctx.encoder.head = constant
    collapsed = {m.metric: m.value for m in get_task("diagnostics").run(ctx)}
    assert collapsed["collapsed"] == 1.0 and collapsed["mean_cosine"] == pytest.approx(1.0)
    assert collapsed["alignment"] == pytest.approx(0.0, abs=1e-9)
