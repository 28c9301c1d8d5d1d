"""A task job run by several processes (one per GPU, here 2 gloo ranks on the CPU): every rank
runs the online probe on its share of every batch, only rank 0 writes the progress checkpoints
and the records, and the records equal those of the one-process run; fine-tuning (semisup,
transfer) trains the one-process model under DDP; the sweep asks the job's GPUs for these
tasks, one process per GPU."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
from gloo_support import free_port, join_gloo

from benchmark.core.config import resolve
from benchmark.core.store import ResultStore
from benchmark.harness.job_request import job_request
from benchmark.harness.jobs import CHECKPOINT_ENV, Paths, run_job, run_task_job
from benchmark.harness.plan import Job, plan_run
from tasks.finetune import FinetuneRecipe, fine_tune
from tasks.progress import TaskProgress

REPO = Path(__file__).resolve().parent.parent
TASK = "places205_linear"  # the mini's online InvP probe on digits (frozen_stats heads)
OVERRIDES = ["threads=1", f"tasks.{TASK}.epochs=2", f"tasks.{TASK}.milestones=[1]"]


def _job(root: Path) -> Job:
    cfg = resolve("mini", "invp", OVERRIDES)
    return next(j for j in plan_run(cfg, [TASK], root / "runs") if j.encoder == "random")


def _paths(root: Path) -> Paths:
    return Paths(root / "results", root / "runs", REPO)


def _logged(cls: type, name: str, log: Path, rank: int) -> None:
    """Make ``cls.name`` append ``name`` to ``log`` before doing its work (which rank writes)."""
    original = getattr(cls, name)

    def logging(self, *args, **kwargs):
        with log.open("a") as out:
            out.write(f"{cls.__name__}.{name}\n")
        return original(self, *args, **kwargs)

    setattr(cls, name, logging)


def _rank(rank: int, world: int, port: int, root: Path) -> None:
    join_gloo(rank, world, port)
    log = root / f"rank{rank}.log"
    for cls, name in ((TaskProgress, "save"), (TaskProgress, "load"), (ResultStore, "save")):
        _logged(cls, name, log, rank)
    try:
        outcome = run_task_job(_job(root), _paths(root))
        (root / f"outcome{rank}.json").write_text(json.dumps([outcome.status, outcome.message]))
    finally:
        dist.destroy_process_group()


def _values(root: Path, job: Job) -> list[tuple]:
    records = ResultStore(root / "results" / "mini").load_job(job.job_id)["records"]
    return [(r["metric"], r["split"], r["value"]) for r in records]


@pytest.mark.slow
def test_two_gloo_processes_store_the_one_process_records_once(tmp_path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_ENV, "0")  # rank 0 checkpoints after every step
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir()
    mp.spawn(_rank, args=(2, free_port(), ddp), nprocs=2, join=True)
    job = _job(single)
    assert run_task_job(job, _paths(single)).status == "done"

    assert json.loads((ddp / "outcome0.json").read_text())[0] == "done"
    assert json.loads((ddp / "outcome1.json").read_text()) == [
        "done", "rank 1 of 2: rank 0 stores the records"]
    rank0 = (ddp / "rank0.log").read_text().splitlines()
    rank1 = (ddp / "rank1.log").read_text().splitlines()
    assert rank0.count("ResultStore.save") == 1 and rank0.count("TaskProgress.save") >= 2
    assert rank1 == ["TaskProgress.load"]  # every rank loads the progress; only rank 0 writes
    assert not (ddp / "runs" / "progress").exists() or not any((ddp / "runs" / "progress").iterdir())
    ddp_values, single_values = _values(ddp, job), _values(single, job)
    assert [v[:2] for v in ddp_values] == [v[:2] for v in single_values]
    for (metric, split, got), (_, _, expected) in zip(ddp_values, single_values):
        assert got == pytest.approx(expected, abs=1e-5), (metric, split)
    stored = ResultStore(ddp / "results" / "mini").load_job(job.job_id)["records"]
    assert stored[0]["device"].endswith(" x 2 processes")


def test_a_one_process_task_refuses_a_larger_world(tmp_path, monkeypatch):
    cfg = resolve("mini", "invp", ["threads=1"])
    job = next(j for j in plan_run(cfg, ["knn"], tmp_path / "runs") if j.encoder == "random")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun would announce it
    outcome = run_job(job, _paths(tmp_path))
    assert outcome.status == "failed"
    assert outcome.message.startswith("task 'knn' runs 1 process(es) but was launched with 2")


class PlainBackbone(nn.Module):
    """A BatchNorm-free trunk (on the CPU, where gloo has no SyncBatchNorm, each rank's BN would
    normalise its own share of a batch)."""

    feature_dim = 8

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


# 69 images in batches of 16, the last of 5 (shared 3 + 2): the loss is the whole batch's mean
RECIPE = FinetuneRecipe(lr=0.1, epochs=2, batch_size=16, milestones=(1,), drop_last=False)


class CountedReads(torch.utils.data.TensorDataset):
    """Tensors that count the items read from them."""

    def __init__(self, *tensors: torch.Tensor):
        super().__init__(*tensors)
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


def _fine_tuned(progress: TaskProgress | None = None) -> tuple[dict, int]:
    """The fine-tuned model's state and the number of images this process read."""
    generator = torch.Generator().manual_seed(0)
    data = CountedReads(torch.randn(69, 1, 8, 8, generator=generator),
                        torch.randint(0, 3, (69,), generator=generator))
    torch.manual_seed(0)
    model = fine_tune(PlainBackbone(), 3, data, RECIPE, "cpu", 0, progress=progress)
    return model.state_dict(), data.reads


