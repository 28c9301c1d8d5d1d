"""Execute one planned job in this process and store its result records.

Top-level functions with picklable arguments, so any launcher (local, submitit) can call them.
"""
from __future__ import annotations

import os
import shutil
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any

from benchmark.core import provenance
from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.distributed import DistContext, init_distributed, launched_world_size
from benchmark.core.errors import Preempted, user_error_message
from benchmark.core.fields import safe_name
from benchmark.core.runtime import configure_threads, seed_everything
from benchmark.core.stop_request import clear_stop_request, preemption_signals
from benchmark.core.store import ResultRecord, ResultStore
from benchmark.data import dataset_problems
from benchmark.engine.pretrain import pretrain_unless_done
from benchmark.harness.completion import encoder_path, result_is_current
from benchmark.harness.job_request import job_request
from benchmark.harness.plan import Job
from benchmark.models.external_encoder import EXTERNAL
from tasks.base import EncoderHandle, TaskContext, get_task
from tasks.errors import TaskNotApplicable
from tasks.progress import CHECKPOINT_EVERY_S

# seconds between a task's progress checkpoints (tasks/progress.py); tests and short
# allocations set it lower
CHECKPOINT_ENV = "BENCHMARK_TASK_CHECKPOINT_S"


@dataclass(frozen=True)
class Paths:
    """Where a run reads data and writes results, runs and caches."""

    results: Path  # results/<profile> lives under it
    runs: Path
    data_root: Path

    def store(self, profile: str) -> ResultStore:
        return ResultStore(self.results / safe_name(profile, "profile"))

    def progress(self, job_id: str) -> Path:
        """The folder of a task job's progress checkpoints (deleted when its records are stored)."""
        return self.runs / "progress" / safe_name(job_id, "job id")


def checkpoint_every_s() -> float:
    """``$BENCHMARK_TASK_CHECKPOINT_S`` (seconds), else tasks/progress.py's default."""
    text = os.environ.get(CHECKPOINT_ENV, "")
    try:
        return float(text) if text else CHECKPOINT_EVERY_S
    except ValueError:
        raise ValueError(f"${CHECKPOINT_ENV}={text!r} is not a number of seconds; unset it or "
                         "give one, e.g. 300") from None


class OutcomeStatus(StrEnum):
    """What became of a job (``Outcome.status``)."""

    DONE = "done"  # it ran to its end
    CACHED = "cached"  # it was done already (see ``completion``): nothing ran
    SKIPPED = "skipped"  # a task that cannot run here (dataset missing, not applicable); recorded
    FAILED = "failed"  # it raised, or was not started because a job it needs failed
    REQUEUED = "requeued"  # stopped at a checkpoint by Slurm's signal; requeued to resume
    PENDING = "pending"  # queued or running from an earlier submission; not waited for


@dataclass(frozen=True)
class Outcome:
    """What happened to a job (see :class:`OutcomeStatus`), with a message: the path it wrote,
    or why it failed or was skipped."""

    job_id: str
    label: str
    status: OutcomeStatus
    message: str = ""


def run_pretrain_job(job: Job, paths: Paths, force: bool = False, resume: str = "auto") -> Outcome:
    """Pretrain the job's method unless its encoder already exists and loads (or ``force``).
    Another process pretraining into the same folder makes this one wait, then find it done."""

    cfg = job.run_config
    configure_threads(cfg.threads)
    path, trained = pretrain_unless_done(cfg, Path(job.pretrain_dir), resume=resume,
                                         data_root=paths.data_root, reuse=not force)
    status = OutcomeStatus.DONE if trained else OutcomeStatus.CACHED
    return Outcome(job.job_id, job.label, status, str(path))


def task_records(job: Job, cfg: RunConfig, measurements: list[Any], checkpoint_hash: str | None,
                 device: Any, wall: float, started: str, world_size: int = 1) -> list[ResultRecord]:
    """The records of a task job's measurements, with their provenance (the job, its config, the
    encoder's hash, the torch ``device`` and the job's ``world_size`` processes, the wall time and
    start)."""
    git = provenance.git_state()
    method = cfg.method.name if job.encoder == "pretrained" else job.encoder
    weights = {"weights": job.weights.record_extra()} if job.weights is not None else {}
    description = provenance.device_description(device)
    if world_size > 1:
        description = f"{description} x {world_size} processes"
    accelerator = provenance.accelerator_info(device, world_size)
    return [
        ResultRecord(
            method=method,
            method_config=cfg.method.to_dict() if job.encoder == "pretrained" else {},
            encoder=job.encoder,
            backbone=cfg.model.backbone,
            pretrain_epochs=cfg.pretrain.epochs if job.encoder == "pretrained" else 0,
            task=job.task or "",
            dataset=m.dataset,
            split=m.split,
            metric=m.metric,
            value=float(m.value),
            seed=cfg.seed,
            profile=cfg.profile,
            job_id=job.job_id,
            config_hash=cfg.hash,
            checkpoint_hash=checkpoint_hash,
            git_commit=git["git_commit"],
            git_dirty=git["git_dirty"],
            versions=provenance.library_versions(),
            host=provenance.host_name(),
            device=description,
            wall_time_s=round(wall, 3),
            started_at=started,
            extra={**m.extra, **weights},
            accelerator=accelerator,
        )
        for m in measurements
    ]


def _skip(store: ResultStore, job: Job, job_meta: dict[str, Any], reason: str,
          is_main: bool) -> Outcome:
    """Record (on rank 0 only) that ``job`` did not run because of ``reason``."""
    if is_main:
        store.save_skip(job_meta, reason)
    return Outcome(job.job_id, job.label, OutcomeStatus.SKIPPED, reason)


