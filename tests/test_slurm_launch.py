"""The submitit launcher on a real Slurm cluster and on submitit's local and debug executors:
records, pretrain -> eval ordering, failure + status + re-submission, timeout requeue."""
from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from slurm_fixtures import cluster, ddp_probe, fail_marker, no_post_mortem, slurm_cluster, tiny_runner  # noqa: F401

from benchmark.core.config import ConfigError, resolve
from benchmark.harness.jobs import Paths
from benchmark.harness.plan import plan_run
from benchmark.harness.status import ACTIVE, sweep_status
from benchmark.harness.submitit_launcher import CLUSTERS, SubmititLauncher, await_outcome
from benchmark.harness.sweep import submit_sweep
from benchmark.harness.sweep_state import SweepState

FLAGS = {"cpus_per_task": 1, "mem_gb": 0.5, "time_min": 5}
# Slurm where a cluster is reachable (or root can start one), else submitit's local executor;
# the in-process debug executor always.
CLUSTER_PARAMS = [pytest.param("slurm-or-local", marks=pytest.mark.slurm), "debug"]


def plan(tmp_path: Path, methods=("invp", "insdis"), seeds=(0, 1), epochs: int = 3,
         sanity: bool = False):
    jobs = {}
    for method in methods:
        for seed in seeds:
            cfg = resolve("mini", method, [f"pretrain.epochs={epochs}"], seed)
            for job in plan_run(cfg, ["knn"], tmp_path / "runs", sanity=sanity):
                jobs.setdefault(job.job_id, job)
    return list(jobs.values())


def make_paths(tmp_path: Path) -> Paths:
    return Paths(results=tmp_path / "results", runs=tmp_path / "runs", data_root=tmp_path / "data")


def settle(state: SweepState, paths: Paths, timeout_s: float = 150):
    """Poll ``status`` until no job is pending or running; the final rows."""
    deadline = time.time() + timeout_s
    while True:
        rows = sweep_status(state, paths.results)
        if not any(r.state in ACTIVE for r in rows) or time.time() > deadline:
            return {r.job_id: r for r in rows}
        time.sleep(1)


def run(state, jobs, paths, launcher):
    """Submit; under Slurm without waiting (status is polled), elsewhere to the end."""
    submit_sweep(state, jobs, paths, launcher, FLAGS, wait=launcher != "slurm", runner=tiny_runner)
    return settle(state, paths)


@pytest.mark.parametrize("cluster", CLUSTER_PARAMS, indirect=True)
def test_sweep_writes_every_record_and_evals_wait_for_pretraining(cluster, tmp_path):
    paths, jobs = make_paths(tmp_path), plan(tmp_path)
    assert len(jobs) == 8  # 2 methods x 2 seeds: a pretraining and its evaluation each
    state = SweepState(tmp_path / "sweep" / "sweep.json", {}, {})
    submit_sweep(state, jobs, paths, cluster, FLAGS, wait=cluster != "slurm", runner=tiny_runner)
    if cluster == "slurm":
        ids = state.submissions[-1]["scheduler_ids"]
        evals = [j for j in jobs if j.depends_on]
        dependency = subprocess.run(["squeue", "-h", "-o", "%E", "-j", ids[evals[0].job_id]],
                                    capture_output=True, text=True).stdout
        finished = not dependency.strip()  # squeue forgets the dependency once satisfied
        assert finished or f"afterok:{ids[evals[0].depends_on[0]]}" in dependency
        submit_sweep(state, jobs, paths, cluster, FLAGS, wait=False, runner=tiny_runner)
        assert state.submissions[-1]["scheduler_ids"] == {}  # queued/running: not resubmitted
    rows = settle(state, paths)
    assert {r.state for r in rows.values()} == {"done"}, rows
    store = paths.store("mini")
    for job in (j for j in jobs if j.kind == "task"):
        record = store.load_job(job.job_id)["records"][0]
        if job.encoder == "pretrained":
            encoder = torch.load(Path(job.pretrain_dir) / "encoder.pt")["backbone"]["weight"]
            assert record["value"] == pytest.approx(float(encoder.abs().sum()))
            assert record["extra"]["started"] >= record["extra"]["encoder_mtime"]


