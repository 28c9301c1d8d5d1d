"""Launchers: how planned jobs get executed, each through the same two steps (:class:`Launcher`:
``submit``, then ``wait``), built by name from :class:`LaunchSettings`.

``local`` runs every job in this process, in plan order. ``slurm``, ``submitit-local`` and
``debug`` hand them to submitit with ``cluster=slurm|local|debug`` (always explicit: with Slurm
installed submitit would otherwise pick it on its own). Under Slurm one command submits a whole
plan: pretraining jobs first, then each pretraining's task jobs as job arrays (one per resource
request) that wait for it (``afterok``); the other clusters run the pretraining, then its tasks.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

from benchmark.core.registry import Registry
from benchmark.harness.jobs import Outcome, OutcomeStatus, Paths, run_job
from benchmark.harness.launch_protocol import EARLIER_SUBMISSION, Launcher, LaunchSettings, Submission
from benchmark.harness.plan import Job
from benchmark.harness.submitit_launcher import CLUSTERS, SubmititLauncher


class LocalLauncher:
    """Run every job here, in plan order, when waited for; a job whose dependency failed (or is
    queued or running from an earlier submission) is not started."""

    cluster: str | None = None
    detached = False
    job_logs: str | None = None

    def __init__(self, force: bool = False, resume: str = "auto",
                 on_outcome: Callable[[Outcome], None] | None = None):
        self.force = force
        self.resume = resume
        self.on_outcome = on_outcome
        self.jobs: list[Job] = []
        self.paths: Paths | None = None
        self.running: dict[str, str] = {}

    def submit(self, jobs: Sequence[Job], paths: Paths,
               running: Mapping[str, str] | None = None) -> list[Submission]:
        """Queue ``jobs`` for :meth:`wait` (nothing runs yet); ``running`` ones are not run."""
        self.jobs, self.paths, self.running = list(jobs), paths, dict(running or {})
        return [Submission(job) for job in self.jobs]

    def wait(self) -> list[Outcome]:
        """Run the queued jobs in order; one Outcome per job."""
        outcomes: dict[str, Outcome] = {}
        for job in self.jobs:
            outcome = self._not_started(job, outcomes) or run_job(
                job, self.paths, force=self.force, resume=self.resume)
            outcomes[job.job_id] = outcome
            if self.on_outcome:
                self.on_outcome(outcome)
        return [outcomes[job.job_id] for job in self.jobs]

    def _not_started(self, job: Job, outcomes: Mapping[str, Outcome]) -> Outcome | None:
        """Why ``job`` must not run now (None: it may)."""
        if job.job_id in self.running:
            return Outcome(job.job_id, job.label, OutcomeStatus.PENDING, EARLIER_SUBMISSION)
        for dep in job.depends_on:
            status = outcomes[dep].status if dep in outcomes else None
            if status == OutcomeStatus.FAILED:
                return Outcome(job.job_id, job.label, OutcomeStatus.FAILED,
                               f"not started: dependency {dep} failed")
            if status == OutcomeStatus.PENDING:
                return Outcome(job.job_id, job.label, OutcomeStatus.PENDING,
                               f"not started: dependency {dep} is {EARLIER_SUBMISSION}")
        return None


def _local_launcher(settings: LaunchSettings) -> Launcher:
    return LocalLauncher(settings.force, settings.resume, settings.on_outcome)


def _submitit_launcher(cluster: str) -> Callable[[LaunchSettings], Launcher]:
    def build(settings: LaunchSettings) -> Launcher:
        return SubmititLauncher(cluster, settings.force, settings.resume, settings.on_outcome,
                                settings.folder, settings.flags, settings.runner)
    return build


LAUNCHERS: Registry[Callable[[LaunchSettings], Launcher]] = Registry("launcher")


LAUNCHERS.add("local", _local_launcher)


for _name, _cluster in CLUSTERS.items():
    LAUNCHERS.add(_name, _submitit_launcher(_cluster))


def build_launcher(name: str, settings: LaunchSettings | None = None) -> Launcher:
    """The launcher registered as ``name``, built from ``settings``; unknown names list the valid
    ones."""
    return LAUNCHERS.get(name)(settings or LaunchSettings())
