"""Result store: one JSON file per finished job, holding one record per metric.

``results/<profile>/<job_id>.json`` = ``{"job": {...}, "records": [ResultRecord, ...]}``. Files
are written atomically (temp file in the same folder + ``os.replace``), so a crash leaves either
the old file or the new one, never half of one. Reports are computed from these records alone.

Names in a file that build paths when read back (job ids, the job's profile and method) must be
safe names; a file whose names are not is refused with its path and field: it was altered or is
corrupt, and following it could open files outside the results or runs folders.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from benchmark.core.atomic import atomic_open
from benchmark.core.errors import BadFileError
from benchmark.core.fields import safe_name

TAMPERED_FIX = "the file was altered or is corrupt: restore it, or delete it and re-run its job"


@dataclass(frozen=True)
class ResultRecord:
    """One metric of one job, with everything needed to trust and regroup it."""

    method: str
    method_config: dict[str, Any]
    encoder: str  # pretrained | random | pixels | external
    backbone: str
    pretrain_epochs: int
    task: str
    dataset: str
    split: str
    metric: str
    value: float
    seed: int
    profile: str
    job_id: str
    config_hash: str
    checkpoint_hash: str | None
    git_commit: str | None
    git_dirty: bool | None
    versions: dict[str, str]
    host: str
    device: str
    wall_time_s: float
    started_at: str
    extra: dict[str, Any] = field(default_factory=dict)
    # provenance.accelerator_info: cuda, cudnn, driver, gpu (None on CPU), world_size; {} in
    # records written before it was recorded
    accelerator: dict[str, Any] = field(default_factory=dict)


RECORD_FIELDS = tuple(f.name for f in fields(ResultRecord)
                      if f.default is MISSING and f.default_factory is MISSING)
JOB_FILE_FIX = "delete it and re-run its job (the same `run` or `sweep` command)"


def read_job_file(path: Path, content: str = "records") -> dict[str, Any]:
    """A job file: ``{"job": {...}, "records": [...]}`` (``content="records"``, every record with
    every ResultRecord field) or a skip ``{"job": {"job_id": ...}, "reason": ...}``
    (``content="reason"``). A truncated or malformed file raises BadFileError naming it."""
    kind = "skip file" if content == "reason" else "result file"
    with open(path) as fh:
        try:
            payload = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadFileError(f"{kind} {path} is not valid JSON ({exc}); {JOB_FILE_FIX}") from None
    problem = _job_file_problem(payload, content)
    if problem:
        raise BadFileError(f"{kind} {path} {problem}; {JOB_FILE_FIX}")
    return check_names(payload, path)


def _job_file_problem(payload: Any, content: str) -> str | None:
    """What is wrong with the shape of a parsed job file (None: nothing)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("job"), dict):
        return f"holds {json.dumps(payload)[:40]} instead of {{\"job\": {{...}}, \"{content}\": ...}}"
    if content == "reason":
        return None if "reason" in payload and "job_id" in payload["job"] else \
            "lacks 'reason' or 'job.job_id'"
    records = payload.get("records")
    if not isinstance(records, list):
        return "has no 'records' list"
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            return f"record {i} is not an object"
        missing = [k for k in RECORD_FIELDS if k not in record]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            return f"record {i} lacks field(s) {', '.join(missing[:5])}{more}"
    return None


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True, default=str))


PATH_FIELDS = ("job.job_id", "job.config.profile", "job.config.method.name")  # of a job file
RECORD_PATH_FIELDS = ("job_id", "profile")  # of each of its records


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def check_names(payload: Any, path: Path) -> Any:
    """``payload`` (a result or skip file's content) when every name in it that builds a path is
    a safe name; else a ConfigError naming ``path`` and the field."""
    named = {field_name: _lookup(payload, field_name) for field_name in PATH_FIELDS}
    records = _lookup(payload, "records") or []
    for index, record in enumerate(records if isinstance(records, list) else []):
        named.update({f"records[{index}].{name}": _lookup(record, name) for name in RECORD_PATH_FIELDS})
    for field_name, value in named.items():
        if value is not None:
            safe_name(value, f"{path}: {field_name}", TAMPERED_FIX)
    return payload


class ResultStore:
    """The folder of job result files of one profile (``results/<profile>``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, job_id: str) -> Path:
        return self.root / f"{safe_name(job_id, 'job id')}.json"

    def is_done(self, job_id: str) -> bool:
        """A job is done when its result file exists and parses."""
        return self.load_job(job_id) is not None

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's stored file, or None when it is missing or damaged (the job runs again)."""
        try:
            return read_job_file(self.path(job_id))
        except (OSError, BadFileError):
            return None

    def save(self, job: dict[str, Any], records: Iterable[ResultRecord]) -> Path:
        """Write the job's records atomically; returns the file path."""
        path = self.path(job["job_id"])
        write_json_atomic(path, {"job": job, "records": [asdict(r) for r in records]})
        return path

    def skip_path(self, job_id: str) -> Path:
        return self.root / "skipped" / f"{safe_name(job_id, 'job id')}.json"

    def save_skip(self, job: dict[str, Any], reason: str) -> Path:
        """Record that a job did not run and why (e.g. its dataset is missing)."""
        path = self.skip_path(job["job_id"])
        write_json_atomic(path, {"job": job, "reason": reason})
        return path

    def skips(self) -> Iterator[dict[str, Any]]:
        """``{"job": ..., "reason": ...}`` of every skipped job whose result is not stored."""
        for path in sorted((self.root / "skipped").glob("*.json")):
            payload = read_job_file(path, content="reason")
            if not self.is_done(payload["job"]["job_id"]):
                yield payload

    def job_files(self) -> Iterator[dict[str, Any]]:
        """``{"job": ..., "records": [...]}`` of every job file under the root (sorted by name)."""
        for path in sorted(self.root.glob("*.json")):
            yield read_job_file(path)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of every job file under the root (sorted by file name)."""
        for payload in self.job_files():
            yield from payload["records"]
