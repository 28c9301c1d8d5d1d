"""Every task job sized on its own (its resource kind's launcher block, capped at the processes
its task runs), run within that request, checkpointed and requeued like a pretraining; and
`--tasks all` = every registered task, each configured or excluded with a reason."""
from __future__ import annotations

import os
import re
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from slurm_fixtures import tiny_runner
from tasks_support import make_context

import tasks.finetune as finetune_module
from benchmark.core.config import RunConfig, profile_path, resolve
from benchmark.data import get_dataset, resolve_data_root
from benchmark.harness.cli import main
from benchmark.harness.job_request import job_request
from benchmark.harness.jobs import Paths, run_task_job
from benchmark.harness.plan import plan_run
from benchmark.harness.submitit_launcher import REQUEUE_SIGNAL, CheckpointableJob, SubmititLauncher
from benchmark.harness.sweep import SweepSpec, expand
from tasks.base import RESOURCE_KINDS, Measurement, available_tasks, get_task

REAL_PROFILES = ("imagenet", "imagenet-mlp", "cifar", "mini")


def dry_run(capsys, profile: str, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["sweep", "--methods", "invp", "--profile", profile, "--launcher", "slurm",
                 "--dry-run", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "res"),
                 "--sweeps", str(tmp_path / "sweeps"), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def requests(out: str) -> dict[str, str]:
    """Dry-run label -> its request line (the line under it)."""
    lines = out.splitlines()
    return {line.split(None, 4)[4]: lines[i + 1].strip() for i, line in enumerate(lines[:-1])
            if line[:12].isalnum() and len(line.split(None, 4)) == 5}


def profile_variant(tmp_path: Path, name: str, change) -> str:
    """A copy of profile ``name`` with ``change(tree)`` applied, as a YAML path."""
    tree = yaml.safe_load(profile_path(name).read_text())
    change(tree)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def test_every_registered_task_declares_a_resource_kind():
    for name, task in available_tasks().items():
        assert task.resource_kind_for(task.defaults) in RESOURCE_KINDS, name
        assert task.max_processes_for(task.defaults) >= 1, name


def test_the_imagenet_dry_run_sizes_every_task_on_its_own(capsys, tmp_path):
    code, out, _ = dry_run(capsys, "imagenet", tmp_path, "--tasks", "all")
    assert code == 0
    request = requests(out)
    assert {re.split(r"[#:]", label.split(" [")[0])[0] for label in request if "[" in label} \
        == set(available_tasks())  # units: transfer:<dataset>, detection#<trial>
    assert "gpus=4 " in request["pretrain invp seed=0"]  # the pretraining asks the node
    assert "gpus=1 " in request["knn [invp]"] and "kind=cached_features" in request["knn [invp]"]
    assert "gpus=0 cpus/task=32" in request["voc07_svm [invp]"]
    # the DDP tasks ask their kind's GPUs, one process each; the one-process ones ask one GPU
    for label in ("linear [invp]", "linear_multilayer [invp]", "semisup [invp]",
                  "transfer:cifar10 [invp]"):
        assert "gpus=4 " in request[label] and "tasks/node=4 " in request[label], label
    assert "gpus=8 " in request["detection#0 [invp]"] and "tasks/node=8 " in request["detection#0 [invp]"]
    assert "gpus=1 " in request["voc07_bce [invp]"] and "tasks/node=1 " in request["voc07_bce [invp]"]
    # raw pixels have nothing to fine-tune: those jobs only record a skip, on one GPU
    for label in ("semisup [pixels]", "transfer:cifar10 [pixels]", "detection#0 [pixels]"):
        assert "gpus=1 " in request[label] and "tasks/node=1 " in request[label], label
        assert f"(raw pixels: {re.split(r'[#:]', label)[0].split()[0]} records a skip)" in request[label]
    assert "gpus=4 " in request["linear [pixels]"]  # a probe of pixels still runs
    assert not any("capped" in line for label, line in request.items() if "[pixels]" not in label)
    assert all("nodes=1 " in line for line in request.values())
    assert "data.num_workers 10->9 (cpus/task - 1)" in request["knn [invp]"]


def test_a_kind_asking_more_gpus_than_its_one_process_task_uses_is_capped(capsys, tmp_path):
    profile = profile_variant(tmp_path, "imagenet", lambda t: t["launcher"]["task_kinds"][
        "cached_features"].update(gpus_per_node=8))
    request = requests(dry_run(capsys, profile, tmp_path, "--tasks", "knn")[1])
    assert "gpus=1 " in request["knn [invp]"]
    assert "gpus capped 8->1 (knn runs 1 process)" in request["knn [invp]"]


def test_size_flags_size_the_pretraining_only(capsys, tmp_path):
    code, out, _ = dry_run(capsys, "imagenet", tmp_path, "--tasks", "knn", "--nodes", "2",
                           "--gpus-per-node", "8", "--partition", "gpu")
    request = requests(out)
    assert code == 0 and "nodes=2 gpus=8 " in request["pretrain invp seed=0"]
    assert "partition=gpu nodes=1 gpus=1 " in request["knn [invp]"]


@pytest.mark.parametrize("change, message", [
    (lambda t: t["launcher"]["task_kinds"].update(gpu={"gpus_per_node": 1}),
     r"launcher\.task_kinds: key 'gpu' must be one of cached_features, online_probe, .*fix it in"),
    (lambda t: t["launcher"]["tasks"].update(knnn={"time_min": 5}),
     r"launcher\.tasks: key 'knnn' must be one of .*knn.*; fix it in"),
    (lambda t: t["launcher"]["task_kinds"]["finetune"].update(gpu_per_node=2),
     r"launcher\.task_kinds\.finetune: unknown setting\(s\) \['gpu_per_node'\] \(did you mean gpus_per_node"),
    (lambda t: t["launcher"]["task_kinds"].pop("detection"),
     r"launcher\.task_kinds has no detection block \(the resource kind of task 'detection'\); "
     r"add launcher\.task_kinds\.detection: \{gpus_per_node: \.\.\., cpus_per_task"),
    (lambda t: t["launcher"]["task_kinds"]["cpu_fit"].pop("time_min"),
     r"launcher\.task_kinds\.cpu_fit is missing time_min; set it there"),
    (lambda t: t["launcher"]["tasks"].update(knn={"nodes": 2}),
     r"launcher\.tasks\.knn\.nodes is 2: a task job runs on one node; set 1 or remove it"),
])
def test_bad_task_resource_blocks_name_the_key_and_the_fix(change, message, capsys, tmp_path):
    code, _, err = dry_run(capsys, profile_variant(tmp_path, "imagenet", change), tmp_path)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_a_per_task_block_overrides_its_kind(capsys, tmp_path):
    profile = profile_variant(tmp_path, "imagenet", lambda t: t["launcher"]["tasks"].update(
        knn={"time_min": 90, "mem_gb": 200}))
    request = requests(dry_run(capsys, profile, tmp_path, "--tasks", "knn,linear")[1])
    assert "mem=200G time=90m" in request["knn [invp]"]
    assert "mem=64G time=4320m" in request["linear [invp]"]  # its kind's (online_probe)
    assert "kind=online_probe" in request["linear [invp]"]


def test_tasks_all_refuses_a_task_the_profile_neither_configures_nor_excludes(capsys, tmp_path):
    profile = profile_variant(tmp_path, "imagenet", lambda t: t["tasks"].pop("detection"))
    code, _, err = dry_run(capsys, profile, tmp_path, "--tasks", "all")
    assert code == 2
    assert ("--tasks all: task 'detection' has no settings in profile 'imagenet'; add "
            "tasks.detection: {} (its defaults) or settings to the profile, or exclude it with the "
            'reason: tasks_excluded: {detection: "why"}') in err


def test_an_excluded_task_is_printed_and_refused_by_name_with_its_reason(capsys, tmp_path):
    def exclude(tree):
        tree["tasks"].pop("detection")
        tree["tasks_excluded"] = {"detection": "no VOC here"}

    profile = profile_variant(tmp_path, "imagenet", exclude)
    code, out, _ = dry_run(capsys, profile, tmp_path, "--tasks", "all")
    assert code == 0 and "not run (the profile's tasks_excluded):\n  detection: no VOC here\n" in out
    assert "detection [invp]" not in requests(out)
    code, _, err = dry_run(capsys, profile, tmp_path, "--tasks", "knn,detection")
    assert code == 2 and ("task 'detection' is excluded by profile 'imagenet': no VOC here "
                          "(tasks_excluded.detection)") in err


def test_a_task_both_configured_and_excluded_is_refused(capsys, tmp_path):
    profile = profile_variant(tmp_path, "imagenet", lambda t: t.update(
        tasks_excluded={"detection": "why"}))
    code, _, err = dry_run(capsys, profile, tmp_path, "--tasks", "knn")
    assert code == 2 and "both configures and excludes task 'detection'" in err


@pytest.mark.parametrize("profile", REAL_PROFILES)
def test_every_real_profile_plans_every_registered_task_or_excludes_it(profile, tmp_path):
    jobs = expand(SweepSpec(profile=profile, methods=("invp",), tasks="all", seeds=(0,), grid=()),
                  tmp_path)
    planned = {job.task for job in jobs if job.kind == "task"}
    excluded = set(resolve(profile, "invp").tree.get("tasks_excluded", {}))
    assert planned | excluded == set(available_tasks()) and not planned & excluded
    assert {"detection", "places205_linear_multilayer"} <= planned or profile in ("cifar", "mini")


def test_a_task_job_runs_within_its_request(tmp_path, monkeypatch):
    data_root = resolve_data_root()
    if get_dataset("fashion_mnist").check(data_root):
        pytest.skip("Fashion-MNIST is not prepared (make data)")
    cfg = resolve("mini", "invp", ["data.num_workers=4",
                                   "launcher.task_kinds.cached_features.cpus_per_task=3",
                                   "launcher.task_kinds.cached_features.mem_gb=6"])
    job = next(j for j in plan_run(cfg, ["knn"], tmp_path / "runs") if j.encoder == "random")
    assert job_request(job).num_workers == 2
    seen = []

    def run(self, ctx):
        seen.append((ctx.config.data["num_workers"], ctx.memory_budget_gb))
        return [Measurement("top1", 0.5, "fashion_mnist")]

    monkeypatch.setattr(type(get_task("knn")), "run", run)
    outcome = run_task_job(job, Paths(tmp_path / "results", tmp_path / "runs", data_root))
    assert outcome.status == "done" and seen == [(2, 6.0)]


def test_task_jobs_are_submitted_checkpointable_as_one_array(tmp_path):
    cfg = resolve("mini", "invp", ["pretrain.epochs=2"])
    jobs = plan_run(cfg, ["knn", "linear"], tmp_path / "runs", sanity=False)
    launcher = SubmititLauncher("debug", folder=tmp_path / "logs", runner=tiny_runner)
    subs = launcher.submit(jobs, Paths(tmp_path / "results", tmp_path / "runs", tmp_path))
    tasks = [sub for sub in subs if sub.job.kind == "task"]
    assert [type(sub.handle.submission().function) for sub in subs] == [CheckpointableJob] * 3
    assert [sub.handle.submission().function.job for sub in tasks] == jobs[1:]
    assert [o.status for o in launcher.wait()] == ["done"] * 3


def test_a_task_stopped_by_the_requeue_signal_saves_progress_and_its_requeue_resumes(
        tmp_path, monkeypatch):
    data_root = resolve_data_root()
    if get_dataset("fashion_mnist").check(data_root):
        pytest.skip("Fashion-MNIST is not prepared (make data)")
    monkeypatch.setenv("SUBMITIT_DEBUG_JOB_ID", "1")  # inside a (debug) submitit job
    monkeypatch.setenv("BENCHMARK_TASK_CHECKPOINT_S", "1000")  # progress saved on the stop only
    job = next(j for j in plan_run(resolve("mini", "invp"), ["knn"], tmp_path / "runs")
               if j.encoder == "random")
    steps = []

    def run(self, ctx):  # a task that checkpoints its progress every step (tasks/progress.py)
        progress = ctx.progress("count", {})
        state = progress.load() or {"step": 0}
        while state["step"] < 5:
            state = {"step": state["step"] + 1}
            steps.append(state["step"])
            if steps == [1, 2]:
                os.kill(os.getpid(), REQUEUE_SIGNAL)  # Slurm's time-limit signal, mid-task
            progress.step_done(lambda: state, f"step {state['step']}")
        return [Measurement("steps", float(state["step"]), "fashion_mnist")]

    monkeypatch.setattr(type(get_task("knn")), "run", run)
    requeued = []
    previous = signal.signal(REQUEUE_SIGNAL, lambda signum, frame: requeued.append(signum))
    try:  # the handler above stands for submitit's: it requeues the job (checkpoint())
        first = CheckpointableJob(job, Paths(tmp_path / "results", tmp_path / "runs", data_root),
                                  force=True)
        assert first().status == "requeued" and requeued == [REQUEUE_SIGNAL]
        again = first.checkpoint().function
        assert (again.job, again.force, again.resume) == (job, True, "auto")
        outcome = again()
    finally:
        signal.signal(REQUEUE_SIGNAL, previous)
    assert outcome.status == "done" and steps == [1, 2, 3, 4, 5]
    stored = Paths(tmp_path / "results", tmp_path / "runs", data_root).store("mini")
    assert stored.load_job(job.job_id)["records"][0]["value"] == 5.0


@pytest.mark.parametrize("task, settings", [
    ("transfer", {"datasets": ["digits"], "lrs": [0.1], "weight_decays": [0.0], "steps": 2,
                  "batch_size": 32}),
    ("semisup", {"dataset": "digits", "fractions": [0.2], "test_split": "test", "epochs": 1,
                 "lr": 0.05, "batch_size": 64}),
])
def test_fine_tuning_tasks_read_with_the_jobs_data_loader_workers(task, settings, tmp_path,
                                                                  monkeypatch):
    """semisup and transfer fine-tune and predict with the job's data.num_workers (its CPUs
    less one, set by run_task_job), pinned memory on CUDA only."""
    loaders, real = [], finetune_module.DataLoader

    def recording(*args, **kwargs):
        loaders.append((kwargs["num_workers"], kwargs["pin_memory"]))
        return real(*args, **{**kwargs, "num_workers": 0})  # the test itself stays in-process

    monkeypatch.setattr(finetune_module, "DataLoader", recording)
    ctx = make_context(tmp_path, task, settings)
    tree = {**ctx.config.to_dict(), "data": {"num_workers": 3}}
    get_task(task).run(replace(ctx, config=RunConfig.from_dict(tree)))
    assert len(loaders) >= 2 and set(loaders) == {(3, False)}  # fine-tune and predict
    assert finetune_module.pin_memory("cuda:0") and not finetune_module.pin_memory("cpu")
