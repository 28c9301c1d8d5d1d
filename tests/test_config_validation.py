"""Bad config values and tampered records are refused before anything runs or is opened: exit 2,
one line naming the key (or the file and field), nothing written, nothing read outside the
results and runs folders."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from benchmark.core.config import PROFILE_DIR, ConfigError
from benchmark.core.store import ResultStore, write_json_atomic
from benchmark.harness.cli import main
from benchmark.harness.plan import plan_run, select_tasks
from benchmark.harness.schema import resolve_run


def run_cli(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    """``run`` of invp on the mini profile with every output folder under ``tmp_path/out``."""
    out = tmp_path / "out"
    code = main(["run", "--method", "invp", "--tasks", "knn", "--out", str(out / "runs"),
                 "--results", str(out / "results"), "--reports", str(out / "reports"),
                 "--sweeps", str(out / "sweeps"), *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("override, key", [
    ("profile=../../x", "profile"),
    ("method.name=../x", "method.name"),
    ("pretrain.epochs=0", "pretrain.epochs"),
    ("pretrain.batch_size=0", "pretrain.batch_size"),
    ("pretrain.optimizer.lr=abc", "pretrain.optimizer.lr"),
    ("pretrain.optimizer.lr=-0.1", "pretrain.optimizer.lr"),
    ("pretrain.optimizer.momentum=1.0", "pretrain.optimizer.momentum"),
    ("pretrain.epochs=2.5", "pretrain.epochs"),
    ("pretrain.amp=yes please", "pretrain.amp"),
    ("pretrain.schedule.name=linear", "pretrain.schedule.name"),
    ("pretrain.monitor.sigma=0", "pretrain.monitor.sigma"),
    ("data.dataset=../../etc", "data.dataset"),
    ("data.train_subset=-1", "data.train_subset"),
    ("model.head=conv", "model.head"),
    ("seed=-1", "seed"),
    ("device=gpu", "device"),
    ("launcher.nodes=0", "launcher.nodes"),
    ("tasks.knn.k=0", "tasks.knn.k"),
    ("tasks.knn.sigma=abc", "tasks.knn.sigma"),
    ("tasks.knn.test_split=../../x", "tasks.knn.test_split"),
])
def test_a_bad_value_stops_run_before_anything_naming_the_key(tmp_path, capsys, override, key):
    code, err = run_cli(tmp_path, capsys, "--set", override)
    assert code == 2
    assert err.startswith(f"error: {key} must be ") and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # no results, runs or report, inside or outside


@pytest.mark.parametrize("override, key", [
    ("pretrain.epochs=0", "pretrain.epochs"),
    ("tasks.linear.lr=[0.1,-1]", "tasks.linear.lr"),
    ("tasks.semisup.fractions=[0.01,2]", "tasks.semisup.fractions[1]"),
    ("tasks.transfer.datasets=[digits,../x]", "tasks.transfer.datasets[1]"),
    ("tasks.voc07_svm.costs=[0.1,0]", "tasks.voc07_svm.costs[1]"),
    ("tasks.detection.schedule.lr=0", "tasks.detection.schedule.lr"),
    ("tasks.detection.detector.roi_size=0", "tasks.detection.detector.roi_size"),
])
def test_sweep_plans_nothing_with_a_bad_value(tmp_path, capsys, override, key):
    code = main(["sweep", "--methods", "invp", "--launcher", "local", "--dry-run",
                 "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "runs"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {key} must be " in err


def test_the_pretrain_entry_point_checks_too(tmp_path, capsys):
    from benchmark.harness.pretrain_cli import main as pretrain_main

    code = pretrain_main(["--method", "invp", "--run-dir", str(tmp_path / "run"),
                          "--set", "pretrain.batch_size=0"])
    assert code == 2 and "pretrain.batch_size must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_exponent_floats_are_numbers_with_the_hash_of_their_value(tmp_path):
    base = resolve_run("mini", "invp", ["pretrain.optimizer.lr=0.03"])
    written = resolve_run("mini", "invp", ["pretrain.optimizer.lr=3e-2"])
    assert written.pretrain.optimizer.lr == 0.03 and written.hash == base.hash
    profile = tmp_path / "mini.yaml"
    profile.write_text((PROFILE_DIR / "mini.yaml").read_text()
                       .replace("lr: 0.03,", "lr: 3e-2,").replace("weight_decay: 5.0e-4", "weight_decay: 5e-4"))
    assert resolve_run(str(profile), "invp").hash == resolve_run("mini", "invp").hash


def _profile_copy(tmp_path: Path, old: str, new: str) -> str:
    text = (PROFILE_DIR / "mini.yaml").read_text()
    assert old in text
    path = tmp_path / "mini.yaml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


@pytest.mark.parametrize("old, new, message", [
    ("  epochs: 20\n", "  epochs: 0\n", r"pretrain\.epochs must be a positive integer, got 0; fix it in .*mini\.yaml"),
    ("  batch_size: 64\n", "  batch_size: 64\n  batchsize: 32\n",
     r"pretrain: unknown setting\(s\) \['batchsize'\] \(did you mean batch_size\?\)"),
    ("profile: mini\n", "profile: ../../mini\n", r"^profile must be a safe name"),
    ("sigma: 0.07, train_limit", "sigma: '7e-2', train_limit", None),
])
def test_a_profile_file_is_checked_like_an_override(tmp_path, old, new, message):
    profile = _profile_copy(tmp_path, old, new)
    if message is None:  # a quoted number stays a string: refused when its task is planned
        cfg = resolve_run(profile, "invp")
        with pytest.raises(ConfigError, match=r"tasks\.knn\.sigma must be a number > 0, got '7e-2'"):
            plan_run(cfg, select_tasks(cfg, "knn"), tmp_path / "runs")
        return
    with pytest.raises(ConfigError, match=message):
        resolve_run(profile, "invp")


def test_a_methods_file_name_cannot_leave_the_methods_folder(tmp_path):
    profile = _profile_copy(tmp_path, "methods:\n  invp:", "methods: ../../../x\nunused:\n  invp:")
    with pytest.raises(ConfigError, match=r"methods must be a safe name .*got '\.\./\.\./\.\./x'"):
        resolve_run(profile, "invp")


def test_a_profile_task_that_does_not_exist_is_refused(tmp_path):
    profile = _profile_copy(tmp_path, "  knn: {dataset", "  knnn: {dataset")
    with pytest.raises(ConfigError, match=r"tasks\.knnn in profile 'mini' is not a task"):
        select_tasks(resolve_run(profile, "invp"), "all")


def test_report_and_sweep_names_stay_in_their_folders(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "rep"),
                 "--profile", "../escaped"]) == 2
    assert "error: profile must be a safe name" in capsys.readouterr().err
    assert not (tmp_path / "escaped.md").exists()
    assert main(["sweep", "--methods", "invp", "--tasks", "none", "--launcher", "local", "--dry-run",
                 "--sweeps", str(tmp_path / "sweeps"), "--results", str(tmp_path / "results"),
                 "--out", str(tmp_path / "runs"), "--name", "../escaped"]) == 2
    assert "--name must be a safe name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists()


def _stored_job(tmp_path: Path, config: dict, job_id: str = "j1", record_job_id: str | None = None) -> None:
    from report_support import BASE

    rec = replace(BASE, method_config=config["method"], profile="mini", dataset="fashion_mnist",
                  split="test", job_id=record_job_id or job_id)
    ResultStore(tmp_path / "results" / "mini").save({"job_id": job_id, "config": config}, [rec])


def _outside_log(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    run_dir.joinpath("log.jsonl").write_text(json.dumps({"epoch": 1, "loss": 1.0}) + "\n")


def _report(tmp_path: Path, capsys) -> tuple[int, str]:
    (tmp_path / "runs").mkdir(exist_ok=True)
    code = main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "reports"),
                 "--profile", "mini", "--runs", str(tmp_path / "runs"), "--no-paper"])
    return code, capsys.readouterr().err


def test_a_tampered_job_config_is_refused_naming_file_and_field(tmp_path, capsys):
    cfg = resolve_run("mini", "invp").to_dict()
    cfg["profile"] = "../outside"  # would make the report read tmp_path/outside/...
    pid = plan_run(resolve_run("mini", "invp"), [], tmp_path / "runs")[0].job_id
    _outside_log(tmp_path / "outside" / f"invp-{pid}")
    _stored_job(tmp_path, cfg)
    code, err = _report(tmp_path, capsys)
    assert code == 2
    assert f"{tmp_path / 'results' / 'mini' / 'j1.json'}: job.config.profile must be a safe name" in err
    assert not list((tmp_path / "reports").rglob("*"))  # the writability probe may make the folder


def test_a_tampered_record_job_id_is_refused_naming_file_and_field(tmp_path, capsys):
    cfg = resolve_run("mini", "invp")
    # the record points at a job file outside the results folder, whose config has a log
    write_json_atomic(tmp_path / "planted.json", {"job": {"job_id": "planted", "config": cfg.to_dict()}})
    _outside_log(Path(plan_run(cfg, [], tmp_path / "runs")[0].pretrain_dir))
    _stored_job(tmp_path, cfg.to_dict(), record_job_id="../../planted")
    code, err = _report(tmp_path, capsys)
    assert code == 2
    assert f"{tmp_path / 'results' / 'mini' / 'j1.json'}: records[0].job_id must be a safe name" in err


def test_a_tampered_skip_file_is_refused(tmp_path):
    store = ResultStore(tmp_path / "mini")
    write_json_atomic(store.root / "skipped" / "s1.json", {"job": {"job_id": "../../x"}, "reason": "r"})
    with pytest.raises(ConfigError, match=r"s1\.json: job\.job_id must be a safe name"):
        list(store.skips())


def test_a_tampered_sweep_state_is_refused(tmp_path):
    from benchmark.harness.sweep_state import SweepState

    write_json_atomic(tmp_path / "sweep.json", {
        "format": 1, "spec": {}, "code": {}, "submissions": [],
        "jobs": {"abc": {"profile": "../../x", "label": "l", "kind": "task", "pretrain_dir": "p"}}})
    with pytest.raises(ConfigError, match=r"sweep\.json: jobs\.abc\.profile must be a safe name"):
        SweepState.load(tmp_path)


@pytest.mark.parametrize("old, new, message", [
    ("  epochs: 20\n", "", r"pretrain is missing epochs; fix it in .*mini\.yaml"),
    ("  head: linear", "  # head", r"model is missing head"),
])
def test_a_profile_that_lacks_a_key_names_it(tmp_path, old, new, message):
    """A custom profile without a key the engine reads is refused at resolution, not with a
    KeyError deep in the engine."""
    profile = _profile_copy(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message):
        resolve_run(profile, "invp")
