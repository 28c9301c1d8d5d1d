"""Synthetic result records for the report tests (built with the real ResultRecord)."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from benchmark.core.store import ResultRecord, ResultStore
from benchmark.report.frame import TaskInfo

TASKS = {  # as the registered tasks declare them
    "linear": TaskInfo("Table 1", "ImageNet", ("top1", "top5")),
    "linear_multilayer": TaskInfo("Table 1", "ImageNet", ("top1", "top5")),
    "places205_linear": TaskInfo("Table 1", "Places205", ("top1", "top5")),
    "semisup": TaskInfo("Table 2", "1% / 10% labels (top-5)",
                        ("top1_1pct", "top5_1pct", "top1_10pct", "top5_10pct")),
    "transfer": TaskInfo("Table 3", "CIFAR10 / CIFAR100 / VOC07 / Caltech101 / Cars / Pets / Flowers",
                         ("top1", "mean_per_class", "voc11_map", "voc11_map_pr")),
    "detection": TaskInfo("Table 4", "VOC07+12 detection", ("AP", "AP50", "AP75"),
                          metric_units="percent"),
    "voc07_lbfgs": TaskInfo("Table 1", "VOC07", ("voc11_map", "voc11_map_pr")),
    "knn": TaskInfo(None, None, ("top1", "top5")),
}
INVP_CONFIG = {"name": "invp", "temperature": 0.2, "k": 4, "steps": 3, "n_pos": 20,
               "n_background": 4096, "hard_positive": True, "memory_momentum": 0.5,
               "exclusive": True, "propagation": "concat", "lam": 0.6,
               "ramp": {"type": "binary", "length": 3}}

BASE = ResultRecord(
    method="invp", method_config=INVP_CONFIG, encoder="pretrained", backbone="resnet50",
    pretrain_epochs=800, task="linear", dataset="imagenet", split="val", metric="top1",
    value=0.5, seed=0, profile="imagenet", job_id="job0", config_hash="cfg0",
    checkpoint_hash="ckpt0", git_commit="abcdef1234567890", git_dirty=False,
    versions={"torch": "2"}, host="h", device="cpu", wall_time_s=1.0,
    started_at="2026-11-25T10:00:00+00:00",
)


def record(**changes: Any) -> dict[str, Any]:
    """A record dict: BASE with ``changes`` (job_id and config_hash follow the seed)."""
    seed = changes.get("seed", BASE.seed)
    changes.setdefault("job_id", f"job-{changes.get('method', 'invp')}-{changes.get('task', 'linear')}-{seed}")
    changes.setdefault("config_hash", f"cfg{seed}")
    return asdict(replace(BASE, **changes))


def seeds(values: Iterable[float], **changes: Any) -> list[dict[str, Any]]:
    """One record per value, seeds 0, 1, 2, ..."""
    return [record(value=v, seed=s, **changes) for s, v in enumerate(values)]


def save(folder: Path, records: Iterable[dict[str, Any]],
         configs: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Store records one job file per job_id under ``folder`` (a results/<profile> folder);
    ``configs``: the job config to store with a job id."""
    store = ResultStore(folder)
    by_job: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_job.setdefault(r["job_id"], []).append(r)
    for job_id, recs in by_job.items():
        job = {"job_id": job_id, **({"config": configs[job_id]} if configs and job_id in configs else {})}
        store.save(job, [ResultRecord(**r) for r in recs])
    return folder
