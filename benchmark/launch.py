"""Launchers: how planned jobs get executed. ``local`` runs them in this process, in order."""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

from benchmark.jobs import Outcome, Paths, run_job
from benchmark.plan import Job


class Launcher(Protocol):
    """Runs a list of jobs (dependencies first) and returns one Outcome per job."""

    def launch(self, jobs: Sequence[Job], paths: Paths) -> list[Outcome]: ...


class LocalLauncher:
    """Run every job here, in plan order; a job whose dependency failed is not started."""

    def __init__(self, force: bool = False, resume: str = "auto",
                 on_outcome: Callable[[Outcome], None] | None = None):
        self.force = force
        self.resume = resume
        self.on_outcome = on_outcome

    def launch(self, jobs: Sequence[Job], paths: Paths) -> list[Outcome]:
        outcomes: dict[str, Outcome] = {}
        for job in jobs:
            failed = [d for d in job.depends_on if outcomes.get(d) and outcomes[d].status == "failed"]
            if failed:
                outcome = Outcome(job.job_id, job.label, "failed",
                                  f"not started: dependency {failed[0]} failed")
            else:
                outcome = run_job(job, paths, force=self.force, resume=self.resume)
            outcomes[job.job_id] = outcome
            if self.on_outcome:
                self.on_outcome(outcome)
        return [outcomes[job.job_id] for job in jobs]


LAUNCHERS: dict[str, Callable[..., Launcher]] = {"local": LocalLauncher}


def build_launcher(name: str, **options: object) -> Launcher:
    """The launcher registered as ``name``; unknown names list the valid ones."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; valid launchers: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](**options)
