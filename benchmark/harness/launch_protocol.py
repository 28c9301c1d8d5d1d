"""What every launcher offers (:class:`Launcher`: ``submit``, then ``wait``), how it is built
(:class:`LaunchSettings`) and one submitted job (:class:`Submission`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from benchmark.harness.jobs import Outcome, Paths
from benchmark.harness.plan import Job

EARLIER_SUBMISSION = "queued or running from an earlier submission"


@runtime_checkable
class Launcher(Protocol):
    """How planned jobs get executed, in two steps. :meth:`submit` hands the jobs over
    (dependencies first; ``running``: planned job id -> scheduler id of jobs an earlier submission
    still has queued or running, which are not submitted again) and returns one Submission per job;
    :meth:`wait` blocks until the submitted jobs end and returns one Outcome per job, telling each
    to the launcher's ``on_outcome`` as it is known.

    ``cluster``: the submitit cluster the jobs go to (None: this process). ``detached``: submitted
    jobs run on without this process, so waiting is optional (Slurm). ``job_logs``, after
    ``submit``: where each job's logs lie (``%j`` = its scheduler id; None: no logs).
    """

    cluster: str | None
    detached: bool
    job_logs: str | None

    def submit(self, jobs: Sequence[Job], paths: Paths,
               running: Mapping[str, str] | None = None) -> list[Submission]: ...

    def wait(self) -> list[Outcome]: ...


@dataclass(frozen=True)
class LaunchSettings:
    """What :func:`build_launcher` builds any launcher from."""

    force: bool = False  # re-run jobs that are done
    resume: str = "auto"  # the pretraining checkpoint resume policy
    on_outcome: Callable[[Outcome], None] | None = None  # told each outcome during wait()
    folder: Path | None = None  # submitit: pickles and logs (default: <runs>/submitit/<time>)
    flags: Mapping[str, Any] = field(default_factory=dict)  # submitit: resource overrides
    runner: Callable[..., Outcome] | None = None  # submitit: what a job runs (run_job_checked)


@dataclass
class Submission:
    """A planned job and what became of it: a submitit job handle, or an outcome already known
    (done before, not started because a dependency failed)."""

    job: Job
    handle: Any = None
    outcome: Outcome | None = None

    @property
    def scheduler_id(self) -> str | None:
        return None if self.handle is None else str(self.handle.job_id)
