"""The protocol self-check: the published-numbers file, ``sweep --profile protocol-check
--weights-list`` planning and dry run (a ResNet-50 torchvision file; a listed file that is not
there is a ``not found`` line), and the report's expected / ours / delta / within table from
hand-made records (this machine has no public weights and no ImageNet)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from external_support import torchvision_file
from report_support import TASKS, record

from benchmark.core.config import resolve
from benchmark.harness.cli import main
from benchmark.models.weight_formats import WEIGHT_FORMATS
from benchmark.report.frame import records_frame
from benchmark.report.protocol_check import PUBLISHED_FILE, protocol_check_markdown, published_checkpoints
from tasks.base import available_tasks
from tasks.common import checked_settings

PUBLISHED = published_checkpoints()


def test_every_published_number_names_a_task_the_profile_runs_a_metric_it_reports_and_a_source():
    profile = resolve("protocol-check")
    assert {"torchvision_supervised_r50", "mocov2_800ep", "invp_release"} <= set(PUBLISHED)
    for checkpoint in PUBLISHED.values():
        assert checkpoint.format in WEIGHT_FORMATS and checkpoint.url.startswith("https://")
        for expected in checkpoint.expected:
            task = available_tasks()[expected.task]
            assert expected.task in profile.tasks, expected
            base_metric = expected.metric.split("@")[0]
            assert base_metric in task.metrics, expected
            settings = checked_settings(task(), profile.tasks[expected.task], expected.task)
            assert expected.dataset in task.datasets(settings), expected
            assert re.search(r"https://\S+", expected.source) and 0 < expected.tolerance <= 2.0
    assert "shared/" not in PUBLISHED_FILE.read_text() and "../" not in PUBLISHED_FILE.read_text()


@pytest.fixture(scope="module")
def r50_file(tmp_path_factory) -> Path:
    return torchvision_file(tmp_path_factory.mktemp("r50") / "resnet50-tv.pth", resolve("imagenet").model)


def sweep_argv(tmp_path: Path, listing: Path, *extra: str) -> list[str]:
    return ["sweep", "--profile", "protocol-check", "--weights-list", str(listing), "--dry-run",
            "--launcher", "local", "--sweeps", str(tmp_path / "sweeps"), "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--data-root", str(tmp_path / "no-data"), *extra]


def test_sweep_weights_list_dry_run_plans_the_listed_files_there_and_lists_those_not_found(
        r50_file, tmp_path, capsys):
    listing = tmp_path / "weights.yaml"
    listing.write_text(f"torchvision_supervised_r50: {r50_file}\nmocov2_800ep: missing/moco_v2.pth.tar\n")
    assert main(sweep_argv(tmp_path, listing)) == 0
    out = capsys.readouterr().out
    assert "torchvision_supervised_r50: " in out and "format torchvision (as given)" in out
    assert f"mocov2_800ep: not found at {tmp_path / 'missing' / 'moco_v2.pth.tar'}" in out
    assert "1 checkpoint(s) x 1 seed(s)" in out
    planned = set(re.findall(r"^\S+\s+task\s+submit\s+-\s+(\S+) \[torchvision_supervised_r50\]", out, re.M))
    assert {"linear", "voc07_svm", "semisup", "places205_linear_multilayer", "detection#0"} <= planned
    assert "pretrain" not in planned and "[random]" not in out and "[pixels]" not in out
    assert "knn: external weights are evaluated without their projection head" in out  # excluded, with why


@pytest.mark.parametrize(("text", "message"), [
    ("mocov2_800ep: nowhere.pth\n", "none of its files is there: mocov2_800ep: not found at"),
    ("my_model: x.pth\n", "'my_model' is not a published checkpoint; valid names: torchvision_supervised_r50"),
    ("- x.pth\n", "must map checkpoint names to weights files"),
])
def test_a_weights_list_with_nothing_to_evaluate_exits_2_naming_the_list(text, message, tmp_path, capsys):
    listing = tmp_path / "weights.yaml"
    listing.write_text(text)
    assert main(sweep_argv(tmp_path, listing)) == 2
    err = capsys.readouterr().err
    assert f"--weights-list {listing}" in err and message in err


def test_sweep_needs_methods_or_a_weights_list_and_not_both(tmp_path, capsys):
    listing = tmp_path / "weights.yaml"
    listing.write_text("mocov2_800ep: x.pth\n")
    assert main(sweep_argv(tmp_path, listing, "--methods", "invp")) == 2
    assert "--methods and --weights-list exclude each other" in capsys.readouterr().err
    assert main(["sweep", "--profile", "mini", "--dry-run"]) == 2
    assert "sweep needs --methods" in capsys.readouterr().err


def external(name: str, task: str, metric: str, dataset: str, value: float, seed: int = 0) -> dict:
    return record(method="external", method_config={}, encoder="external", task=task, metric=metric,
                  dataset=dataset, value=value, seed=seed, split="test", profile="protocol-check",
                  job_id=f"job-{name}-{task}-{metric}-{seed}",
                  extra={"weights": {"name": name, "format": "torchvision", "sha256": "ab", "file": "f"}})


def test_the_report_prints_expected_ours_delta_and_within_tolerance_per_checkpoint_and_metric():
    frame = records_frame([
        external("torchvision_supervised_r50", "detection", "AP50", "voc_detection", 81.0, seed=0),
        external("torchvision_supervised_r50", "detection", "AP50", "voc_detection", 81.2, seed=1),
        external("torchvision_supervised_r50", "voc07_svm", "map", "voc07_cls", 0.80),  # a fraction: x100
        external("my-own-model", "voc07_svm", "map", "voc07_cls", 0.90),  # not a published checkpoint
    ], tasks={**TASKS})
    text = "\n".join(protocol_check_markdown(frame))
    assert "| torchvision_supervised_r50 | detection: AP50 (voc_detection) | 81.3 | 81.1 (2) | -0.2 | ±0.5 | yes |" in text
    assert "| torchvision_supervised_r50 | voc07_svm: map (voc07_cls) | 87.5 | 80.0 (1) | -7.5 | ±1.5 | NO |" in text
    assert "| torchvision_supervised_r50 | detection: AP (voc_detection) | 53.5 | — | — | ±0.5 | not run |" in text
    assert "my-own-model" not in text and "mocov2_800ep" not in text  # only checkpoints with records
    total = len(PUBLISHED["torchvision_supervised_r50"].expected)
    assert f"1 within tolerance, 1 outside, {total - 2} not run." in text
    assert set(frame["row"]) == {"torchvision_supervised_r50", "my-own-model"}  # NAME is the row


def test_no_self_check_section_without_records_on_a_published_checkpoint():
    frame = records_frame([record(task="knn", metric="top1", dataset="fashion_mnist")], tasks={**TASKS})
    assert protocol_check_markdown(frame) == []
