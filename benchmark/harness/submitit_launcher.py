"""The submitit launchers (``slurm``, ``submitit-local``, ``debug``): one command submits a whole
plan; under Slurm the pretraining jobs first, then each pretraining's task jobs as job arrays
(one per resource request) that wait for it (``afterok``); the other clusters run the pretraining,
then its tasks. Every job, pretraining or task, requeues itself at the time limit and resumes from
its checkpoint (a task: its progress checkpoint, tasks/progress.py)."""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmark.core.distributed import export_slurm_env
from benchmark.core.stop_request import request_stop
from benchmark.harness.completion import is_done
from benchmark.harness.job_request import JobRequest, job_request
from benchmark.harness.jobs import Outcome, OutcomeStatus, Paths, run_job
from benchmark.harness.launch_protocol import EARLIER_SUBMISSION, Submission
from benchmark.harness.plan import Job
from benchmark.harness.resources import script_text
from benchmark.harness.slurm_check import check_resources, require_slurm

LOG_TAIL_LINES = 15  # log lines `status` shows for a failed job


CLUSTERS = {"slurm": "slurm", "submitit-local": "local", "debug": "debug"}


# submitit's time-limit / preemption signal (its SUBMITIT_PREEMPT_SIGNAL, USR2 by default)
REQUEUE_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class JobFailed(RuntimeError):
    """Raised inside a scheduled job whose outcome is ``failed``, so the scheduler records a
    failure (and ``afterok`` dependents never start)."""


def run_job_checked(job: Job, paths: Paths, force: bool = False, resume: str = "auto") -> Outcome:
    """:func:`benchmark.harness.jobs.run_job`, raising :class:`JobFailed` on a failed outcome."""
    outcome = run_job(job, paths, force=force, resume=resume)
    if outcome.status == OutcomeStatus.FAILED:
        raise JobFailed(f"{job.label} ({job.job_id}) failed: {outcome.message}")
    return outcome


class CheckpointableJob:
    """Submitit callable of one job (pretraining or task), checkpointed and requeued on SIGUSR2.

    Slurm sends SIGUSR2 ``signal_delay_s`` before the time limit (and on preemption, where the
    cluster sets ``preempt_send_user_signal``). Instead of letting submitit requeue at once,
    mid-step, the signal asks the job to stop (:func:`benchmark.core.stop_request.request_stop`):
    the engine, or a task that checkpoints its progress (tasks/progress.py), finishes the current
    step, saves a checkpoint and raises ``Preempted``. Then submitit's own handler runs: it calls
    :meth:`checkpoint`, which returns the same job with ``resume="auto"``, requeues it and exits;
    the requeued job continues exactly from that checkpoint. A task that finishes before it
    stops keeps its outcome.
    """

    def __init__(self, job: Job, paths: Paths, force: bool = False, resume: str = "auto",
                 runner: Callable[..., Outcome] = run_job_checked):
        self.job, self.paths, self.force, self.resume, self.runner = job, paths, force, resume, runner

    def __call__(self) -> Outcome:
        import submitit

        if submitit.JobEnvironment().num_tasks > 1:  # one process per GPU: a DDP world
            export_slurm_env()
        requeue = signal.getsignal(REQUEUE_SIGNAL)
        if not callable(requeue):  # not under submitit's signal handling (debug executor)
            return self.runner(self.job, self.paths, force=self.force, resume=self.resume)
        stopped = threading.Event()

        def stop(signum: int, frame: Any) -> None:
            stopped.set()
            request_stop()

        signal.signal(REQUEUE_SIGNAL, stop)
        try:
            outcome = self.runner(self.job, self.paths, force=self.force, resume=self.resume)
        except Exception:
            if not stopped.is_set():
                raise
            outcome = None
        finally:
            signal.signal(REQUEUE_SIGNAL, requeue)
        if stopped.is_set() and (outcome is None or outcome.status == OutcomeStatus.FAILED):
            requeue(REQUEUE_SIGNAL, None)  # rank 0: checkpoint() -> requeue -> exit
            return Outcome(self.job.job_id, self.job.label, OutcomeStatus.REQUEUED,
                           "stopped at a checkpoint; rank 0 requeued the job")
        return outcome

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The requeued submission: same job, resuming. A pretraining never forces a fresh start
        again (its ``force`` means: train from scratch); a task keeps ``force`` (replace the
        stored result), so a forced re-run is not taken as done from its old record, and resumes
        from its progress checkpoint either way."""
        from submitit.helpers import DelayedSubmission

        force = self.force and self.job.kind == "task"
        return DelayedSubmission(CheckpointableJob(self.job, self.paths, force, "auto", self.runner))


def log_tail(handle: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a submitit job's stderr then stdout, with their paths."""
    parts = []
    for stream in (handle.paths.stderr, handle.paths.stdout):
        path = Path(stream)
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path}\n" + "\n".join(tail))
    return "\n".join(parts)


