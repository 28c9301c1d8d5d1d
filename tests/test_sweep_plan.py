"""Sweep planning without a cluster: grid parsing, job ids and de-duplication, resources,
dry-run output, the state file and its code-version check, status of unsubmitted jobs."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from payload_support import Payload
from test_store import make_record

from benchmark.core import provenance
from benchmark.core.config import ConfigError, resolve
from benchmark.core.store import ResultStore
from benchmark.harness.cli import main
from benchmark.harness.jobs import Outcome, Paths
from benchmark.harness.plan import Job
from benchmark.harness.resources import resources_for
from benchmark.harness.status import format_status, resolve_sweep, sweep_status
from benchmark.harness.submitit_launcher import CheckpointableJob, JobFailed, run_job_checked
from benchmark.harness.sweep import SweepSpec, expand, open_state, parse_grid, split_values
from benchmark.harness.sweep_state import SweepState


def spec(**changes) -> SweepSpec:
    base = dict(profile="mini", methods=("invp", "insdis"), tasks="knn", seeds=(0,), grid=())
    return SweepSpec(**{**base, **changes})


def test_values_split_on_commas_outside_brackets():
    assert split_values("0.1,0.2") == ["0.1", "0.2"]
    assert split_values("[1,2],[3],{a: 1, b: 2}") == ["[1,2]", "[3]", "{a: 1, b: 2}"]


def test_grid_axes_and_points_are_the_cartesian_product():
    grid = parse_grid(["method.temperature=0.1,0.2", "pretrain.epochs=1,2,3"])
    points = spec(grid=tuple((k, tuple(v)) for k, v in grid)).points()
    assert len(points) == 6
    assert ["method.temperature=0.2", "pretrain.epochs=3"] in points


@pytest.mark.parametrize("items, message", [
    (["pretrain.epochs"], "expected key=v1"),
    (["a=1", "a=2"], "given twice"),
])
def test_malformed_grid_is_rejected_with_the_fix(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_expand_plans_shared_jobs_once_and_dependencies_first(tmp_path):
    jobs = expand(spec(seeds=(0, 1)), tmp_path)
    ids = [j.job_id for j in jobs]
    assert len(ids) == len(set(ids)) == 4 + 4 + 4  # pretrainings, pretrained evals, sanity evals
    position = {job_id: i for i, job_id in enumerate(ids)}
    for job in jobs:
        assert all(position[d] < position[job.job_id] for d in job.depends_on)
    assert [j.job_id for j in expand(spec(seeds=(0, 1)), tmp_path)] == ids  # stable ids


def test_a_grid_axis_on_pretraining_changes_only_the_pretrained_jobs(tmp_path):
    one = {j.job_id for j in expand(spec(methods=("invp",)), tmp_path)}
    two = {j.job_id for j in expand(spec(methods=("invp",),
                                         grid=(("pretrain.epochs", ("1", "2")),)), tmp_path)}
    assert len(two) == 2 + 2 + 2
    assert len(one & two) == 2  # the two sanity evals do not depend on pretraining


def test_unknown_method_names_the_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match="unknown method.*valid methods: .*invp"):
        expand(spec(methods=("invp", "simclr")), tmp_path)


def test_the_sweep_name_follows_the_spec():
    assert spec().name == spec().name and spec().name.startswith("mini-")
    assert spec(seeds=(0, 1)).name != spec().name


def mini_launcher(**values):
    """The mini profile's launcher block (every resource key) with ``values`` set."""
    block = {k: v for k, v in resolve("mini", "invp").tree["launcher"].items() if k != "name"}
    return {**block, **values}


