"""The evaluation recipes follow the official code by default (docs/recipes-vs-original.md,
Evaluation): the probes' BatchNorm mode and weight init, the official view of the 17-head
probe and the semi-supervised schedule (VOC07 BCE's online augmentation: test_tasks_voc07.py)."""
from __future__ import annotations

import pytest
import torch
from tasks_support import TinyBackbone

import tasks.probe as probe
from benchmark.core.config import load_profile
from tasks.base import available_tasks
from tasks.finetune import FinetuneRecipe, fine_tune
from tasks.linear import official_view
from tasks.probe import ProbeSchedule, make_head, train_probe
from tasks.semisup import SemiSupervisedTask


def _trained_heads(monkeypatch, schedule: ProbeSchedule) -> list[torch.nn.Sequential]:
    """Heads of one probe run on features with mean 5 (so batch statistics would move)."""
    built = []

    def recording_make_head(*args, **kwargs):
        built.append(real_make_head(*args, **kwargs))
        return built[-1]

    real_make_head = probe.make_head
    monkeypatch.setattr(probe, "make_head", recording_make_head)
    generator = torch.Generator().manual_seed(0)
    features = 5 + torch.randn(64, 6, generator=generator)
    labels = torch.arange(64) % 3
    train_probe([features], labels, {}, 3, schedule, "cpu", 0)
    return built


def test_invp_heads_keep_their_bn_running_statistics(monkeypatch):
    """linear_classification.py trains in network.eval(): the heads' BN stays at mean 0 / var 1
    and only its affine learns; batch_stats (VISSL) keeps the normalising BN."""
    (head,) = _trained_heads(monkeypatch, ProbeSchedule(epochs=2, lr=0.1, batch_size=16))
    bn = head[0]
    assert torch.equal(bn.running_mean, torch.zeros(6)) and torch.equal(bn.running_var, torch.ones(6))
    assert not torch.equal(bn.weight.detach(), torch.ones(6))  # the affine is trained
    (head,) = _trained_heads(
        monkeypatch, ProbeSchedule(epochs=2, lr=0.1, batch_size=16, head_bn="batch_stats")
    )
    assert head[0].running_mean.min() > 1.0


def test_probe_bn_mode_is_the_protocols_own():
    tasks = available_tasks()
    assert tasks["linear"].defaults["head_bn"] == "frozen_stats"
    assert tasks["places205_linear"].defaults["head_bn"] == "frozen_stats"
    assert tasks["linear_multilayer"].defaults["head_bn"] == "batch_stats"
    assert tasks["places205_linear_multilayer"].defaults["head_bn"] == "batch_stats"


def test_official_view_reads_scores_before_each_epoch_on_heads_14_to_17():
    names = [f"h{i}" for i in range(1, 7)]
    scores = torch.zeros(1, 4, 6, 2)  # (lrs, epochs + 1, heads, 2): after 0..3 epochs
    scores[0, 3, 5, 0] = 0.9  # after the last epoch: the official script never scores it
    scores[0, 1, 0, 0] = 0.8  # head 1 is not among the last four
    scores[0, 2, 3, 0] = 0.5
    view = official_view("imagenet", "val", names, (1.0,), scores)
    assert view.metric == "top1_official_view" and view.value == 0.5
    assert view.extra["layer"] == "h4" and view.extra["head"] == 4
    assert view.extra["epochs_trained"] == 2
    assert "test used for selection" in view.extra["label"]


def test_probe_weight_init_per_protocol():
    torch.manual_seed(0)
    default = make_head(2048, 10, "none")[1].weight
    cifar = make_head(2048, 10, "none", "normal_std_sqrt2_over_classes")[1].weight
    assert default.std().item() == pytest.approx(0.01, rel=0.05)
    assert cifar.std().item() == pytest.approx((2 / 10) ** 0.5, rel=0.05)  # C = classes
    assert available_tasks()["linear"].defaults["head_init"] == "normal_std_0.01"
    assert load_profile("cifar")["tasks"]["linear"]["head_init"] == "normal_std_sqrt2_over_classes"


def test_semisup_schedule_is_the_scripts(monkeypatch):
    """semi_supervised.py sets the lr after each epoch (decayed lr from 0-based epochs 16, 21,
    26), never decays the classifier's lr, and keeps the last partial batch."""
    seen = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    defaults = SemiSupervisedTask.defaults
    recipe = FinetuneRecipe.from_settings(defaults, lr=1.0, epochs=30,
                                          milestones=defaults["milestones"])
    data = torch.utils.data.TensorDataset(torch.randn(130, 1, 8, 8), torch.arange(130) % 3)
    fine_tune(TinyBackbone(), 3, data, recipe, "cpu", 0)
    assert len(seen) == 30 * 2  # batch 128: 128 + the last 2 images, every epoch
    backbone = [lrs[0] for lrs in seen[::2]]
    assert backbone == pytest.approx([1.0] * 16 + [0.1] * 5 + [0.01] * 5 + [0.001] * 4)
    assert {lrs[1] for lrs in seen} == {50.0}
    seen.clear()
    fixed = FinetuneRecipe(lr=1.0, epochs=3, milestones=(1,), head_lr_mult=50.0, decay_head_lr=True)
    fine_tune(TinyBackbone(), 3, data, fixed, "cpu", 0)  # the options: classifier decayed too,
    assert [lrs[1] for lrs in seen] == pytest.approx([50.0, 5.0, 5.0])  # last partial batch dropped
