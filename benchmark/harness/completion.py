"""When a planned job counts as done: the one check that the launchers, ``status``, the dry run
and the task runner share.

A pretraining is done when its ``encoder.pt`` loads as an encoder checkpoint (a truncated or
foreign file does not count: the job runs again and reports the file; the pretraining job itself
checks again, with the same loader, under its folder's lock: ``pretrain_unless_done``). A task is
done when its result file exists and, on a pretrained encoder, was computed from that encoder as
it is now (same checkpoint hash): a retrained encoder, e.g. in a fresh clone beside committed
results, is evaluated again.
"""
from __future__ import annotations

import functools
from pathlib import Path

from benchmark.core import provenance
from benchmark.core.safe_load import LoadError
from benchmark.core.store import ResultStore
from benchmark.engine.encoder_file import ENCODER_FILE
from benchmark.harness.plan import Job
from benchmark.models.encoders import read_encoder_checkpoint


def encoder_path(pretrain_dir: str | Path) -> Path:
    """The encoder a pretraining run folder holds once it is finished."""
    return Path(pretrain_dir) / ENCODER_FILE


def encoder_loads(path: Path) -> bool:
    """Whether ``path`` is an encoder checkpoint that loads (read without running code).
    Memoised per (path, size, mtime): ``status`` and the dry run ask for every job's encoder,
    and a pretraining's tasks ask again; an unchanged file is read once."""
    if not path.is_file():
        return False
    stat = path.stat()
    return _encoder_loads(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _encoder_loads(path: str, size: int, mtime_ns: int) -> bool:
    try:
        read_encoder_checkpoint(Path(path))
    except LoadError:
        return False
    return True


def task_result_is_current(store: ResultStore, job_id: str, encoder: str, pretrain_dir: str) -> bool:
    """A task's result exists and, for a pretrained encoder, that encoder still exists and is the
    one the result was computed from (same checkpoint hash)."""
    stored = store.load_job(job_id)
    if stored is None:
        return False
    if encoder != "pretrained":
        return True
    checkpoint = encoder_path(pretrain_dir)
    hashes = {r.get("checkpoint_hash") for r in stored.get("records", [])}
    return checkpoint.is_file() and hashes == {provenance.file_hash(checkpoint)}


def result_is_current(job: Job, store: ResultStore) -> bool:
    """:func:`task_result_is_current` for a planned task job."""
    return task_result_is_current(store, job.job_id, job.encoder, job.pretrain_dir)


def finished_path(kind: str, pretrain_dir: str, store: ResultStore, job_id: str,
                  encoder: str = "pretrained") -> Path | None:
    """What a finished job left: its encoder (a pretraining; only one that loads) or its result
    file (a task; only one computed from the current encoder); None when the job is not done."""
    if kind == "pretrain":
        path = encoder_path(pretrain_dir)
        return path if encoder_loads(path) else None
    return store.path(job_id) if task_result_is_current(store, job_id, encoder, pretrain_dir) else None


def is_done(job: Job, store: ResultStore) -> bool:
    """Whether ``job`` is done (see :func:`finished_path`); ``store`` holds its profile's results."""
    return finished_path(job.kind, job.pretrain_dir, store, job.job_id, job.encoder) is not None