def test_resources_merge_profile_kind_block_and_flags():
    section = mini_launcher(partition="gpu", cpus_per_task=4, gpus_per_node=8, time_min=100,
                            nodes=2, sbatch={"comment": "x"}, task={"qos": "eval"},
                            task_kinds={"cached_features": {"gpus_per_node": 1, "cpus_per_task": 3,
                                                            "mem_gb": 8, "time_min": 10}})
    pre = resources_for(section, "pretrain", {"time_min": 50, "partition": None})
    task = resources_for(section, "task", {"time_min": 50, "account": "lab"}, task="knn",
                         task_kind="cached_features")
    assert (pre.gpus_per_node, pre.time_min, pre.partition, pre.nodes) == (8, 50, "gpu", 2)
    # a task job: its kind's size (not the pretraining's, nor the size flags), one node, the
    # placing keys and flags of every job
    assert (task.gpus_per_node, task.cpus_per_task, task.mem_gb, task.time_min, task.nodes) == \
        (1, 3, 8, 10, 1)
    assert (task.partition, task.qos, task.account) == ("gpu", "eval", "lab")
    params = pre.executor_parameters()
    assert params["tasks_per_node"] == 8 and params["slurm_partition"] == "gpu"
    assert params["slurm_additional_parameters"] == {"kill_on_invalid_dep": "yes", "comment": "x"}
    assert "--gpus-per-node=8" in pre.sbatch_args() and "--comment=x" in pre.sbatch_args()
    assert "--ntasks-per-node=1" in task.sbatch_args(1)


@pytest.mark.parametrize("section, message", [
    ({"gpu": 1}, r"^launcher: unknown setting\(s\) \['gpu'\]; valid: .*gpus_per_node"),
    ({"gpus_per_node": -1}, "gpus_per_node must be an integer >= 0"),
    ({"time_min": 0}, "time_min must be a positive integer"),
    ({"pretrain": {"mem": 3}}, r"^launcher\.pretrain: unknown setting\(s\) \['mem'\] \(did you mean mem_gb\?\)"),
    ({"pretrain": {"time_min": "1h"}}, r"^launcher\.pretrain\.time_min must be a positive integer, got '1h'"),
    ({"sbatch": "exclusive"}, "launcher.sbatch must be a mapping"),
    ({"pretrain": {"sbatch": ["exclusive"]}}, "launcher.pretrain.sbatch must be a mapping"),
    ({"sbatch": {"comment": ["a", "b"]}}, "sbatch option comment .* must be a string, number"),
    ({"sbatch": {"exclusive": False}}, "sbatch option exclusive .* is false: .*remove exclusive"),
])
def test_bad_resources_name_the_key(section, message):
    with pytest.raises(ConfigError, match=message):
        resources_for(mini_launcher(**section), "pretrain")


@pytest.mark.parametrize("key", ["time_min", "tasks_per_node"])
def test_a_launcher_block_lacking_a_key_is_refused_naming_it(key):
    section = mini_launcher()
    del section[key]
    with pytest.raises(ConfigError, match=f"^launcher is missing {key}; add it to the profile's launcher block"):
        resources_for(section, "pretrain")


def test_a_failed_outcome_becomes_a_job_failure(monkeypatch, tmp_path):
    job = expand(spec(methods=("invp",), tasks="none"), tmp_path)[0]
    monkeypatch.setattr("benchmark.harness.submitit_launcher.run_job", lambda *a, **k: Outcome(
        job.job_id, job.label, "failed", "loss is NaN"))
    with pytest.raises(JobFailed, match="loss is NaN"):
        run_job_checked(job, Paths(tmp_path, tmp_path, tmp_path))


def test_checkpoint_requeues_the_same_job_resuming_not_forcing(tmp_path):
    job = expand(spec(methods=("invp",), tasks="none"), tmp_path)[0]
    delayed = CheckpointableJob(job, Paths(tmp_path, tmp_path, tmp_path), force=True,
                                     resume="never").checkpoint()
    requeued = delayed.function
    assert (requeued.job, requeued.force, requeued.resume) == (job, False, "auto")


