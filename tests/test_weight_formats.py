"""Published checkpoint formats load as they are (benchmark/models/external_weights.py)."""
from __future__ import annotations

import argparse
import copy
import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from payload_support import Payload
from torch import nn
from weight_formats_support import DROPPED, save

from benchmark.models import WEIGHT_FORMATS, WeightsError, build_backbone, detect_format, load_weights
from benchmark.models.weight_formats import torchvision_name

RESNET50_CFG = {"backbone": "resnet50", "in_channels": 3, "init": "kaiming"}
MINI_CFG = {"backbone": "mini_resnet", "in_channels": 3, "width": 4, "depths": [1, 1, 1, 1], "init": "pytorch"}
WRITTEN_FORMATS = ("torchvision", "moco", "moco-v3", "invp", "vissl", "solo-learn")


def _randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Random affine parameters and running statistics, so a swapped or missing BN tensor shows."""
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.normal_(1.0, 0.2)
            module.bias.data.normal_(0.0, 0.2)
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(7)
    return net.eval()


class Source:
    """A random model, its trunk state dict in torchvision names, its classifier, and its pooled
    features on a fixed batch."""

    def __init__(self, trunk_model: nn.Module, trunk: dict, fc: dict, model_cfg: dict):
        with torch.no_grad():
            self.features = trunk_model(_batch())
        self.trunk, self.fc, self.model_cfg = trunk, fc, model_cfg


@pytest.fixture(scope="module")
def resnet50_source() -> Source:
    torch.manual_seed(0)
    net = _randomise_batchnorm(torchvision.models.resnet50(weights=None))
    state = net.state_dict()
    fc = {name: state.pop(f"fc.{name}") for name in ("weight", "bias")}
    pooled = copy.deepcopy(net)
    pooled.fc = nn.Identity()
    return Source(pooled, state, fc, RESNET50_CFG)


@pytest.fixture(scope="module")
def mini_source() -> Source:
    torch.manual_seed(1)
    backbone = _randomise_batchnorm(build_backbone(MINI_CFG))
    trunk = {torchvision_name(key): value for key, value in backbone.state_dict().items()}
    return Source(backbone, trunk, {"weight": torch.randn(10, 32), "bias": torch.zeros(10)}, MINI_CFG)


def _batch() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _loaded_features(loaded) -> torch.Tensor:
    with torch.no_grad():
        return loaded.backbone(_batch())


@pytest.mark.parametrize("writer", WRITTEN_FORMATS)
@pytest.mark.parametrize("source_name", ["resnet50_source", "mini_source"])
def test_each_format_loads_with_the_source_features(writer, source_name, request, tmp_path):
    source = request.getfixturevalue(source_name)
    path = save(writer, source.trunk, source.fc, tmp_path / "weights.pth")
    loaded = load_weights(path, source.model_cfg)
    fmt = writer.split("-v")[0]
    assert (loaded.format, loaded.auto_detected) == (fmt, True)
    assert detect_format(torch.load(path, weights_only=True), path, source.model_cfg["backbone"]) == fmt
    torch.testing.assert_close(_loaded_features(loaded), source.features, rtol=0, atol=1e-5)
    assert loaded.dropped == DROPPED[writer](len(source.trunk))
    assert loaded.missing == () and loaded.unexpected == () and not loaded.backbone.training
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.summary().startswith(f"format {fmt} (auto-detected); tensors dropped: ")


def test_summary_counts_the_momentum_encoder_and_head_in_one_line(resnet50_source, tmp_path):
    loaded = load_weights(save("moco", resnet50_source.trunk, resnet50_source.fc, tmp_path / "m.pth"), RESNET50_CFG)
    assert loaded.summary() == ("format moco (auto-detected); tensors dropped: 322 momentum encoder, "
                                "4 projection head, 2 queue")


def test_suite_encoder_file_loads_with_its_own_model_section(tmp_path):
    torch.manual_seed(2)
    backbone = _randomise_batchnorm(build_backbone(MINI_CFG))
    head = nn.Linear(backbone.feature_dim, 8)
    path = tmp_path / "encoder.pt"
    torch.save({"backbone": backbone.state_dict(), "head": head.state_dict(),
                "config": {"model": MINI_CFG, "seed": 0}, "epoch": 3}, path)
    loaded = load_weights(path, RESNET50_CFG)  # the profile's model section is not the file's
    assert (loaded.format, loaded.model_cfg) == ("suite", MINI_CFG)
    assert loaded.dropped == {"projection head": 2}
    with torch.no_grad():
        torch.testing.assert_close(_loaded_features(loaded), backbone(_batch()), rtol=0, atol=1e-5)


def test_a_missing_trunk_key_is_refused_naming_it(mini_source, tmp_path):
    trunk = {key: value for key, value in mini_source.trunk.items() if key != "layer4.0.bn2.running_var"}
    path = save("moco", trunk, mini_source.fc, tmp_path / "m.pth")
    with pytest.raises(WeightsError, match=r"1 trunk keys missing \(stages\.3\.0\.bn2\.running_var "
                                           r"\(torchvision name layer4\.0\.bn2\.running_var\)\).*--allow-missing-keys"):
        load_weights(path, MINI_CFG)


def test_allow_missing_keys_loads_the_rest_and_lists_what_was_missing(mini_source, tmp_path):
    trunk = {key: value for key, value in mini_source.trunk.items() if key != "layer4.0.bn2.running_var"}
    loaded = load_weights(save("torchvision", trunk, mini_source.fc, tmp_path / "t.pth"), MINI_CFG,
                          allow_missing_keys=True)
    assert loaded.missing == ("stages.3.0.bn2.running_var",)
    assert "1 trunk keys MISSING, left at random init (stages.3.0.bn2.running_var)" in loaded.summary()
    torch.testing.assert_close(loaded.backbone.stages[0][0].bn1.running_mean,
                               mini_source.trunk["layer1.0.bn1.running_mean"])


def test_an_unexpected_trunk_key_is_refused(mini_source, tmp_path):
    trunk = {**mini_source.trunk, "layer4.1.conv1.weight": torch.zeros(32, 32, 3, 3)}  # a deeper net's block
    with pytest.raises(WeightsError, match=r"1 unexpected keys \(stages\.3\.1\.conv1\.weight "
                                           r"\(torchvision name layer4\.1\.conv1\.weight\)\)"):
        load_weights(save("invp", trunk, mini_source.fc, tmp_path / "i.pth"), MINI_CFG)


def test_a_trunk_of_another_shape_is_refused_naming_the_tensor(mini_source, tmp_path):
    path = save("torchvision", mini_source.trunk, mini_source.fc, tmp_path / "t.pth")
    with pytest.raises(WeightsError, match=r"wrong shape.*stem\.0\.weight \(4, 3, 3, 3\) vs \(4, 1, 3, 3\)"):
        load_weights(path, {**MINI_CFG, "in_channels": 1})


def test_missing_batchnorm_step_counters_are_filled_and_said(mini_source, tmp_path):
    trunk = {key: value for key, value in mini_source.trunk.items() if not key.endswith("num_batches_tracked")}
    loaded = load_weights(save("torchvision", trunk, mini_source.fc, tmp_path / "old.pth"), MINI_CFG)
    assert loaded.counters_filled == len(mini_source.trunk) - len(trunk) > 0
    assert "BatchNorm step counters absent (set to 0" in loaded.summary()
    torch.testing.assert_close(_loaded_features(loaded), mini_source.features, rtol=0, atol=1e-5)


def test_a_pickle_payload_never_runs_and_the_error_says_how_to_resave(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": Payload(marker)}, path)
    with pytest.raises(WeightsError, match=r"evil\.pth was not loaded: it refers to .*re-save its tensors yourself"):
        load_weights(path, MINI_CFG)
    assert not marker.exists()


def test_a_file_needing_full_unpickling_is_refused_and_its_resaved_tensors_load(mini_source, tmp_path):
    path = tmp_path / "with_path.pth"  # a training script that saved a pathlib path among its settings
    torch.save({**moco_like(mini_source), "data_dir": Path("/data/imagenet")}, path)
    with pytest.raises(WeightsError, match="re-save its tensors yourself"):
        load_weights(path, MINI_CFG)
    resaved = tmp_path / "resaved.pth"  # what the message tells the user to do, where they trust the file:
    torch.save({"state_dict": moco_like(mini_source)["state_dict"]}, resaved)  # its tensors alone
    loaded = load_weights(resaved, MINI_CFG)
    torch.testing.assert_close(_loaded_features(loaded), mini_source.features, rtol=0, atol=1e-5)


def references_checkpoint(source: Source, ema: bool) -> dict:
    """What torchvision's references/classification/train.py saves each epoch (``--model-ema``:
    the AveragedModel's state dict too)."""
    model = torchvision.models.resnet50(weights=None)
    model.load_state_dict({**source.trunk, **{f"fc.{key}": value for key, value in source.fc.items()}})
    stepped = copy.deepcopy(model)  # an optimizer with momentum buffers, the model's weights kept
    optimizer = torch.optim.SGD(stepped.parameters(), lr=0.5, momentum=0.9, weight_decay=2e-5)
    stepped(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=600)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "lr_scheduler": scheduler.state_dict(), "epoch": 599,
                  "args": argparse.Namespace(data_path="/datasets01/imagenet_full_size/061417/",
                                             model="resnet50", device="cuda", batch_size=128, epochs=600,
                                             lr=0.5, label_smoothing=0.1, mixup_alpha=0.2, weights=None,
                                             val_resize_size=232, model_ema=ema, distributed=True)}
    if ema:
        checkpoint["model_ema"] = torch.optim.swa_utils.AveragedModel(model).state_dict()
    return checkpoint


