"""The mini stand-ins end to end on scikit-learn's digits (always present) with a stand-in
backbone: kNN, the per-block linear probe, semi-supervised fine-tuning and both transfer
variants, through the real dataset registry and the feature cache."""
from __future__ import annotations

import pytest
import torch
from tasks_support import PixelBackbone, make_context

from tasks.base import available_tasks, get_task
from tasks.common import class_balanced_subset
from tasks.errors import TaskNotApplicable
from tasks.transfer import transfer_scores

CHANCE = 0.1


def _by_metric(measurements, split="test"):
    return {m.metric: m for m in measurements if m.split == split}


def test_every_task_family_is_registered_with_its_paper_slot():
    registry = available_tasks()
    for name in ("knn", "linear", "linear_multilayer", "places205_linear", "semisup", "transfer",
                 "transfer_linear", "voc07_svm", "voc07_bce", "voc07_lbfgs"):
        assert name in registry
    assert registry["linear"].paper_table == "Table 1"
    assert registry["semisup"].paper_table == "Table 2"
    assert registry["transfer"].paper_table == "Table 3"
    assert registry["transfer"].datasets({}) == (
        "cifar10", "cifar100", "voc07_cls", "caltech101", "stanford_cars", "oxford_pets",
        "flowers102")


def test_knn_beats_chance_and_reuses_the_cache(tmp_path):
    ctx = make_context(tmp_path, "knn", {"dataset": "digits", "k": 20})
    result = _by_metric(get_task("knn").run(ctx))
    assert result["top1"].value > 3 * CHANCE
    assert result["top5"].value >= result["top1"].value
    cached = list((tmp_path / "cache").rglob("features.bin"))
    assert len(cached) == 2  # train and test features
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert _by_metric(get_task("knn").run(ctx))["top1"].value == result["top1"].value
    assert [p.stat().st_mtime_ns for p in cached] == stamps


def test_linear_probe_selects_on_holdout_and_keeps_every_block(tmp_path):
    settings = {"dataset": "digits", "epochs": 6, "lr": [0.1, 0.01], "holdout": 200,
                "grids": {"": 2}, "test_split": "test", "milestones": [4], "features": "cached"}
    ctx = make_context(tmp_path, "linear", settings)
    out = get_task("linear").run(ctx)
    test, holdout = _by_metric(out), _by_metric(out, "holdout")
    assert test["top1"].value > 3 * CHANCE
    chosen = test["top1"].extra
    assert chosen["layer"] in ("stem@2", "layer1.0@2", "layer2.0@2") and chosen["lr"] in (0.1, 0.01)
    assert holdout["top1"].value == chosen["holdout_top1"]
    for block in ("stem@2", "layer1.0@2", "layer2.0@2"):
        assert 0 <= test[f"top1@{block}"].value <= 1
    assert test["top1_best_on_test"].value >= test["top1"].value
    assert "test used for selection" in test["top1_best_on_test"].extra["label"]
    official = test["top1_official_view"]  # layers: blocks (the default): the script's own view
    assert official.extra["layer"] in ("stem@2", "layer1.0@2", "layer2.0@2")
    assert official.extra["epochs_trained"] < 6 and "heads 14-17" in official.extra["label"]


def test_linear_probe_on_raw_pixels_uses_the_pooled_vector(tmp_path):
    ctx = make_context(tmp_path, "linear",
                       {"dataset": "digits", "epochs": 3, "lr": 0.1, "holdout": 200,
                        "test_split": "test"},
                       backbone=PixelBackbone(28 * 28), kind="pixels")
    test = _by_metric(get_task("linear").run(ctx))
    assert test["top1"].extra["layer"] == "pooled" and test["top1"].value > 5 * CHANCE


