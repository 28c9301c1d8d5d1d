"""The Python API: ``benchmark.load_encoder`` (a checkpoint as the trunk, blocks reachable) and
``benchmark.evaluate`` (one task on any ``nn.Module``), and the README's example of both, run as
printed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision
from docs_examples import example_blocks

import benchmark
from benchmark.api import module_sha256
from benchmark.core.config import ConfigError
from tasks.errors import TaskNotApplicable

README = Path(__file__).resolve().parent.parent / "README.md"


def tiny_module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 16))


def test_the_readme_example_runs_as_printed(tmp_path, monkeypatch, data_root, capsys):
    ((line, code),) = example_blocks(README, "python", "example")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BENCHMARK_DATA", str(data_root))
    namespace: dict = {}
    exec(compile("\n" * line + code, str(README), "exec"), namespace)  # noqa: S102  (the README's example)
    assert namespace["features"].shape == (2, 2048)
    assert len(namespace["blocks"]) == len(namespace["encoder"].block_names) == 17
    records = namespace["records"]
    assert {(r.task, r.encoder, r.method, r.dataset) for r in records} == {
        ("knn", "external", "external", "fashion_mnist")}
    assert {r.metric for r in records} == {"top1", "top5"}
    assert "top1 fashion_mnist" in capsys.readouterr().out


def test_load_encoder_gives_the_torchvision_models_pooled_features(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet50().eval()
    torch.save(source.state_dict(), tmp_path / "r50.pth")
    encoder = benchmark.load_encoder(tmp_path / "r50.pth")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = torch.flatten(torch.nn.Sequential(*list(source.children())[:-1])(images), 1)
        assert torch.allclose(encoder(images), expected, atol=1e-5)
        assert encoder.forward_blocks(images)[-1].shape == (2, 2048, 2, 2)


def test_evaluate_runs_a_task_on_a_plain_module_and_leaves_it_unchanged(data_root, tmp_path):
    module = tiny_module()
    before = {key: value.clone() for key, value in module.state_dict().items()}
    records = benchmark.evaluate(module, task="knn", layer="pooled", train_limit=200, name="tiny",
                                 cache_dir=tmp_path / "cache")
    assert {r.metric for r in records} == {"top1", "top5"} and all(0 <= r.value <= 1 for r in records)
    weights = records[0].extra["weights"]
    assert weights["name"] == "tiny" and weights["format"] == "module"
    assert records[0].checkpoint_hash == module_sha256(module)
    assert all(torch.equal(before[key], value) for key, value in module.state_dict().items())
    assert module.training  # not switched to eval mode either: the task had a copy


def test_evaluate_refuses_what_the_task_cannot_run_with_the_reason(data_root):
    with pytest.raises(TaskNotApplicable, match=r"--set tasks.knn.layer=pooled \(in Python: "
                                                r"evaluate\(\.\.\., layer='pooled'\)\)"):
        benchmark.evaluate(tiny_module(), task="knn")  # the embedding layer: no projection head
    with pytest.raises(ConfigError, match=r"task 'voc07_bce' cannot run on this encoder \(Sequential\): "
                                          r"tasks\.voc07_bce\.layer: "
                                          r"feature layer block\(s\) \['layer3\.0'\] not in the backbone"):
        benchmark.evaluate(tiny_module(), task="voc07_bce")  # checked on the module, before any data
    with pytest.raises(ConfigError, match=r"task 'detection' cannot run on this encoder "
                                          r"\(Sequential\): the C4 detector splits"):
        benchmark.evaluate(tiny_module(), task="detection")
    with pytest.raises(ConfigError, match=r"tasks\.knn\.k"):
        benchmark.evaluate(tiny_module(), task="knn", k=0)
    with pytest.raises(ConfigError, match="unknown task 'nonsense'"):
        benchmark.evaluate(tiny_module(), task="nonsense")
    with pytest.raises(ConfigError, match="dataset fashion_mnist"):
        benchmark.evaluate(tiny_module(), task="knn", layer="pooled", data_root=os.devnull + "-none")


def test_module_fingerprints_follow_the_weights_not_the_object():
    a, b = tiny_module(), tiny_module()
    assert module_sha256(a) == module_sha256(b)
    with torch.no_grad():
        b[1].bias.add_(1.0)
    assert module_sha256(a) != module_sha256(b)
