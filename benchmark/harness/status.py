"""``python -m benchmark status [SWEEP]``: where every job of a sweep stands.

A job is ``done`` when the one done check says so (:mod:`benchmark.harness.completion`: an
encoder that loads, a result computed from the current encoder), and only then. Otherwise the
newest submission decides: under Slurm the scheduler's state (``sacct`` through submitit):
``pending`` / ``running`` / ``failed`` (with the last lines of its log and the log's path);
off Slurm the outcome recorded when the job ran. A job never submitted, or reported finished
while what it left is gone, outdated or does not load, is ``missing``.

A sweep folder is trusted input: submitit's result pickles are unpickled to read a job's
outcome. Status reads them only inside the sweep's own folder (``<sweep>/logs/``), so a
``sweep.json`` cannot point it at a pickle elsewhere.
"""
from __future__ import annotations

import argparse
import re
import subprocess
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Mapping

from benchmark.core.store import ResultStore
from benchmark.harness.completion import finished_path
from benchmark.harness.jobs import OutcomeStatus
from benchmark.harness.submitit_launcher import LOG_TAIL_LINES, last_line, log_tail
from benchmark.harness.sweep_state import SweepState


class JobState(StrEnum):
    """Where a planned job stands (``JobStatus.state``)."""

    DONE = "done"  # the done check passes
    SKIPPED = "skipped"  # a task that could not run here (its outcome says why)
    PENDING = "pending"  # queued by the scheduler
    RUNNING = "running"  # running under the scheduler
    FAILED = "failed"  # it raised or was cancelled, or a job it needs failed
    MISSING = "missing"  # never submitted, or what it left is gone, outdated or does not load
    UNKNOWN = "unknown"  # no outcome recorded and no scheduler that knows it


PENDING_STATES = {"PENDING", "REQUEUED", "RESIZING", "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT"}
ACTIVE = (JobState.PENDING, JobState.RUNNING)
SLURM_JOB_ID = re.compile(r"\d+(_\d+)?")  # a job, or one task of a job array
FINISHED = (OutcomeStatus.DONE, OutcomeStatus.CACHED)
REPORTED_STATES = {OutcomeStatus.SKIPPED: JobState.SKIPPED, OutcomeStatus.FAILED: JobState.FAILED}
STALE = ("reported finished, but what it left is gone, outdated (a retrained encoder) or does not "
         "load; run or submit it again")


@dataclass(frozen=True)
class JobStatus:
    """One job's state, where to look (result file or log), and why it failed."""

    job_id: str
    label: str
    state: JobState
    scheduler_id: str | None = None
    path: str | None = None
    detail: str = ""


def reported(job_id: str, label: str, status: str, message: str, scheduler_id: str | None,
             path: str | None) -> JobStatus:
    """The status of a job the done check did not find done, from the outcome its run reported."""
    if status in FINISHED:
        return JobStatus(job_id, label, JobState.MISSING, scheduler_id, path, STALE)
    state = REPORTED_STATES.get(status)
    if state is None:
        return JobStatus(job_id, label, JobState.UNKNOWN, scheduler_id, path,
                         f"its run reported {status!r}: {message}")
    return JobStatus(job_id, label, state, scheduler_id, path, message)


def _scheduler_job(submission: Mapping[str, Any], scheduler_id: str) -> Any:
    import submitit

    return submitit.SlurmJob(folder=submission["folder"], job_id=scheduler_id)


def scheduler_state(handle: Any) -> str:
    """Slurm state of a job from ``sacct`` (through submitit); ``squeue`` while accounting has
    not recorded the job yet (it lags a new submission by a moment)."""
    state = (handle.state or "UNKNOWN").split()[0].upper()
    if state != "UNKNOWN":
        return state
    queued = subprocess.run(["squeue", "-h", "-o", "%T", "-j", str(handle.job_id)],
                            capture_output=True, text=True, timeout=60)
    words = queued.stdout.split() if queued.returncode == 0 else []
    return words[0].upper() if words else "UNKNOWN"


def _finished_slurm_job(job_id: str, label: str, sid: str, handle: Any, state: str,
                        tail_lines: int) -> JobStatus:
    stdout = str(handle.paths.stdout)
    if state == "COMPLETED" or handle.paths.result_pickle.exists():
        try:
            outcome = handle.results()[0]
            return reported(job_id, label, outcome.status, outcome.message, sid, stdout)
        except Exception as exc:  # noqa: BLE001  (the job's own error: shown, not raised)
            reason = last_line(exc)
    elif state == "CANCELLED":
        reason = "cancelled (by a user, or because the job it waits for failed)"
    else:
        reason = f"scheduler state {state}"
    return JobStatus(job_id, label, JobState.FAILED, sid, stdout,
                     f"{reason}\n{log_tail(handle, tail_lines)}".strip())


def foreign_files(state: SweepState, submission: Mapping[str, Any], scheduler_id: str) -> str:
    """Why status must not read the files of job ``scheduler_id`` of ``submission`` ('' when it
    may): its log folder (``%j`` = the id) has to lie inside the sweep's own folder."""
    if not SLURM_JOB_ID.fullmatch(str(scheduler_id)):
        return f"scheduler id {scheduler_id!r} in {state.path} is no Slurm job id; its files are not read"
    folder = Path(str(submission.get("folder") or "").replace("%j", str(scheduler_id))).resolve()
    sweep = state.path.parent.resolve()
    if not folder.is_relative_to(sweep):
        return (f"its log folder {folder} (named in {state.path}) lies outside the sweep folder "
                f"{sweep}, so its files are not read; re-submit the sweep")
    return ""


def job_status(state: SweepState, job_id: str, results_root: Path,
               tail_lines: int = LOG_TAIL_LINES) -> JobStatus:
    """The status of one planned job of ``state``."""
    entry = state.jobs[job_id]
    label = entry["label"]
    done = finished_path(entry["kind"], entry["pretrain_dir"],
                         ResultStore(Path(results_root) / entry["profile"]), job_id,
                         entry.get("encoder") or "pretrained")
    submission, sid, outcome = state.latest(job_id)
    if done is not None:
        return JobStatus(job_id, label, JobState.DONE, sid, str(done))
    if submission is None:
        return JobStatus(job_id, label, JobState.MISSING, detail="never submitted")
    if sid is not None and submission["cluster"] == "slurm":
        refused = foreign_files(state, submission, sid)
        if refused:
            return JobStatus(job_id, label, JobState.UNKNOWN, sid, detail=refused)
        handle = _scheduler_job(submission, sid)
        sched = scheduler_state(handle)
        if sched in PENDING_STATES:
            return JobStatus(job_id, label, JobState.PENDING, sid, str(handle.paths.stdout))
        if sched in RUNNING_STATES:
            return JobStatus(job_id, label, JobState.RUNNING, sid, str(handle.paths.stdout))
        if sched == "UNKNOWN" and not handle.paths.result_pickle.exists():
            return JobStatus(job_id, label, JobState.UNKNOWN, sid, str(handle.paths.stdout),
                             "the scheduler no longer knows this job and it left no result")
        return _finished_slurm_job(job_id, label, sid, handle, sched, tail_lines)
    if outcome is not None:
        return reported(job_id, label, outcome["status"], outcome["message"], sid,
                        submission.get("folder"))
    where = submission["cluster"] or f"{submission['launcher']} (in the process that submitted it)"
    return JobStatus(job_id, label, JobState.UNKNOWN, sid, submission.get("folder"),
                     f"submitted to {where}, but no outcome was recorded: still running, or that "
                     "process stopped before it ended")


def sweep_status(state: SweepState, results_root: Path,
                 tail_lines: int = LOG_TAIL_LINES) -> list[JobStatus]:
    """Status of every planned job, in plan order."""
    return [job_status(state, job_id, results_root, tail_lines) for job_id in state.jobs]


def latest_sweep(root: Path) -> Path:
    """The most recently written sweep folder under ``root``."""
    found = sorted(Path(root).glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no sweep under {root}/; start one with `python -m benchmark "
                                "run ...` or `sweep ...`, or pass --sweeps DIR")
    return found[-1].parent


def resolve_sweep(name: str | None, root: Path) -> Path:
    """A sweep folder from a name under ``root``, a path, or (None) the latest one."""
    if name is None:
        return latest_sweep(root)
    for candidate in (Path(name), Path(root) / name):
        if (candidate / "sweep.json").is_file():
            return candidate
    known = sorted(p.parent.name for p in Path(root).glob("*/sweep.json"))
    raise FileNotFoundError(f"no sweep {name!r} (looked for {name}/sweep.json and "
                            f"{Path(root) / name}/sweep.json); sweeps under {root}: "
                            f"{', '.join(known) or 'none'}")


def format_status(rows: list[JobStatus]) -> str:
    """A table line per job, failure details indented below it, then the counts."""
    lines = []
    for row in rows:
        where = f"  {row.path}" if row.path else ""
        sid = row.scheduler_id or "-"
        lines.append(f"{row.state:<8} {row.job_id}  {sid:<10} {row.label}{where}")
        if row.detail and row.state not in (JobState.DONE, *ACTIVE):
            lines.extend(f"    {line}" for line in row.detail.splitlines())
    counts = Counter(row.state for row in rows)
    lines.append(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    folder = resolve_sweep(args.sweep, args.sweeps)
    state = SweepState.load(folder)
    rows = sweep_status(state, args.results, args.lines)
    print(f"sweep {folder} ({len(rows)} jobs)")
    print(format_status(rows))
    return 0
