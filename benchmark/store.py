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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from benchmark.atomic import atomic_open
from benchmark.fields import safe_name

TAMPERED_FIX = "the file was altered or is corrupt: restore it, or delete it and re-run its job"


@dataclass(frozen=True)
class ResultRecord:
    """One metric of one job, with everything needed to trust and regroup it."""

    method: str
    method_config: dict[str, Any]
    encoder: str  # pretrained | random | pixels
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
        path = self.path(job_id)
        try:
            with open(path) as fh:
                payload = json.load(fh)
        except (OSError, json.JSONDecodeError):
            return None
        return check_names(payload, path)

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
            with open(path) as fh:
                payload = check_names(json.load(fh), path)
            if not self.is_done(payload["job"]["job_id"]):
                yield payload

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record of every job file under the root (sorted by file name)."""
        for path in sorted(self.root.glob("*.json")):
            try:
                with open(path) as fh:
                    payload = json.load(fh)
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"result file {path} is not valid JSON ({exc}); delete it "
                                 "and re-run its job") from None
            yield from check_names(payload, path).get("records", [])
