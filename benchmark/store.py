"""Result store: one JSON file per finished job, holding one record per metric.

``results/<profile>/<job_id>.json`` = ``{"job": {...}, "records": [ResultRecord, ...]}``. Files
are written atomically (temp file in the same folder + ``os.replace``), so a crash leaves either
the old file or the new one, never half of one. Reports are computed from these records alone.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from benchmark.atomic import atomic_open


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


class ResultStore:
    """The folder of job result files of one profile (``results/<profile>``)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def is_done(self, job_id: str) -> bool:
        """A job is done when its result file exists and parses."""
        return self.load_job(job_id) is not None

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        try:
            with open(self.path(job_id)) as fh:
                return json.load(fh)
        except (OSError, json.JSONDecodeError):
            return None

    def save(self, job: dict[str, Any], records: Iterable[ResultRecord]) -> Path:
        """Write the job's records atomically; returns the file path."""
        path = self.path(job["job_id"])
        write_json_atomic(path, {"job": job, "records": [asdict(r) for r in records]})
        return path

    def skip_path(self, job_id: str) -> Path:
        return self.root / "skipped" / f"{job_id}.json"

    def save_skip(self, job: dict[str, Any], reason: str) -> Path:
        """Record that a job did not run and why (e.g. its dataset is missing)."""
        path = self.skip_path(job["job_id"])
        write_json_atomic(path, {"job": job, "reason": reason})
        return path

    def skips(self) -> Iterator[dict[str, Any]]:
        """``{"job": ..., "reason": ...}`` of every skipped job whose result is not stored."""
        for path in sorted((self.root / "skipped").glob("*.json")):
            with open(path) as fh:
                payload = json.load(fh)
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
            yield from payload.get("records", [])
