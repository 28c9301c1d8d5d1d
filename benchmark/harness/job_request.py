"""What one planned job asks the scheduler for, and the budget it then runs within.

A pretraining asks for its profile's ``launcher`` keys (and the command-line flags). A task job is
sized by its task's resource kind (``Task.resource_kind_for``, sized by the profile's
``launcher.task_kinds``), but never asks for more GPUs than its task can use: a task runs
``Task.max_processes_for`` processes (one per GPU: all of the job's for the online probes,
semisup, transfer and detection, which run DDP; one for the others), so a kind's GPU count above that is
capped, and the dry run says so; a fine-tuning task (``Task.fine_tunes``) on the raw-pixels encoder,
which only records its skip, asks one GPU at most. A job of several GPUs runs one process per GPU
(``tasks_per_node``). Its data-loader workers (per process) are the profile's
``data.num_workers``, at most its CPUs per process less the one that runs the task.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from benchmark.harness.plan import Job
from benchmark.harness.resources import Resources, resources_for
from tasks.base import get_task
from tasks.common import checked_settings


@dataclass(frozen=True)
class JobRequest:
    """A job's scheduler request (``resources``, ``processes`` per node) and the data-loader
    workers per process it runs with; ``notes`` say where the request departs from the profile."""

    resources: Resources
    processes: int
    num_workers: int
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the dry run: the resources, processes per node, then the notes."""
        return " ".join([self.resources.describe(), f"tasks/node={self.processes}", *self.notes])


def task_num_workers(profile_workers: int, cpus_per_task: int) -> int:
    """Data-loader workers of a task process: the profile's, at most one fewer than its CPUs."""
    return min(profile_workers, cpus_per_task - 1)


def job_request(job: Job, flags: Mapping[str, Any] | None = None) -> JobRequest:
    """The request of ``job`` from its config's ``launcher`` section (and ``flags``, see
    :func:`benchmark.harness.resources.resources_for`)."""
    section = job.config["launcher"]
    workers = int(job.config["data"]["num_workers"])
    if job.kind == "pretrain":
        resources = resources_for(section, "pretrain", flags)
        return JobRequest(resources, resources.processes_per_node, workers)
    task = get_task(job.task)
    settings = checked_settings(task, job.config["tasks"][job.task], job.task)
    kind = task.resource_kind_for(settings)
    asked = resources_for(section, "task", flags, task=job.task, task_kind=kind)
    most = task.max_processes_for(settings)
    why = f"{job.task} runs {most} process{'es' if most > 1 else ''}"
    if job.encoder == "pixels" and task.fine_tunes:
        most, why = 1, f"raw pixels: {job.task} records a skip"  # nothing to fine-tune
    notes = [f"kind={kind}"]
    resources = asked
    if asked.gpus_per_node > most:
        resources = replace(asked, gpus_per_node=most)
        notes.append(f"gpus capped {asked.gpus_per_node}->{most} ({why})")
    task_workers = task_num_workers(workers, resources.cpus_per_task)
    if task_workers != workers:
        notes.append(f"data.num_workers {workers}->{task_workers} (cpus/task - 1)")
    return JobRequest(resources, max(1, min(resources.gpus_per_node, most)), task_workers,
                      tuple(notes))