def test_class_balanced_draw_is_deterministic_with_simclr_counts():
    labels = torch.arange(10).repeat_interleave(101)  # 1,010 items, 10 classes
    first = class_balanced_subset(labels, 0.05, seed=0)
    assert torch.equal(first, class_balanced_subset(labels, 0.05, seed=0))
    counts = torch.bincount(labels[first], minlength=10)
    assert counts.sum() == 50 and counts.max() - counts.min() == 0
    counts = torch.bincount(labels[class_balanced_subset(labels, 0.0129, seed=0)], minlength=10)
    assert sorted(counts.tolist()) == [1] * 7 + [2] * 3  # 13 = 10 x 1 + 3 extra


def test_semisup_fine_tunes_and_reports_top1_top5(tmp_path):
    ctx = make_context(tmp_path, "semisup",
                       {"dataset": "digits", "fractions": [0.5], "test_split": "test", "epochs": 10,
                        "milestones": [8], "lr": 0.05, "head_lr_mult": 2.0, "batch_size": 32})
    out = _by_metric(get_task("semisup").run(ctx))
    assert set(out) == {"top1_50pct", "top5_50pct"}
    assert out["top1_50pct"].value > 3 * CHANCE
    assert out["top1_50pct"].extra["labelled_images"] == 500
    assert "class-balanced draw" in out["top1_50pct"].extra["subset"]


def test_fine_tuning_raw_pixels_is_not_applicable(tmp_path):
    ctx = make_context(tmp_path, "semisup", {"dataset": "digits", "test_split": "test"},
                       backbone=PixelBackbone(28 * 28), kind="pixels")
    with pytest.raises(TaskNotApplicable, match="no trainable parameters"):
        get_task("semisup").run(ctx)


def test_transfer_grid_selects_on_val_then_tests_once(tmp_path):
    ctx = make_context(tmp_path, "transfer",
                       {"datasets": ["digits"], "lrs": [0.001, 0.1], "weight_decays": [0.0],
                        "steps": 150, "batch_size": 32})
    out = get_task("transfer").run(ctx)
    test, val = _by_metric(out), _by_metric(out, "holdout")
    assert test["top1"].extra["lr"] == 0.1  # 150 steps at lr 1e-3 barely move
    assert val["top1"].value == test["top1"].extra["val"]
    assert test["top1"].value > 3 * CHANCE


def test_voc_transfer_scores_both_11_point_variants_by_hand():
    # class 0 ranks -, +, difficult (a negative here): devkit 0.5, PR curve 6/11
    # (tests/test_tasks_metrics.py); class 1 ranks +, -, +: both (6 + 5 * 2/3) / 11
    scores = torch.tensor([[0.9, 0.9], [0.8, 0.8], [0.7, 0.7]])
    targets = torch.tensor([[-1, 1], [1, -1], [0, 1]])
    both = (6 + 5 * 2 / 3) / 11
    scored = transfer_scores("voc11_map", scores, targets, 2)
    assert list(scored) == ["voc11_map", "voc11_map_pr"]  # the first is the one the grid selects on
    assert scored["voc11_map"] == pytest.approx((0.5 + both) / 2)
    assert scored["voc11_map_pr"] == pytest.approx((6 / 11 + both) / 2)
    assert list(transfer_scores("top1", scores, torch.tensor([0, 1, 0]), 2)) == ["top1"]


def test_transfer_linear_sweeps_c_and_refits(tmp_path):
    ctx = make_context(tmp_path, "transfer_linear",
                       {"datasets": ["digits"], "weight_decays": [1e3, 1e-2]})
    test = _by_metric(get_task("transfer_linear").run(ctx))
    assert test["top1"].extra["weight_decay"] == 1e-2  # wd 1e3 makes the model ~constant
    assert test["top1"].value > 3 * CHANCE


def test_unknown_or_missing_settings_are_named(tmp_path):
    from benchmark.core.config import ConfigError

    ctx = make_context(tmp_path, "linear", {"dataset": "digits", "epoch": 3})
    with pytest.raises(ConfigError, match=r"tasks.linear: unknown setting\(s\) \['epoch'\].*epochs"):
        get_task("linear").run(ctx)
    with pytest.raises(ConfigError, match="tasks.knn.dataset is missing"):
        get_task("knn").run(make_context(tmp_path, "knn", {"k": 3}))
