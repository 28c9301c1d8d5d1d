"""The command line's error paths, through real subprocesses (exit code 2 + a useful message)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import benchmark.cli
from benchmark.cli import main
from benchmark.config import ConfigError
from benchmark.datasets import get_dataset
from methods.base import method_class
from tasks.base import get_task
from tasks.semisup import per_fraction
from tasks.transfer import transfer_splits

REPO_ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env=None if env is None else {**os.environ, **env})


@pytest.mark.parametrize("sub", [[], ["run"], ["list"], ["data"], ["data", "check"], ["export"],
                                 ["data", "prepare"], ["report"]])
def test_help_on_every_subcommand(sub, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*sub, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m benchmark")


def test_unknown_method_lists_valid_ones():
    out = cli("run", "--method", "nosuch", "--tasks", "none")
    assert out.returncode == 2
    assert "unknown method 'nosuch'" in out.stderr and "invp" in out.stderr


def test_unknown_task_lists_valid_ones():
    out = cli("run", "--method", "invp", "--tasks", "nosuch")
    assert out.returncode == 2
    assert "unknown task 'nosuch'" in out.stderr and "knn" in out.stderr


def test_unknown_profile_lists_valid_ones():
    out = cli("run", "--method", "invp", "--profile", "nosuch")
    assert out.returncode == 2
    assert "unknown profile 'nosuch'" in out.stderr and "mini" in out.stderr


def test_malformed_and_unknown_set_name_the_key():
    out = cli("run", "--method", "invp", "--tasks", "none", "--set", "pretrain.epochs")
    assert out.returncode == 2 and "malformed --set 'pretrain.epochs'" in out.stderr
    out = cli("run", "--method", "invp", "--tasks", "none", "--set", "pretrain.epoch=2")
    assert out.returncode == 2 and "'pretrain.epoch'" in out.stderr and "pretrain.epochs" in out.stderr


def test_data_check_names_path_and_remedy_for_missing_data(tmp_path: Path):
    out = cli("data", "check", "--data-root", str(tmp_path))
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.strip().startswith("fashion_mnist"))
    assert "MISSING" in line and str(tmp_path / "FashionMNIST" / "raw") in line
    assert "dataset-fashion-mnist" in out.stdout


def test_unknown_dataset_for_prepare(tmp_path: Path):
    out = cli("data", "prepare", "nosuch", "--data-root", str(tmp_path))
    assert out.returncode == 2 and "unknown dataset 'nosuch'" in out.stderr
    assert "fashion_mnist" in out.stderr


def test_report_without_records_says_what_to_do(tmp_path: Path):
    out = cli("report", "--results", str(tmp_path / "none"))
    assert out.returncode == 2 and "no result records" in out.stderr


def test_list_shows_every_kind():
    out = cli("list")
    assert out.returncode == 0, out.stderr
    for heading in ("methods:", "tasks:", "profiles:", "datasets:"):
        assert heading in out.stdout
    assert "fashion_mnist" in out.stdout and "mini" in out.stdout


def test_export_missing_checkpoint_is_named(tmp_path: Path):
    missing = tmp_path / "encoder.pt"
    out = cli("export", "--format", "detectron2", str(missing), str(tmp_path / "x.pkl"))
    assert out.returncode == 2
    assert str(missing) in out.stderr and not (tmp_path / "x.pkl").exists()


MALFORMED_PROFILE = "seed: 0\npretrain:\n  epochs: [1, 2\n  lr: 3\n"  # unclosed list


def test_malformed_profile_yaml_names_file_line_and_column(tmp_path: Path):
    profile = tmp_path / "broken.yaml"
    profile.write_text(MALFORMED_PROFILE)
    out = cli("run", "--method", "invp", "--tasks", "none", "--profile", str(profile))
    assert out.returncode == 2
    assert f"malformed YAML in {profile}, line 4, column 5" in out.stderr
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback_of_a_user_error(tmp_path: Path):
    profile = tmp_path / "broken.yaml"
    profile.write_text(MALFORMED_PROFILE)
    out = cli("run", "--method", "invp", "--tasks", "none", "--profile", str(profile), "--debug",
              env={"BENCHMARK_DEBUG": ""})
    assert out.returncode not in (0, 2)
    assert "Traceback (most recent call last)" in out.stderr
    assert "ConfigError: malformed YAML" in out.stderr


@pytest.mark.parametrize("flag, env", [(["--debug"], ""), ([], "1")], ids=["--debug first", "env"])
def test_debug_flag_first_or_env_re_raises_user_errors(tmp_path: Path, monkeypatch, flag, env):
    profile = tmp_path / "broken.yaml"
    profile.write_text(MALFORMED_PROFILE)
    monkeypatch.setenv("BENCHMARK_DEBUG", env)
    with pytest.raises(ConfigError, match="malformed YAML"):
        main([*flag, "run", "--method", "invp", "--tasks", "none", "--profile", str(profile)])


def test_a_bug_raising_keyerror_keeps_its_traceback(monkeypatch):
    def buggy() -> list[str]:
        raise KeyError("internal")

    monkeypatch.setattr(benchmark.cli, "available_profiles", buggy)
    with pytest.raises(KeyError, match="internal"):
        main(["list", "--profiles"])


@pytest.mark.parametrize("lookup", [
    lambda: get_dataset("nosuch"), lambda: method_class("nosuch"), lambda: get_task("nosuch"),
    lambda: transfer_splits("nosuch"), lambda: per_fraction({0.1: 3}, 0.5),
], ids=["dataset", "method", "task", "transfer dataset", "semisup fraction"])
def test_registry_lookups_of_unknown_names_are_config_errors(lookup):
    with pytest.raises(ConfigError):
        lookup()
