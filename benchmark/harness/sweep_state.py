"""The state file of a sweep (``<sweeps>/<name>/sweep.json``): what was planned, with which
code, and every submission (planned job id -> scheduler id), so that ``status`` can find the jobs
and a re-submission can tell what is still queued. Written atomically."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from benchmark.core import provenance
from benchmark.core.config import ConfigError
from benchmark.core.fields import safe_name
from benchmark.core.store import write_json_atomic
from benchmark.harness.jobs import Outcome, OutcomeStatus
from benchmark.harness.plan import Job

STATE_FILE = "sweep.json"
FORMAT = 1
TAMPERED_STATE_FIX = "the state file was altered or is corrupt: re-submit the sweep into a new folder"


def code_version() -> dict[str, Any]:
    """The code a sweep runs: git commit, dirty flag, and the library versions."""
    return {**provenance.git_state(), "versions": provenance.library_versions()}


def version_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for every code-version key that differs (empty when equal)."""
    lines = []
    for key in ("git_commit", "git_dirty"):
        if old.get(key) != new.get(key):
            lines.append(f"{key}: {old.get(key)} -> {new.get(key)}")
    old_v, new_v = old.get("versions", {}), new.get("versions", {})
    for lib in sorted(old_v.keys() | new_v.keys()):
        if old_v.get(lib) != new_v.get(lib):
            lines.append(f"{lib}: {old_v.get(lib)} -> {new_v.get(lib)}")
    return lines


def job_entry(job: Job) -> dict[str, Any]:
    """What the state file keeps of a planned job (enough for ``status``)."""
    return {"label": job.label, "kind": job.kind, "depends_on": list(job.depends_on),
            "pretrain_dir": job.pretrain_dir, "profile": job.config["profile"],
            "task": job.task, "encoder": job.encoder}


def outcome_entry(outcome: Outcome) -> dict[str, str]:
    """What the state file keeps of an outcome."""
    return {"status": str(outcome.status), "message": outcome.message}


@dataclass
class SweepState:
    """A sweep's planned jobs, code version and submissions."""

    path: Path
    spec: dict[str, Any]
    code: dict[str, Any]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> "SweepState":
        path = Path(folder) / STATE_FILE
        try:
            payload = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"no sweep state at {path}; start one with `python -m benchmark "
                              "run ...` or `sweep ...`, or pass the sweep folder") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"sweep state {path} is not valid JSON ({exc}); delete it and "
                              "re-submit the sweep (finished jobs are kept)") from None
        if payload.get("format") != FORMAT:
            raise ConfigError(f"sweep state {path} has format {payload.get('format')!r}, this "
                              f"code reads format {FORMAT}; re-submit the sweep into a new folder")
        for job_id, entry in payload["jobs"].items():  # both name files of the results folder
            safe_name(job_id, f"{path}: jobs key", TAMPERED_STATE_FIX)
            safe_name(entry.get("profile"), f"{path}: jobs.{job_id}.profile", TAMPERED_STATE_FIX)
        return cls(path, payload["spec"], payload["code"], payload["jobs"], payload["submissions"])

    def save(self) -> None:
        write_json_atomic(self.path, {"format": FORMAT, "spec": self.spec, "code": self.code,
                                      "jobs": self.jobs, "submissions": self.submissions})

    def plan(self, jobs: Sequence[Job]) -> None:
        """Add the planned jobs (a re-submission may plan jobs the first one did not)."""
        for job in jobs:
            self.jobs.setdefault(job.job_id, job_entry(job))

    def record(self, launcher: str, cluster: str | None, folder: str | None,
               scheduler_ids: Mapping[str, str], outcomes: Mapping[str, Outcome]) -> None:
        """Append one submission: scheduler ids of submitted jobs, outcomes already known."""
        self.submissions.append({
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "launcher": launcher, "cluster": cluster,
            "folder": folder, "scheduler_ids": dict(scheduler_ids),
            "outcomes": {k: outcome_entry(o) for k, o in outcomes.items()},
        })

    def note(self, outcome: Outcome) -> None:
        """Add the outcome of a job of the newest submission (one still pending is left out)."""
        if outcome.status != OutcomeStatus.PENDING:
            self.submissions[-1]["outcomes"][outcome.job_id] = outcome_entry(outcome)

    def latest(self, job_id: str) -> tuple[dict[str, Any] | None, str | None, dict | None]:
        """The newest submission that touched ``job_id``: (submission, scheduler id, outcome)."""
        for sub in reversed(self.submissions):
            sid = sub["scheduler_ids"].get(job_id)
            outcome = sub["outcomes"].get(job_id)
            if sid is not None or outcome is not None:
                return sub, sid, outcome
        return None, None, None