@pytest.mark.parametrize("ema", [False, True])
def test_a_torchvision_references_checkpoint_loads_its_model_without_full_unpickling(
        resnet50_source, tmp_path, ema):
    path = tmp_path / "checkpoint.pth"
    torch.save(references_checkpoint(resnet50_source, ema), path)
    loaded = load_weights(path, RESNET50_CFG)
    assert (loaded.format, loaded.auto_detected) == ("torchvision", True)  # read weights-only: no other path exists
    torch.testing.assert_close(_loaded_features(loaded), resnet50_source.features, rtol=0, atol=1e-5)
    copies = {"EMA copy": len(resnet50_source.trunk) + 2 + 1} if ema else {}  # + fc, n_averaged
    assert loaded.dropped == {"classifier": 2, **copies}


def test_an_allowed_namespace_does_not_let_a_payload_inside_it_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil_args.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "optimizer": {}, "epoch": 0,
                "args": argparse.Namespace(lr=0.1, hook=Payload(marker))}, path)
    with pytest.raises(WeightsError, match=r"evil_args\.pth was not loaded: it refers to .*re-save its tensors yourself"):
        load_weights(path, MINI_CFG)
    assert not marker.exists()


def moco_like(source: Source) -> dict:
    return {"state_dict": {f"module.encoder_q.{key}": value for key, value in source.trunk.items()}}