@pytest.mark.parametrize("cluster", CLUSTER_PARAMS, indirect=True)
def test_failed_job_is_reported_and_resubmission_runs_only_what_failed(cluster, tmp_path):
    paths, jobs = make_paths(tmp_path), plan(tmp_path, methods=("invp",), epochs=2)
    broken = next(j for j in jobs if j.kind == "pretrain" and j.config["seed"] == 1)
    blocked = next(j for j in jobs if j.depends_on == (broken.job_id,))
    fail_marker(paths, broken.job_id).parent.mkdir(parents=True, exist_ok=True)
    fail_marker(paths, broken.job_id).touch()
    state = SweepState(tmp_path / "sweep" / "sweep.json", {}, {})
    rows = run(state, jobs, paths, cluster)
    assert rows[broken.job_id].state == "failed"
    assert "injected failure" in rows[broken.job_id].detail
    assert rows[blocked.job_id].state == "failed"
    assert {r.state for k, r in rows.items() if k not in (broken.job_id, blocked.job_id)} == {"done"}

    fail_marker(paths, broken.job_id).unlink()
    rows = run(state, jobs, paths, cluster)
    resubmitted = set(state.submissions[-1]["scheduler_ids"])
    assert resubmitted == {broken.job_id, blocked.job_id}
    assert {r.state for r in rows.values()} == {"done"}


def test_submitit_local_executor_runs_the_pretraining_before_its_evaluation(tmp_path):
    paths, jobs = make_paths(tmp_path), plan(tmp_path, methods=("invp",), seeds=(0,))
    launcher = SubmititLauncher("local", folder=tmp_path / "submitit", flags=FLAGS,
                                runner=tiny_runner)
    launcher.submit(jobs, paths)
    assert [o.status for o in launcher.wait()] == ["done", "done"]
    record = paths.store("mini").load_job(jobs[1].job_id)["records"][0]
    assert record["extra"]["started"] >= record["extra"]["encoder_mtime"]
    launcher.submit(jobs, paths)
    assert [o.status for o in launcher.wait()] == ["cached", "cached"]