def _process_group(task_name: str, most: int, device: str) -> DistContext:
    """Join the job's process group (one process per GPU under Slurm or torchrun; none alone);
    a world larger than the task can use (``most``) is an error naming the task."""
    world = launched_world_size()
    if world > most:
        raise ConfigError(f"task {task_name!r} runs {most} process(es) but was launched with "
                          f"{world} (WORLD_SIZE / SLURM_NTASKS); launch it with {most} (the "
                          "sweep's task jobs ask that many)")
    return init_distributed(device)


def measure_task(job: Job, ctx: TaskContext, checkpoint_hash: str | None,
                 world_size: int = 1) -> list[ResultRecord]:
    """Run ``job``'s task in ``ctx`` (threads and seeds set from its config first) and return the
    records of its measurements, timed (``task_records``). Raises what the task raises."""
    cfg = ctx.config
    configure_threads(cfg.threads)
    seed_everything(cfg.seed)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    measurements = get_task(job.task).run(ctx)
    return task_records(job, cfg, measurements, checkpoint_hash, ctx.device,
                        time.perf_counter() - t0, started, world_size)


def run_task_job(job: Job, paths: Paths, force: bool = False) -> Outcome:
    """Run one task on one encoder and store its records atomically (skip if already stored).
    The task runs within its job's request (``job_request``): its memory is the task's budget,
    its data-loader workers fit its CPUs. Launched as several processes (one per GPU: a task
    whose ``max_processes_for`` allows it), every rank runs the task; only rank 0 writes the
    records, the skip notes and the progress checkpoints, and deletes the progress folder."""
    store = paths.store(job.config["profile"])
    if result_is_current(job, store) and not force:
        return Outcome(job.job_id, job.label, OutcomeStatus.CACHED, str(store.path(job.job_id)))
    request = job_request(job)
    cfg = job.run_config
    if request.num_workers != cfg.data["num_workers"]:
        cfg = RunConfig.from_dict({**job.config, "data": {**job.config["data"],
                                                         "num_workers": request.num_workers}})
    task = get_task(job.task)
    job_meta = {"job_id": job.job_id, "task": job.task, "encoder": job.encoder,
                "label": job.label, "method": cfg.method.name if job.weights is None else EXTERNAL,
                "config": job.config, "pretrain_dir": job.pretrain_dir,
                **({"weights": job.weights.record_extra()} if job.weights is not None else {})}
    settings = cfg.tasks[job.task]
    dist = _process_group(job.task, task.max_processes_for(settings), str(cfg.device))
    missing = dataset_problems(task.datasets(settings), paths.data_root)
    if missing:
        return _skip(store, job, job_meta, f"dataset missing: {'; '.join(missing)}", dist.is_main)
    checkpoint, checkpoint_hash = None, None
    if job.encoder == "pretrained":
        checkpoint = encoder_path(job.pretrain_dir)
        if not checkpoint.is_file():
            return Outcome(job.job_id, job.label, OutcomeStatus.FAILED,
                           f"no encoder checkpoint at {checkpoint}")
        checkpoint_hash = provenance.file_hash(checkpoint)
    elif job.weights is not None:
        checkpoint_hash = job.weights.sha256
    ctx = TaskContext(
        config=cfg,
        encoder=EncoderHandle(job.encoder, cfg, checkpoint, checkpoint_hash, job.weights),
        data_root=paths.data_root,
        device=dist.device,
        seed=cfg.seed,
        cache_dir=paths.runs / "cache",
        progress_dir=paths.progress(job.job_id),
        progress_every_s=checkpoint_every_s(),
        memory_budget_gb=request.resources.mem_gb,
        task_name=job.task,
    )
    try:
        with preemption_signals():  # a stop request checkpoints the task's progress and raises
            records = measure_task(job, ctx, checkpoint_hash, dist.world_size)
    except TaskNotApplicable as exc:
        return _skip(store, job, job_meta, f"not applicable: {exc}", dist.is_main)
    finally:
        clear_stop_request()  # a stop request belongs to this job only
    if not dist.is_main:
        return Outcome(job.job_id, job.label, OutcomeStatus.DONE,
                       f"rank {dist.rank} of {dist.world_size}: rank 0 stores the records")
    path = store.save(job_meta, records)
    shutil.rmtree(paths.progress(job.job_id), ignore_errors=True)  # its records are stored
    return Outcome(job.job_id, job.label, OutcomeStatus.DONE, str(path))


def run_job(job: Job, paths: Paths, force: bool = False, resume: str = "auto") -> Outcome:
    """Run any job; an exception becomes a ``failed`` outcome carrying the message of a user
    error (bad config, missing or empty data, a full disk) or, for anything else, the traceback's
    tail.

    A requested stop (``benchmark.core.errors.Preempted``: SIGTERM/SIGUSR1, a checkpoint was saved)
    propagates instead, so the caller stops rather than going on with the next jobs."""
    try:
        if job.kind == "pretrain":
            return run_pretrain_job(job, paths, force=force, resume=resume)
        return run_task_job(job, paths, force=force)
    except Exception as exc:  # noqa: BLE001  (reported, not swallowed: the CLI exits non-zero)
        if isinstance(exc, Preempted):
            raise
        message = user_error_message(exc) or "".join(traceback.format_exception(exc)[-3:]).strip()
        return Outcome(job.job_id, job.label, OutcomeStatus.FAILED, message)