def test_dry_run_prints_jobs_dependencies_resources_and_what_is_done(tmp_path, capsys):
    args = ["sweep", "--methods", "invp", "--tasks", "knn", "--seeds", "0", "--launcher", "slurm",
            "--partition", "gpu", "--dry-run", "--out", str(tmp_path / "runs"),
            "--results", str(tmp_path / "results"), "--sweeps", str(tmp_path / "sweeps")]
    assert main(args) == 0
    out = capsys.readouterr().out
    pretrain, evaluation = (line for line in out.splitlines() if "pretrain invp" in line
                            or "knn [invp]" in line)
    pid = pretrain.split()[0]
    assert evaluation.split()[3] == pid  # the eval waits for its pretraining
    assert "partition=gpu" in out and "4 jobs: 0 done, 4 to submit" in out
    # a stored sanity-encoder result counts as done (a pretrained one needs its encoder too)
    sanity = next(line for line in out.splitlines() if "knn [random]" in line)
    (tmp_path / "results" / "mini").mkdir(parents=True)
    (tmp_path / "results" / "mini" / f"{sanity.split()[0]}.json").write_text(
        json.dumps({"job": {}, "records": []}))
    assert main(args) == 0
    assert "4 jobs: 1 done, 3 to submit" in capsys.readouterr().out
    assert not (tmp_path / "sweeps").exists()  # a dry run submits and records nothing


def test_a_sweep_from_another_code_version_warns_and_shows_the_difference(tmp_path, capsys):
    folder = tmp_path / "sweeps" / spec().name
    state = open_state(folder, spec())
    state.code = {**state.code, "git_commit": "0123abc", "versions": {"torch": "1.0"}}
    state.save()
    open_state(folder, spec())
    err = capsys.readouterr().err
    assert "another code version" in err and "git_commit: 0123abc ->" in err
    assert "torch: 1.0 ->" in err


def test_status_of_jobs_never_submitted_and_of_unknown_sweeps(tmp_path):
    jobs = expand(spec(methods=("invp",)), tmp_path / "runs")
    state = SweepState(tmp_path / "sweeps" / "s1" / "sweep.json", {}, {})
    state.plan(jobs)
    state.save()
    rows = sweep_status(state, tmp_path / "results")
    assert {r.state for r in rows} == {"missing"}
    assert format_status(rows).splitlines()[-1] == f"{len(jobs)} missing"
    assert resolve_sweep(None, tmp_path / "sweeps") == state.path.parent
    with pytest.raises(FileNotFoundError, match="sweeps under .*: s1"):
        resolve_sweep("s2", tmp_path / "sweeps")


def test_status_counts_a_task_done_only_for_the_encoder_it_was_computed_from(tmp_path):
    jobs = expand(spec(methods=("invp",)), tmp_path / "runs")
    state = SweepState(tmp_path / "sweeps" / "s1" / "sweep.json", {}, {})
    state.plan(jobs)
    task = next(j for j in jobs if j.kind == "task" and j.encoder == "pretrained")
    encoder = Path(task.pretrain_dir) / "encoder.pt"
    encoder.parent.mkdir(parents=True)
    encoder.write_bytes(b"weights A")
    store = ResultStore(tmp_path / "results" / task.config["profile"])
    store.save({"job_id": task.job_id},
               [make_record(job_id=task.job_id, checkpoint_hash=provenance.file_hash(encoder))])

    def task_state() -> str:
        return next(r.state for r in sweep_status(state, tmp_path / "results") if r.job_id == task.job_id)

    assert task_state() == "done"
    encoder.write_bytes(b"weights B, retrained")
    assert task_state() == "missing"


def test_an_unchanged_encoder_file_is_read_once_and_a_changed_one_again(tmp_path, monkeypatch):
    from benchmark.core.safe_load import LoadError
    from benchmark.harness import completion

    reads = []

    def read(path: Path) -> None:  # stands in for loading the checkpoint: b"bad" does not load
        reads.append(path)
        if path.read_bytes() == b"bad":
            raise LoadError(path, "not an encoder", "train it again")

    monkeypatch.setattr(completion, "read_encoder_checkpoint", read)
    encoder = tmp_path / "run" / "encoder.pt"
    encoder.parent.mkdir()
    encoder.write_bytes(b"an encoder")
    assert completion.encoder_loads(encoder) and completion.encoder_loads(encoder)
    assert len(reads) == 1  # status asks for every job: one read per unchanged file
    encoder.write_bytes(b"bad")
    assert not completion.encoder_loads(encoder) and len(reads) == 2
    assert not completion.encoder_loads(tmp_path / "absent.pt") and len(reads) == 2


def test_local_sweep_records_outcomes_that_status_reads(tmp_path, monkeypatch, capsys):
    def fake_run_job(job: Job, paths, force=False, resume="auto"):
        status = "failed" if job.kind == "pretrain" else "done"
        return Outcome(job.job_id, job.label, status, "boom" if status == "failed" else "")

    monkeypatch.setattr("benchmark.harness.launch.run_job", fake_run_job)
    args = ["sweep", "--methods", "invp", "--tasks", "knn", "--launcher", "local", "--no-sanity",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--sweeps", str(tmp_path / "sweeps"), "--name", "s"]
    assert main(args) == 1
    assert main(["status", "s", "--sweeps", str(tmp_path / "sweeps"),
                 "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "failed   " in out and "boom" in out and "dependency" in out


def test_a_stop_request_ends_a_local_sweep_at_once_with_the_resume_exit_code(tmp_path, monkeypatch, capsys):
    from benchmark.core.errors import EXIT_PREEMPTED, Preempted

    ran = []

    def preempted_pretrain(job: Job, paths, force=False, resume="auto"):
        ran.append(job.label)
        raise Preempted("stopped at epoch 1, step 3; checkpoint saved")

    monkeypatch.setattr("benchmark.harness.jobs.run_pretrain_job", preempted_pretrain)
    monkeypatch.setattr("benchmark.harness.jobs.run_task_job", lambda *a, **k: ran.append("task"))
    args = ["sweep", "--methods", "invp,insdis", "--tasks", "knn", "--launcher", "local", "--no-sanity",
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--sweeps", str(tmp_path / "sweeps"), "--name", "s"]
    assert main(args) == EXIT_PREEMPTED
    assert len(ran) == 1, f"jobs ran after the stop request: {ran}"
    assert "Run the same command again to resume" in capsys.readouterr().err


def test_sweep_cli_rejects_bad_launchers_and_missing_slurm_before_writing_state(
        tmp_path, monkeypatch, capsys):
    base = ["sweep", "--methods", "invp", "--tasks", "knn", "--sweeps", str(tmp_path / "sweeps"),
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    assert main([*base, "--launcher", "pbs"]) == 2
    assert "unknown launcher 'pbs'" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main([*base, "--launcher", "slurm"]) == 2
    assert "missing: sbatch, sinfo, sacct, scancel" in capsys.readouterr().err
    assert not list(tmp_path.glob("sweeps/*/sweep.json"))


@pytest.mark.parametrize("folder, scheduler_id, refusal", [
    ("{outside}/%j", "123", "lies outside the sweep folder"),
    ("{sweep}/logs/000/%j", "../../../outside/123", "is no Slurm job id"),
])
def test_status_reads_no_result_pickle_outside_the_sweep_folder(tmp_path, monkeypatch, folder, scheduler_id,
                                                               refusal):
    from submitit.core.utils import JobPaths

    jobs = expand(spec(methods=("invp",)), tmp_path / "runs")
    sweep = tmp_path / "sweeps" / "s1"
    state = SweepState(sweep / "sweep.json", {}, {})
    state.plan(jobs)
    folder = folder.format(outside=tmp_path / "outside", sweep=sweep)
    result = JobPaths(folder, job_id=scheduler_id).result_pickle  # where submitit would read it
    assert not result.resolve().is_relative_to(sweep)
    result.parent.mkdir(parents=True)
    marker = tmp_path / "MARKER"
    result.write_bytes(pickle.dumps(("success", Payload(marker))))
    state.record("slurm", "slurm", folder, {jobs[0].job_id: scheduler_id}, {})
    monkeypatch.setattr("benchmark.harness.status.scheduler_state", lambda handle: "COMPLETED")
    row = next(r for r in sweep_status(state, tmp_path / "results") if r.job_id == jobs[0].job_id)
    assert not marker.exists(), "status unpickled a file from outside the sweep folder"
    assert row.state == "unknown" and refusal in row.detail