@pytest.mark.parametrize("cluster", CLUSTER_PARAMS[:1], indirect=True)
def test_a_multi_process_pretraining_forms_one_torch_distributed_world(cluster, tmp_path):
    paths = make_paths(tmp_path)
    job = plan(tmp_path, methods=("invp",), seeds=(0,))[0]
    launcher = SubmititLauncher(CLUSTERS[cluster], folder=tmp_path / "submitit",
                                flags={**FLAGS, "tasks_per_node": 2}, runner=ddp_probe)
    assert await_outcome(launcher.submit([job], paths)[0]).message == "rank 0"
    seen = [json.loads((Path(job.pretrain_dir) / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [s["rank"] for s in seen] == [0, 1] and {s["world"] for s in seen} == {2}
    assert {s["mean"] for s in seen} == {0.5}  # the all-reduce went across both processes
    assert seen[0]["master"] == seen[1]["master"]
    assert 20000 <= int(seen[0]["master"].split(":")[1]) < 32768  # below the ephemeral ports


@pytest.mark.slurm
@pytest.mark.slow
def test_timed_out_pretraining_requeues_and_ends_with_uninterrupted_weights(slurm_cluster, tmp_path):
    from benchmark.data import get_dataset, resolve_data_root
    from benchmark.engine.checkpoint import list_checkpoints
    from benchmark.engine.pretrain import pretrain

    data_root = resolve_data_root().resolve()
    if get_dataset("fashion_mnist").check(data_root):
        pytest.skip(f"Fashion-MNIST is not prepared under {data_root} (make data)")
    paths = Paths(results=tmp_path / "results", runs=tmp_path / "runs", data_root=data_root)
    cfg = resolve("mini", "insdis", ["pretrain.epochs=6", "data.train_subset=384",
                                     "pretrain.batch_size=64", "pretrain.monitor.holdout=200",
                                     "threads=1"], 0)
    job = plan_run(cfg, [], tmp_path / "runs")[0]
    sub = SubmititLauncher("slurm", folder=tmp_path / "submitit", flags=FLAGS).submit([job], paths)[0]
    checkpoints = Path(job.pretrain_dir) / "checkpoints"
    deadline = time.time() + 120
    while not list_checkpoints(checkpoints):  # the first epoch is done: interrupt mid-run
        assert time.time() < deadline and not sub.handle.done(), "no checkpoint before the end"
        time.sleep(0.2)
    sub.handle._interrupt(timeout=True)  # SIGUSR2, as Slurm sends it before the time limit
    assert await_outcome(sub).status == "done"
    deadline = time.time() + 60
    while True:  # accounting records the job's end a moment after its result appears
        states = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j",
                                 str(sub.handle.job_id)], capture_output=True, text=True).stdout.split()
        if states[-1:] == ["COMPLETED"] or time.time() > deadline:
            break
        time.sleep(1)
    assert states == ["REQUEUED", "COMPLETED"], states

    reference = pretrain(cfg, tmp_path / "reference", data_root=data_root)
    resumed = torch.load(Path(job.pretrain_dir) / "encoder.pt", weights_only=True)["backbone"]
    uninterrupted = torch.load(reference, weights_only=True)["backbone"]
    assert resumed.keys() == uninterrupted.keys()
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name


@pytest.mark.slurm
def test_slurm_launch_checks_partition_and_resources_before_submitting(slurm_cluster, tmp_path):
    from benchmark.harness.slurm_check import LaunchError

    paths, jobs = make_paths(tmp_path), plan(tmp_path, methods=("invp",), seeds=(0,))
    for flags, message in (({"partition": "nope"}, "unknown partition 'nope'"),
                           ({"cpus_per_task": 512}, "cannot run a job with")):
        launcher = SubmititLauncher("slurm", folder=tmp_path / "submitit", flags={**FLAGS, **flags},
                                    runner=tiny_runner)
        with pytest.raises(LaunchError, match=message):
            launcher.submit(jobs, paths)
    assert not (tmp_path / "submitit").exists()


def test_slurm_launcher_without_slurm_on_path_fails_before_submitting(tmp_path, monkeypatch):
    from benchmark.harness.slurm_check import LaunchError

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    paths, jobs = make_paths(tmp_path), plan(tmp_path, methods=("invp",), seeds=(0,))
    launcher = SubmititLauncher("slurm", folder=tmp_path / "submitit", runner=tiny_runner)
    with pytest.raises(LaunchError, match="needs Slurm's commands on PATH; missing: sbatch"):
        launcher.submit(jobs, paths)
    assert not (tmp_path / "submitit").exists()
    assert shutil.which("sbatch") is None


def batch_script(job, monkeypatch, tmp_path: Path, flags=None, dependency="4242") -> str:
    """The sbatch script the launcher would submit for ``job``, written by submitit's own
    SlurmExecutor (its ``srun`` probe stubbed, so no cluster is needed)."""
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = SubmititLauncher("slurm", flags=flags)._executor(tmp_path / "logs", job, dependency)
    return executor._executor._make_submission_file_text("python -u -m submitit.core._submit x", "u")


def script_options(script: str) -> tuple[list[str], list[str]]:
    """(the ``#SBATCH`` options, the command lines) of a batch script; fails unless every
    ``#SBATCH`` line comes before the first command and holds exactly one shell word."""
    lines = script.splitlines()
    commands = [i for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
    sbatch = [i for i, line in enumerate(lines) if line.startswith("#SBATCH ")]
    assert sbatch and max(sbatch) < min(commands), script
    options = []
    for i in sbatch:
        words = shlex.split(lines[i][len("#SBATCH "):])  # an unclosed quote raises here
        assert len(words) == 1, lines[i]
        options.append(words[0])
    return options, [lines[i] for i in commands]


def test_batch_script_holds_one_sbatch_line_per_option_before_the_command(tmp_path, monkeypatch):
    job = plan(tmp_path, methods=("invp",), seeds=(0,))[0]
    flags = {"partition": "gpu a", "account": "lab's", "qos": "high", "constraint": "a100|h100",
             "sbatch": {"exclusive": True, "comment": "paper run; $(id) `id` \"q\"",
                        "mail-type": "END,FAIL"}}
    options, commands = script_options(batch_script(job, monkeypatch, tmp_path, flags))
    expected = {"--partition=gpu a", "--account=lab's", "--qos=high", "--constraint=a100|h100",
                "--exclusive", "--comment=paper run; $(id) `id` \"q\"", "--mail-type=END,FAIL",
                "--dependency=afterok:4242", "--job-name=bench-pretrain-mini",
                "--kill-on-invalid-dep=yes"}
    assert expected <= set(options)
    assert len(options) == len(set(options))
    assert commands[0] == "export SUBMITIT_EXECUTOR=slurm" and len(commands) == 2
    assert commands[1].startswith("srun ") and commands[1].endswith("submitit.core._submit x")


INJECTIONS = {  # id -> (resource flags, --set overrides, the error it must raise)
    "partition-newline": ({"partition": "gpu\nid"}, [], r"launcher\.partition \(--partition\).*'\\n'"),
    "account-cr": ({"account": "lab\rid"}, [], r"launcher\.account \(--account\).*'\\r'"),
    "qos-nul": ({"qos": "high\x00"}, [], r"launcher\.qos \(--qos\).*'\\x00'"),
    "constraint-line-separator": ({"constraint": "a100\u2028id"}, [], r"launcher\.constraint"),
    "sbatch-value": ({"sbatch": {"comment": "x\nid"}}, [], r"sbatch option comment \(launcher"),
    "sbatch-key-newline": ({"sbatch": {"x\nid": True}}, [], r"option name 'x\\nid'.*lowercase"),
    "sbatch-key-uppercase": ({"sbatch": {"Exclusive": True}}, [], r"option name 'Exclusive'"),
    "profile-sbatch-value": ({}, ['launcher.sbatch={comment: "x\\nid"}'], r"sbatch option comment"),
    "profile-pretrain-block": ({}, ['launcher.pretrain={qos: "q\\nid"}'], r"launcher\.qos"),
    "profile-name": ({}, ['profile="mini\\nid"'], r"profile must be a safe name"),
}


@pytest.mark.parametrize("flags, overrides, message", INJECTIONS.values(), ids=INJECTIONS)
def test_a_line_break_in_any_batch_script_value_is_refused_naming_its_key(
        tmp_path, monkeypatch, flags, overrides, message):
    with pytest.raises(ConfigError, match=message):  # at config resolution or at the script
        job = plan_run(resolve("mini", "invp", overrides, 0), ["knn"], tmp_path / "runs")[0]
        batch_script(job, monkeypatch, tmp_path, flags)


def test_bad_script_values_stop_a_submission_before_any_job_is_submitted(tmp_path):
    paths, jobs = make_paths(tmp_path), plan(tmp_path, methods=("invp",), seeds=(0,))
    for folder, flags, message in ((tmp_path / "submitit", {"qos": "a\nb"}, "launcher.qos"),
                                   (tmp_path / "sub\nmitit", {}, "the log folder")):
        launcher = SubmititLauncher("debug", folder=folder, flags=flags, runner=tiny_runner)
        with pytest.raises(ConfigError, match=message):
            launcher.submit(jobs, paths)
        assert not folder.exists()
    assert not (tmp_path / "runs").exists()