def _fine_tune_rank(rank: int, world: int, port: int, root: Path) -> None:
    join_gloo(rank, world, port)
    try:
        state, reads = _fine_tuned(TaskProgress(root / "progress", "fit", {"test": 1}, every_s=0.0))
        torch.save({"state": state, "reads": reads}, root / f"model{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_fine_tune_the_one_process_model(tmp_path):
    mp.spawn(_fine_tune_rank, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    single, reads = _fine_tuned()
    saved = [torch.load(tmp_path / f"model{r}.pt", weights_only=True) for r in range(2)]
    # each rank read its share of every batch (8 + 8 + 8 + 8 + 3 or 2, twice), one process all
    assert (reads, saved[0]["reads"], saved[1]["reads"]) == (138, 70, 68)
    ranks = [rank["state"] for rank in saved]
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # DDP kept the ranks equal
        assert torch.allclose(ranks[0][key], value, atol=1e-5, rtol=0), key
    saved = torch.load(tmp_path / "progress" / "fit.pt", weights_only=True)["state"]
    assert saved["step"] == 10  # rank 0 checkpointed every step: 5 batches x 2 epochs


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp", "cifar"])
def test_probe_and_fine_tune_jobs_ask_the_nodes_gpus_one_process_each(profile, tmp_path):
    cfg = resolve(profile, "invp")
    kinds = cfg.tree["launcher"]["task_kinds"]
    tasks = ("linear", "linear_multilayer", "places205_linear", "places205_linear_multilayer",
             "semisup", "transfer")
    names = [name for name in tasks if name in cfg.tasks]
    for job in plan_run(cfg, names, tmp_path / "runs"):
        if job.kind == "task":
            request = job_request(job)
            gpus = kinds["finetune" if job.task in ("semisup", "transfer") else "online_probe"]["gpus_per_node"]
            if job.encoder == "pixels" and job.task in ("semisup", "transfer"):
                gpus = 1  # nothing to fine-tune: the job records a skip
            assert (request.resources.gpus_per_node, request.processes) == (gpus, gpus), job.label


DETECTION_OVERRIDES = [  # a few iterations
    "threads=1", "tasks.detection.schedule.iterations=2", "tasks.detection.schedule.steps=[1]",
    "tasks.detection.schedule.warmup_iters=1", "tasks.detection.precise_bn_iters=0"]


def _detection_job(root: Path) -> Job:
    detector = {**resolve("mini", "invp").tasks["detection"]["detector"], "norm": "frozen"}
    frozen = f"tasks.detection.detector={json.dumps(detector)}"  # gloo has no SyncBatchNorm
    cfg = resolve("mini", "invp", [*DETECTION_OVERRIDES, frozen])
    return next(j for j in plan_run(cfg, ["detection"], root / "runs") if j.encoder == "random")


def _detection_rank(rank: int, world: int, port: int, root: Path, data: Path) -> None:
    join_gloo(rank, world, port)
    log = root / f"rank{rank}.log"
    for cls, name in ((TaskProgress, "save"), (TaskProgress, "load"), (ResultStore, "save")):
        _logged(cls, name, log, rank)
    try:
        outcome = run_task_job(_detection_job(root), Paths(root / "results", root / "runs", data))
        (root / f"outcome{rank}.json").write_text(json.dumps([outcome.status, outcome.message]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_store_the_detection_records_once(tmp_path, monkeypatch, data_root):
    from benchmark.data.mini_det import MiniDetParams, prepare_mini_det

    monkeypatch.setenv(CHECKPOINT_ENV, "0")  # rank 0 checkpoints after every iteration
    data = tmp_path / "data"
    data.mkdir()
    (data / "FashionMNIST").symlink_to((data_root / "FashionMNIST").resolve())
    prepare_mini_det(data, MiniDetParams(seed=1, trainval_images=8, test_images=6))
    mp.spawn(_detection_rank, args=(2, free_port(), tmp_path, data), nprocs=2, join=True)

    assert json.loads((tmp_path / "outcome0.json").read_text())[0] == "done"
    assert json.loads((tmp_path / "outcome1.json").read_text()) == [
        "done", "rank 1 of 2: rank 0 stores the records"]
    rank0 = (tmp_path / "rank0.log").read_text().splitlines()
    rank1 = (tmp_path / "rank1.log").read_text().splitlines()
    assert rank0.count("ResultStore.save") == 1 and rank0.count("TaskProgress.save") == 2
    assert rank1 == ["TaskProgress.load"]  # one shared checkpoint: rank 0 writes, both load
    progress = tmp_path / "runs" / "progress"
    assert not progress.exists() or not any(progress.iterdir())
    job = _detection_job(tmp_path)
    records = ResultStore(tmp_path / "results" / "mini").load_job(job.job_id)["records"]
    assert [r["metric"] for r in records] == ["AP", "AP50", "AP75"]
    assert records[0]["device"].endswith(" x 2 processes")
    assert records[0]["extra"]["batch_size"] == 2 and records[0]["extra"]["iterations"] == 2


@pytest.mark.parametrize("profile", ["imagenet", "imagenet-mlp"])
def test_detection_asks_moco_s_8_gpus_one_process_each_with_2_images_per_gpu(profile, tmp_path,
                                                                             capsys):
    from benchmark.harness.cli import main
    from tasks.detection.task import DetectionTask

    cfg = resolve(profile, "invp")
    assert {**DetectionTask.defaults, **cfg.tasks["detection"]}["batch_size"] == 16  # global: 8 x 2
    assert main(["sweep", "--methods", "invp", "--profile", profile, "--tasks", "all",
                 "--launcher", "slurm", "--dry-run", "--sweeps", str(tmp_path / "sweeps"),
                 "--results", str(tmp_path / "results"), "--out", str(tmp_path / "runs")]) == 0
    lines = capsys.readouterr().out.splitlines()
    requests = [after for line, after in zip(lines, lines[1:])
                if " detection#" in line and "[pixels]" not in line]  # pixels: a skip, 1 GPU
    assert requests and all("gpus=8 " in r and "tasks/node=8 " in r for r in requests)
