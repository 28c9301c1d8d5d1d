"""The command line's error paths, through real subprocesses (exit code 2 + a useful message)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_support import record, save

import benchmark.harness.cli
from benchmark.core.config import ConfigError
from benchmark.data import get_dataset
from benchmark.harness.cli import main
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


def test_a_bad_method_setting_exits_2_at_planning_and_names_the_key(tmp_path: Path, capsys):
    folders = [arg for name in ("out", "results", "reports") for arg in (f"--{name}", str(tmp_path / name))]
    code = main(["run", "--method", "invp", "--tasks", "none", "--set", "method.temperature=abc", *folders])
    err = capsys.readouterr().err
    assert code == 2 and "method.temperature must be a number > 0, got 'abc'" in err and "--set method.temperature" in err
    assert "Traceback" not in err and not list(tmp_path.iterdir())  # nothing planned, nothing ran


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


@pytest.mark.parametrize("content, problem", [
    ('{"job": {"job_id": "j"}, "records": [{"method": ', "is not valid JSON"),
    ("[]", "holds []"),
    ('{"job": {"job_id": "j"}, "records": [{"method": "invp", "value": 0.5}]}',
     "record 0 lacks field(s) method_config"),
], ids=["truncated", "empty list", "field-less record"])
def test_report_refuses_a_damaged_result_file_and_names_it(tmp_path: Path, content: str, problem: str):
    save(tmp_path / "results" / "mini", [record(profile="mini")])
    damaged = tmp_path / "results" / "mini" / "damaged.json"
    damaged.write_text(content)
    out = cli("report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "reports"))
    assert out.returncode == 2
    assert f"result file {damaged} {problem}" in out.stderr and "delete it and re-run" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "reports" / "mini.md").exists()


def _file_in_the_way(tmp_path: Path) -> Path:
    """A regular file: no one can create a folder below it (ENOTDIR). Tests run as root, for whom
    chmod 0o555 changes nothing, so this stands in for a read-only location."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    return blocker


def _run_folders(tmp_path: Path, option: str) -> tuple[Path, list[str]]:
    """``--out/--results/--reports`` arguments under ``tmp_path``, ``option``'s unwritable."""
    blocker = _file_in_the_way(tmp_path)
    folders = {"--out": tmp_path / "runs", "--results": tmp_path / "results",
               "--reports": tmp_path / "reports", "--sweeps": tmp_path / "sweeps",
               option: blocker / "sub"}
    return blocker / "sub", [arg for name, path in folders.items() for arg in (name, str(path))]


def _nothing_ran(tmp_path: Path) -> bool:
    return not list(tmp_path.rglob("encoder.pt")) and not list(tmp_path.rglob("log.jsonl"))


@pytest.mark.parametrize("option", ["--out", "--results"])
def test_unwritable_run_folder_fails_before_any_pretraining(tmp_path: Path, option: str):
    blocked, folders = _run_folders(tmp_path, option)
    started = time.monotonic()
    out = cli("run", "--method", "invp", "--tasks", "knn", *folders)
    assert out.returncode == 2
    assert f"error: {option} {blocked} is not writable" in out.stderr
    assert "Traceback" not in out.stderr
    assert "jobs" not in out.stdout and _nothing_ran(tmp_path)  # nothing planned, nothing ran
    assert time.monotonic() - started < 90  # a pretraining takes minutes


def test_unwritable_reports_folder_fails_before_any_pretraining(tmp_path: Path, capsys):
    blocked, folders = _run_folders(tmp_path, "--reports")
    assert main(["run", "--method", "invp", "--tasks", "knn", *folders]) == 2
    assert f"error: --reports {blocked} is not writable" in capsys.readouterr().err
    assert _nothing_ran(tmp_path)


def test_unwritable_sweeps_folder_fails_before_writing_the_sweep(tmp_path: Path, capsys):
    blocker = _file_in_the_way(tmp_path)
    assert main(["sweep", "--methods", "invp", "--tasks", "none", "--launcher", "local",
                 "--sweeps", str(blocker / "sweeps"), "--out", str(tmp_path / "runs"),
                 "--results", str(tmp_path / "results")]) == 2
    assert f"error: --sweeps {blocker / 'sweeps'} is not writable" in capsys.readouterr().err
    assert _nothing_ran(tmp_path)


def test_unwritable_report_folder_is_named(tmp_path: Path, capsys):
    save(tmp_path / "results" / "mini", [record(profile="mini")])
    blocker = _file_in_the_way(tmp_path)
    assert main(["report", "--results", str(tmp_path / "results"),
                 "--out", str(blocker / "reports")]) == 2
    assert f"error: --out {blocker / 'reports'} is not writable" in capsys.readouterr().err


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "disk full?"), (errno.EROFS, "read-only"),
                                        (errno.EACCES, "permission denied")])
def test_full_or_read_only_report_folder_says_why(tmp_path: Path, monkeypatch, capsys, code: int,
                                                  hint: str):
    save(tmp_path / "results" / "mini", [record(profile="mini")])

    def failing_fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    assert main(["report", "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "reports")]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'reports'} is not writable" in err and hint in err
    assert not (tmp_path / "reports" / "mini.md").exists()


def test_disk_full_while_writing_names_the_file(tmp_path: Path, monkeypatch, capsys):
    for side in ("a", "b"):
        save(tmp_path / side, [record(profile="mini")])
    target = tmp_path / "diff.md"

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"error: {target}: No space left on device (disk full?" in err
    assert not target.exists()


def _empty_mini_voc_cls(root: Path) -> Path:
    """A mini_voc_cls folder whose class lists are all empty (found, but zero samples)."""
    from benchmark.data.voc07_cls import MINI_DET_CLASSES

    voc = root / "mini_det" / "VOCdevkit" / "VOC2007"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for split in ("trainval", "test"):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("")
        for name in MINI_DET_CLASSES:
            (voc / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("")
    return voc


def test_empty_dataset_names_the_dataset_and_its_folder(tmp_path: Path):
    voc = _empty_mini_voc_cls(tmp_path / "data")
    # Fashion-MNIST is absent, so the pretraining fails at once; the sanity encoders' jobs do not
    # wait for it and open the empty dataset.
    out = cli("run", "--method", "invp", "--tasks", "voc07_lbfgs", "--no-report",
              "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs"),
              "--results", str(tmp_path / "results"), "--sweeps", str(tmp_path / "sweeps"))
    assert out.returncode == 1
    lines = [line for line in out.stdout.splitlines() if "voc07_lbfgs [random]" in line]
    assert len(lines) == 1
    assert f"dataset 'mini_voc_cls': split 'trainval' under {voc} has no samples" in lines[0]
    assert "dataset 'fashion_mnist' not usable" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr and 'File "' not in out.stdout


def test_a_bug_raising_keyerror_keeps_its_traceback(monkeypatch):
    def buggy() -> list[str]:
        raise KeyError("internal")

    monkeypatch.setattr(benchmark.harness.cli, "available_profiles", buggy)
    with pytest.raises(KeyError, match="internal"):
        main(["list", "--profiles"])


@pytest.mark.parametrize("lookup", [
    lambda: get_dataset("nosuch"), lambda: method_class("nosuch"), lambda: get_task("nosuch"),
    lambda: transfer_splits("nosuch"), lambda: per_fraction({0.1: 3}, 0.5),
], ids=["dataset", "method", "task", "transfer dataset", "semisup fraction"])
def test_registry_lookups_of_unknown_names_are_config_errors(lookup):
    with pytest.raises(ConfigError):
        lookup()