def last_line(exc: BaseException) -> str:
    """The last non-empty line of an exception's text; for submitit's FailedJobError (remote
    traceback, a ``-----`` rule, then log paths) the traceback's last line: the job's error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    if len(rules) >= 2:
        lines = lines[:rules[-1]]
    return lines[-1] if lines else type(exc).__name__


def failure_outcome(job: Job, handle: Any, exc: BaseException) -> Outcome:
    """The outcome of a scheduled job that raised or never ran (cancelled, killed)."""
    return Outcome(job.job_id, job.label, OutcomeStatus.FAILED,
                   f"{last_line(exc)} [job {handle.job_id}, logs {handle.paths.stdout}]")


def await_outcome(sub: Submission) -> Outcome:
    """Block until the submission's job ends; its Outcome (``failed`` if it raised or never ran)."""
    if sub.outcome is not None:
        return sub.outcome
    try:
        sub.outcome = sub.handle.results()[0]
    except Exception as exc:  # noqa: BLE001  (turned into a failed outcome naming the logs)
        sub.outcome = failure_outcome(sub.job, sub.handle, exc)
    return sub.outcome


def array_key(request: JobRequest) -> tuple[Any, ...]:
    """Jobs with equal keys share one array: the same batch-script options and requeue limit."""
    return (*request.resources.sbatch_args(request.processes), request.resources.max_requeues,
            request.resources.signal_delay_s, request.resources.array_parallelism)