def test_an_unknown_layout_is_refused_listing_the_formats(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weights": {"a": torch.zeros(1)}}, path)
    with pytest.raises(WeightsError, match=r"fits none of " + ", ".join(WEIGHT_FORMATS) +
                       r" \(top-level keys: weights\).*--weights-format"):
        load_weights(path, MINI_CFG)


def test_an_ambiguous_layout_is_refused_naming_the_candidates(mini_source, tmp_path):
    path = tmp_path / "both.pth"
    torch.save({**moco_like(mini_source), "classy_state_dict": {}}, path)
    with pytest.raises(WeightsError, match="it fits vissl and moco"):
        load_weights(path, MINI_CFG)


def test_a_format_given_that_does_not_fit_names_the_missing_level(mini_source, tmp_path):
    path = save("torchvision", mini_source.trunk, mini_source.fc, tmp_path / "t.pth")
    with pytest.raises(WeightsError, match=r"is not a vissl checkpoint: it has no classy_state_dict"):
        load_weights(path, MINI_CFG, "vissl")
    with pytest.raises(WeightsError, match=r"cannot be read as format 'keras'"):
        load_weights(path, MINI_CFG, "keras")


def test_a_missing_file_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match=r"absent\.pth is not a file"):
        load_weights(tmp_path / "absent.pth", MINI_CFG)


@pytest.mark.parametrize("name, classifier", [("resnet10t", 2), ("test_convnext", 2)])
def test_a_timm_state_dict_loads_with_its_classifier_dropped(name, classifier, tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    source = _randomise_batchnorm(timm.create_model(name, pretrained=False, num_classes=10))
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    model_cfg = {"backbone": f"timm:{name}", "in_channels": 3}
    loaded = load_weights(path, model_cfg)
    assert (loaded.format, loaded.dropped, loaded.missing, loaded.unexpected) == (
        "timm", {"classifier": classifier}, (), ())
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(_batch()), pre_logits=True)
    torch.testing.assert_close(_loaded_features(loaded), expected, rtol=0, atol=1e-5)
    with pytest.raises(WeightsError, match="fits none of"):  # no torchvision ResNet keys, no timm backbone
        load_weights(path, MINI_CFG)


def test_a_timm_train_checkpoint_loads_its_ema_weights_as_timm_does(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(6)
    trained = _randomise_batchnorm(timm.create_model("resnet10t", pretrained=False, num_classes=10))
    ema = _randomise_batchnorm(timm.create_model("resnet10t", pretrained=False, num_classes=10))
    checkpoint = {"epoch": 3, "arch": "resnet10t", "state_dict": trained.state_dict(),
                  "optimizer": torch.optim.SGD(trained.parameters(), lr=0.1).state_dict(),
                  "version": 2, "args": argparse.Namespace(model="resnet10t", lr=0.1),
                  "metric": 12.5}  # what timm's train.py saves
    cfg = {"backbone": "timm:resnet10t", "in_channels": 3}
    for keys, source in (({}, trained), ({"state_dict_ema": ema.state_dict()}, ema)):
        path = tmp_path / f"checkpoint-{len(keys)}.pth.tar"
        torch.save({**checkpoint, **keys}, path)
        loaded = load_weights(path, cfg)
        assert (loaded.format, loaded.dropped, loaded.missing, loaded.unexpected) == (
            "timm", {"classifier": 2}, (), ())
        with torch.no_grad():
            expected = source.forward_head(source.forward_features(_batch()), pre_logits=True)
        torch.testing.assert_close(_loaded_features(loaded), expected, rtol=0, atol=1e-5)


def test_a_safetensors_file_loads_as_its_state_dict(mini_source, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"  # how the Hugging Face hub ships timm and torchvision weights
    safetensors_torch.save_file({**mini_source.trunk, "fc.weight": mini_source.fc["weight"],
                                 "fc.bias": mini_source.fc["bias"]}, str(path))
    loaded = load_weights(path, MINI_CFG)
    assert (loaded.format, loaded.dropped) == ("torchvision", {"classifier": 2})
    torch.testing.assert_close(_loaded_features(loaded), mini_source.features, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["cut.pth", "cut.safetensors"])
def test_a_cut_file_is_a_weights_error_saying_download_it_again(mini_source, name, tmp_path):
    whole = save("torchvision", mini_source.trunk, mini_source.fc, tmp_path / "whole.pth").read_bytes()
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(WeightsError, match=rf"{name} is unreadable \(.*download it again if it was cut"):
        load_weights(path, MINI_CFG)


def test_a_whole_pickled_model_is_refused_and_its_resaved_state_dict_loads(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(5)
    net = _randomise_batchnorm(timm.create_model("resnet10t", pretrained=False, num_classes=0))
    path = tmp_path / "model.pt"
    torch.save(net, path)  # torch.save(model): the module itself, not its state dict
    cfg = {"backbone": "timm:resnet10t", "in_channels": 3}
    with pytest.raises(WeightsError, match=r"refers to timm\.models\.resnet\.ResNet.*re-save its tensors yourself"):
        load_weights(path, cfg)
    resaved = tmp_path / "state.pth"  # model.state_dict(), as the message says (the suite never unpickles it)
    torch.save(net.state_dict(), resaved)
    loaded = load_weights(resaved, cfg)
    assert loaded.format == "timm"
    with torch.no_grad():
        torch.testing.assert_close(_loaded_features(loaded), net(_batch()), rtol=0, atol=1e-5)
