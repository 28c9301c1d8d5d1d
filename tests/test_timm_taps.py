"""timm backbones get block taps: the probes' layer settings and the detection C4 split work on a
timm ResNet; on a timm model without the ResNet layout, planning leaves out (``--tasks all``) or
refuses (a task named) the tasks that cannot run on it, with the reason."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from benchmark.core.config import ConfigError, read_yaml_file, resolve
from benchmark.harness.cli import main
from benchmark.harness.plan import select_tasks, unfit_tasks
from benchmark.models import build_backbone
from tasks.base import get_task
from tasks.detection.model import split_c4
from tasks.errors import TaskNotApplicable
from tasks.features import FeatureLayer, check_layers, layer_vectors, resolve_layers

pytest.importorskip("timm")
PROFILES = Path(__file__).resolve().parent.parent / "benchmark" / "profiles"


def timm_backbone(name: str, in_channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return build_backbone({"backbone": f"timm:{name}", "in_channels": in_channels}).eval()


def probe_layer_settings(profile: str) -> dict[str, object]:
    """Every task's feature-layer setting (``layers``/``layer``) under ``profile``, over its defaults."""
    cfg = resolve(profile, "invp")
    found = {}
    for task, overrides in cfg.tasks.items():
        settings = {**get_task(task).defaults, **overrides}
        for key in ("layers", "layer"):
            if key in settings:
                found[f"{task}.{key}"] = settings[key]
    return found


def test_a_timm_resnet50_has_the_suite_resnet50_block_names():
    suite = build_backbone({"backbone": "resnet50", "in_channels": 3, "init": "kaiming"})
    assert timm_backbone("resnet50").block_names == suite.block_names  # stem, layer1.0 ... layer4.2


@pytest.mark.parametrize("profile, model", [("imagenet", "resnet50"), ("mini", "resnet10t")])
def test_every_probe_layer_of_the_profile_resolves_on_a_timm_resnet(profile, model):
    backbone = timm_backbone(model, in_channels=resolve(profile, "invp").model["in_channels"])
    settings = probe_layer_settings(profile)
    assert "linear.layers" in settings and "linear_multilayer.layers" in settings
    for where, spec in settings.items():
        layers = [layer for layer in resolve_layers(spec, backbone, {}) if not layer.embedding]
        check_layers(backbone, layers)  # raises naming the blocks the backbone lacks


def test_timm_resnet_block_taps_are_its_stem_and_residual_blocks():
    backbone = timm_backbone("resnet10t")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        blocks = backbone.forward_blocks(images)
        model = backbone.model
        stem = model.maxpool(model.act1(model.bn1(model.conv1(images))))
        torch.testing.assert_close(blocks[0], stem, rtol=0, atol=0)
        torch.testing.assert_close(blocks[1], model.layer1[0](stem), rtol=0, atol=0)
        pooled, layer4 = layer_vectors(backbone, images, [FeatureLayer(None), FeatureLayer("layer4.0")])
        torch.testing.assert_close(pooled, backbone(images), rtol=0, atol=0)
        torch.testing.assert_close(layer4, pooled, rtol=1e-6, atol=1e-6)  # timm's avg pool of the last block
    assert [tuple(block.shape[1:]) for block in blocks] == [
        (64, 16, 16), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_the_c4_split_works_on_a_timm_resnet_without_copying_weights():
    backbone = timm_backbone("resnet10t")
    parts = split_c4(backbone)
    assert (parts.in_channels, parts.trunk_channels, parts.head_channels, parts.stride) == (3, 256, 512, 16)
    assert parts.head is backbone.model.layer4 and parts.trunk[0][0] is backbone.model.conv1
    assert all(key.startswith("model.") for key in backbone.state_dict())  # stem/stages are views


def test_a_timm_model_without_the_resnet_layout_has_stage_taps_and_no_c4_split():
    backbone = timm_backbone("test_convnext")
    assert backbone.block_names == ["stages.0", "stages.1", "stages.2", "stages.3"]
    assert len(backbone.forward_blocks(torch.randn(2, 3, 64, 64))) == 4
    with pytest.raises(TaskNotApplicable, match=r"stem \+ stages backbone.*TimmBackbone is none "
                                                r"\(its blocks: stages\.0, stages\.1"):
        split_c4(backbone)
    with pytest.raises(ConfigError, match=r"\['layer1\.2'\] not in the backbone; its blocks are \['stages\.0'.*"
                                          r"set the task's layers"):
        check_layers(backbone, [FeatureLayer.parse("layer1.2@16/8/0")])


def mini_on(backbone: str):
    return resolve("mini", "invp", [f"model.backbone=timm:{backbone}"])


def test_planning_leaves_out_under_all_the_tasks_a_non_resnet_timm_backbone_cannot_run():
    cfg = mini_on("test_convnext")
    unfit = unfit_tasks(cfg, list(cfg.tasks))
    assert set(unfit) == {"detection", "linear_multilayer", "places205_linear_multilayer",
                          "voc07_svm", "voc07_bce"}  # the C4 split; blocks named layer<K>.<b>
    assert "the C4 detector splits a stem + stages backbone" in unfit["detection"]
    assert unfit["voc07_bce"].startswith("tasks.voc07_bce.layer: feature layer block(s) ['layer3.0'] "
                                         "not in the backbone; its blocks are ['stages.0'")
    assert select_tasks(cfg, "all") == [name for name in cfg.tasks if name not in unfit]
    resnet = mini_on("resnet10t")
    assert unfit_tasks(resnet, list(resnet.tasks)) == {} and select_tasks(resnet, "all") == list(resnet.tasks)


def test_a_task_named_that_cannot_run_on_the_backbone_fails_planning_with_the_reason():
    with pytest.raises(ConfigError, match=r"task 'detection' cannot run on model.backbone=timm:test_convnext: "
                                          r"the C4 detector splits .* leave detection out of --tasks"):
        select_tasks(mini_on("test_convnext"), "knn,detection")
    with pytest.raises(ConfigError, match=r"tasks\.linear\.layers: feature layer block\(s\) \['stages\.9'\]"):
        select_tasks(resolve("mini", "invp", ["tasks.linear.layers=[stages.9]",
                                              "model.backbone=timm:test_convnext"]), "linear")


def test_run_and_the_dry_run_show_the_tasks_left_out_and_start_no_job(tmp_path, capsys):
    folders = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
               "--sweeps", str(tmp_path / "sweeps")]
    assert main(["run", "--method", "invp", "--set", "model.backbone=timm:test_convnext",
                 "--tasks", "detection", "--reports", str(tmp_path / "reports"), *folders]) == 2
    err = capsys.readouterr().err
    assert "task 'detection' cannot run on model.backbone=timm:test_convnext" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
    profile = tmp_path / "mini_convnext.yaml"
    tree = read_yaml_file(PROFILES / "mini.yaml")
    tree["model"]["backbone"] = "timm:test_convnext"
    profile.write_text(yaml.safe_dump(tree))
    assert main(["sweep", "--profile", str(profile), "--methods", "invp", "--dry-run", *folders]) == 0
    out = capsys.readouterr().out
    left_out = out.split("not run (they cannot run on model.backbone=timm:test_convnext):\n")[1]
    assert "  detection: the C4 detector splits" in left_out
    assert "  linear_multilayer: tasks.linear_multilayer.layers: feature layer block(s)" in left_out
    assert "knn [invp]" in out and "detection" not in out.split("job id")[1]  # no detection job