class SubmititLauncher:
    """Submit jobs through submitit to ``cluster`` (``slurm``, ``local`` or ``debug``).

    ``flags`` are command-line resource overrides (see :mod:`benchmark.harness.resources`);
    ``runner`` is what each scheduled job calls (default :func:`run_job_checked`). Jobs ``running``
    from an earlier submission are depended on instead of submitted again.
    """

    def __init__(self, cluster: str, force: bool = False, resume: str = "auto",
                 on_outcome: Callable[[Outcome], None] | None = None,
                 folder: Path | None = None, flags: Mapping[str, Any] | None = None,
                 runner: Callable[..., Outcome] | None = None):
        if cluster not in CLUSTERS.values():
            raise ValueError(f"unknown submitit cluster {cluster!r}; valid: slurm, local, debug")
        self.cluster = cluster
        self.force = force
        self.resume = resume
        self.on_outcome = on_outcome
        self.folder = Path(folder) if folder else None
        self.flags = dict(flags or {})
        self.runner = runner or run_job_checked
        self.detached = cluster == "slurm"
        self.job_logs: str | None = None
        self.submissions: list[Submission] = []

    def log_folder(self, paths: Paths) -> Path:
        """Where submitit writes pickles and logs (``%j`` = scheduler job id)."""
        return self.folder or Path(paths.runs) / "submitit" / time.strftime("%Y%m%d-%H%M%S")

    def parameters(self, job: Job, dependency: str | None) -> dict[str, Any]:
        """submitit's parameters for ``job`` (``dependency``: a scheduler id it waits for);
        every text that becomes a batch-script line is checked to be one line."""
        request = job_request(job, self.flags)
        name = script_text(f"bench-{job.kind}-{job.config['profile']}",
                           "the job name (from the profile's `profile:` key or file name)")
        params = {**request.resources.executor_parameters(), "tasks_per_node": request.processes,
                  "name": name}
        if dependency:
            sid = script_text(dependency, "the scheduler job id (from the sweep's sweep.json)")
            params["slurm_dependency"] = f"afterok:{sid}"
        return params

    def _executor(self, folder: Path, job: Job, dependency: str | None) -> Any:
        import submitit

        ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster,
                                   slurm_max_num_timeout=job_request(job, self.flags).resources.max_requeues)
        ex.update_parameters(**self.parameters(job, dependency))
        return ex

    def preflight(self, jobs: Sequence[Job], folder: Path) -> None:
        """Before anything is submitted: every value of every job's batch script (any cluster),
        then, under Slurm, that the cluster answers and can take every resource request."""
        script_text(folder, "the log folder (from --sweeps / --out)")
        for job in jobs:
            self.parameters(job, None)
        if self.cluster == "slurm" and jobs:
            require_slurm()
            requests = [job_request(job, self.flags) for job in jobs]
            check_resources((request.resources, request.processes) for request in requests)

    def submit(self, jobs: Sequence[Job], paths: Paths,
               running: Mapping[str, str] | None = None) -> list[Submission]:
        """Submit what is not done yet; under Slurm returns at once, else runs the pretraining
        jobs before submitting the tasks that need them."""
        running = dict(running or {})
        subs = {job.job_id: Submission(job) for job in jobs}
        todo = []
        for job in jobs:
            if is_done(job, paths.store(job.config["profile"])) and not self.force:
                subs[job.job_id].outcome = Outcome(job.job_id, job.label, OutcomeStatus.CACHED,
                                                   "already done")
            elif job.job_id not in running:
                todo.append(job)
        folder = self.log_folder(paths)
        self.preflight(todo, folder)
        self.job_logs = str(folder / "%j")
        for job in (j for j in todo if j.kind == "pretrain"):
            ex = self._executor(folder, job, None)
            subs[job.job_id].handle = ex.submit(self.callable(job, paths))
        groups: dict[tuple[str | None, tuple[str, ...]], list[Job]] = defaultdict(list)
        for job in (j for j in todo if j.kind != "pretrain"):
            dependency = self._dependency(job, subs, running)
            if dependency is False:
                failed = job.depends_on[0]
                subs[job.job_id].outcome = Outcome(job.job_id, job.label, OutcomeStatus.FAILED,
                                                   f"not started: dependency {failed} failed")
                continue
            key = (dependency, array_key(job_request(job, self.flags)))
            groups[key].append(job)
        for (dependency, _), group in groups.items():
            ex = self._executor(folder, group[0], dependency)
            with ex.batch():  # one job array; each element checkpointed and requeued on its own
                handles = [ex.submit(self.callable(job, paths)) for job in group]
            for job, handle in zip(group, handles):
                subs[job.job_id].handle = handle
        self.submissions = [subs[job.job_id] for job in jobs]
        return self.submissions

    def callable(self, job: Job, paths: Paths) -> CheckpointableJob:
        """What the scheduled process of ``job`` runs."""
        return CheckpointableJob(job, paths, self.force, self.resume, self.runner)

    def _dependency(self, job: Job, subs: Mapping[str, Submission],
                    running: Mapping[str, str]) -> str | None | bool:
        """Scheduler id a task must wait for (None: nothing to wait for; False: it failed).
        Off Slurm, the pretraining is run to its end here first."""
        for dep in job.depends_on:
            if dep in running:
                return running[dep]
            sub = subs.get(dep)
            if sub is None or sub.handle is None:
                if sub is not None and sub.outcome is not None and \
                        sub.outcome.status == OutcomeStatus.FAILED:
                    return False
                continue
            if self.cluster == "slurm":
                return sub.scheduler_id
            if await_outcome(sub).status == OutcomeStatus.FAILED:
                return False
        return None

    def wait(self) -> list[Outcome]:
        """Block until every job of the last submission ends; one Outcome per job, in order."""
        outcomes = []
        for sub in self.submissions:
            if sub.handle is None and sub.outcome is None:  # depended on, not resubmitted
                outcome = Outcome(sub.job.job_id, sub.job.label, OutcomeStatus.PENDING,
                                  EARLIER_SUBMISSION)
            else:
                outcome = await_outcome(sub)
            if self.on_outcome:
                self.on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes
