"""One launcher protocol (submit, then wait), one done check, and `run` as a one-point sweep that
`status` sees; all without a cluster (submitit's local and debug executors stand in)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from slurm_fixtures import no_post_mortem, tiny_runner  # noqa: F401

from benchmark.core.config import resolve
from benchmark.harness.cli import main
from benchmark.harness.completion import is_done
from benchmark.harness.jobs import Paths
from benchmark.harness.launch import LAUNCHERS, build_launcher
from benchmark.harness.launch_protocol import Launcher, LaunchSettings
from benchmark.harness.plan import plan_run
from benchmark.harness.status import sweep_status
from benchmark.harness.sweep import describe_plan
from benchmark.harness.sweep_state import SweepState

FLAGS = {"cpus_per_task": 1, "mem_gb": 0.5, "time_min": 5}


def make_paths(tmp_path: Path) -> Paths:
    return Paths(results=tmp_path / "results", runs=tmp_path / "runs", data_root=tmp_path / "data")


def pretrain_and_eval(tmp_path: Path):
    """An invp pretraining and its kNN evaluation (no sanity rows)."""
    return plan_run(resolve("mini", "invp", ["pretrain.epochs=2"], 0), ["knn"], tmp_path / "runs",
                    sanity=False)


@pytest.mark.parametrize("name", list(LAUNCHERS.names()))
def test_every_launcher_implements_submit_and_wait(name, tmp_path):
    launcher = build_launcher(name, LaunchSettings(folder=tmp_path / "logs", flags=FLAGS))
    assert isinstance(launcher, Launcher)
    assert launcher.wait() == []  # nothing submitted yet: nothing to wait for


@pytest.mark.parametrize("name", ["local", "submitit-local", "debug"])
def test_every_launcher_runs_a_plan_through_submit_then_wait(name, tmp_path, monkeypatch):
    monkeypatch.setattr("benchmark.harness.launch.run_job", tiny_runner)  # what `local` runs
    told = []
    paths, jobs = make_paths(tmp_path), pretrain_and_eval(tmp_path)
    launcher = build_launcher(name, LaunchSettings(on_outcome=told.append,
                                                   folder=tmp_path / "logs", flags=FLAGS,
                                                   runner=tiny_runner))
    assert [s.job for s in launcher.submit(jobs, paths)] == jobs
    outcomes = launcher.wait()
    assert [o.status for o in outcomes] == ["done", "done"] and told == outcomes
    record = paths.store("mini").load_job(jobs[1].job_id)["records"][0]
    assert record["extra"]["started"] >= record["extra"]["encoder_mtime"]  # the eval came second


def test_the_local_launcher_leaves_jobs_of_an_earlier_submission_to_it(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr("benchmark.harness.launch.run_job", lambda job, *a, **k: ran.append(job))
    jobs = pretrain_and_eval(tmp_path)
    launcher = build_launcher("local")
    launcher.submit(jobs, make_paths(tmp_path), running={jobs[0].job_id: "4242"})
    outcomes = launcher.wait()
    assert [o.status for o in outcomes] == ["pending", "pending"] and ran == []
    assert f"dependency {jobs[0].job_id} is queued or running" in outcomes[1].message


def write_encoder(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if content == "missing":
        return
    torch.save({"backbone": {"weight": torch.ones(4, 3)}, "config": {"seed": 0}}
               if content != "foreign" else torch.ones(3), path)
    if content == "truncated":  # e.g. a copy or a save cut short
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


ENCODERS = {"loads": True, "truncated": False, "foreign": False, "missing": False}


@pytest.mark.parametrize("content, done", ENCODERS.items(), ids=ENCODERS)
def test_status_the_dry_run_and_every_launcher_share_one_done_check(content, done, tmp_path):
    paths, jobs = make_paths(tmp_path), pretrain_and_eval(tmp_path)
    pretrain = jobs[0]
    encoder = Path(pretrain.pretrain_dir) / "encoder.pt"
    write_encoder(encoder, content)
    assert is_done(pretrain, paths.store("mini")) is done

    state = SweepState(tmp_path / "sweeps" / "s" / "sweep.json", {}, {})
    state.plan(jobs)
    assert sweep_status(state, paths.results)[0].state == ("done" if done else "missing")
    dry_run_state = describe_plan(jobs, paths, "debug", FLAGS, force=False).splitlines()[1].split()[2]
    assert dry_run_state == ("done" if done else "submit")

    debug = build_launcher("debug", LaunchSettings(folder=tmp_path / "logs", runner=tiny_runner))
    submitted = debug.submit([pretrain], paths)[0]
    assert (submitted.outcome is not None and submitted.outcome.status == "cached") is done
    assert (submitted.handle is not None) is not done
    if content != "missing":  # (a missing encoder would be pretrained for real)
        local = build_launcher("local")
        local.submit([pretrain], paths)
        outcome = local.wait()[0]
        assert outcome.status == ("cached" if done else "failed")
        assert done or str(encoder) in outcome.message


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--method", "invp", "--tasks", "knn", "--no-report", "--set", "pretrain.epochs=2",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--sweeps", str(tmp_path / "sweeps"), *extra]


def status_lines(tmp_path: Path, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["status", "--sweeps", str(tmp_path / "sweeps"),
                 "--results", str(tmp_path / "results")]) == 0
    return capsys.readouterr().out.splitlines()


def test_run_then_status_shows_every_job_of_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("benchmark.harness.launch.run_job", tiny_runner)
    assert main(run_args(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("run invp on profile mini (config ") and "): 4 jobs\n" in out
    assert out.count("[   done]") == 4
    jobs = plan_run(resolve("mini", "invp", ["pretrain.epochs=2"]), ["knn"], tmp_path / "runs")
    lines = status_lines(tmp_path, capsys)
    assert lines[-1] == "4 done"
    for job in jobs:
        assert any(line.startswith(f"done     {job.job_id}") and job.label in line for line in lines)

    encoder = Path(jobs[0].pretrain_dir) / "encoder.pt"
    encoder.write_bytes(encoder.read_bytes()[:100])  # the run reported it done; now it is cut short
    lines = status_lines(tmp_path, capsys)
    pretrain = next(i for i, line in enumerate(lines) if jobs[0].job_id in line)
    assert lines[pretrain].startswith("missing ") and "does not load" in lines[pretrain + 1]
    assert lines[-1] == "2 done, 2 missing"  # and the evaluation of that encoder is outdated


def test_a_local_run_records_each_outcome_as_it_comes(tmp_path, monkeypatch, capsys):
    seen = []

    def runner(job, paths, force=False, resume="auto"):
        state = json.loads(next((tmp_path / "sweeps").glob("*/sweep.json")).read_text())
        seen.append(sorted(state["submissions"][-1]["outcomes"]))  # what `status` could read now
        return tiny_runner(job, paths, force, resume)

    monkeypatch.setattr("benchmark.harness.launch.run_job", runner)
    assert main(run_args(tmp_path, "--no-sanity")) == 0
    planned = json.loads(next((tmp_path / "sweeps").glob("*/sweep.json")).read_text())["jobs"]
    (pretraining,) = [job_id for job_id, entry in planned.items() if entry["kind"] == "pretrain"]
    assert seen == [[], [pretraining]]  # the pretraining's outcome, before its evaluation
