"""The report frame: one row per result record (and per recorded skip), with the report row,
the paper cell it fills and the task's metadata; what the tables and figures are computed from."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.core.store import ResultStore
from benchmark.data import available_datasets
from benchmark.report.paper_tables import OTHER_TABLE, PaperData, PaperTable
from benchmark.report.rows import RowKey, label_rows, row_attributes, row_key
from tasks.base import available_tasks

HELD_OUT_SPLITS = ("holdout",)  # selection splits: never a reported number
DIRTY_MARK, FEW_SEEDS_MARK, TOLERANCE_MARK = "†", "‡", "⚠"
NOT_RUN = "not run"
NOT_IN_SUITE = "—"
DEFAULT_EXPECTED_SEEDS = 3
# A task's metrics are shown x100 when its ``metric_units`` are "fraction" (tasks/base.py Task) and
# as they are when "percent" or "native"; a task unknown here: x100 when every value is in [0, 1].
AS_RECORDED_UNITS = ("percent", "native")
FEW_CLASSES = 50  # below it a stand-in reports top-1 where the paper reports top-5
TOP1, TOP5 = "top1", "top5"


@dataclass(frozen=True)
class TaskInfo:
    """What the report needs of a task: the paper table and column it fills, its metrics."""

    paper_table: str | None
    paper_column: str | None
    metrics: tuple[str, ...]
    label_setting: str | None = None  # shown in the column header, e.g. the kNN task's layer
    metric_units: str = "fraction"  # Task.metric_units: fraction (shown x100) | percent | native


def registry_task_info() -> dict[str, TaskInfo]:
    """TaskInfo of every registered task."""
    return {
        name: TaskInfo(cls.paper_table, cls.paper_column, tuple(cls.metrics), cls.label_setting,
                       cls.metric_units)
        for name, cls in available_tasks().items()
    }


def _skip_records(skips: Iterable[Mapping[str, Any]], tasks: Mapping[str, TaskInfo]) -> list[dict]:
    """Pseudo-records (value NaN, ``skip_reason`` set) for jobs that recorded a skip."""
    out = []
    for skip in skips:
        job = skip["job"]
        config = job.get("config", {})
        task = job.get("task", "")
        encoder = job.get("encoder", "pretrained")
        info = tasks.get(task)
        metrics = info.metrics if info and info.metrics else ("",)
        settings = config.get("tasks", {}).get(task, {})
        datasets = settings.get("datasets") or [settings.get("dataset", "")]
        method_config = config.get("method", {}) if encoder == "pretrained" else {}
        base = {
            "method": job.get("method", method_config.get("name", encoder)),
            "profile": config.get("profile"),
            "method_config": method_config,
            "encoder": encoder,
            "task": task,
            "split": "test",
            "value": math.nan,
            "seed": config.get("seed"),
            "job_id": job.get("job_id"),
            "skip_reason": str(skip.get("reason", "")).split(":")[0].strip() or "skipped",
            "extra": {**settings, **({"weights": job["weights"]} if "weights" in job else {})},
        }
        base["row_key"] = row_key({**base, "backbone": None, "pretrain_epochs": None}, config)
        out.extend({**base, "dataset": str(d), "metric": m} for d in datasets for m in metrics)
    return out


def _column_label(rec: Mapping[str, Any], tasks: Mapping[str, TaskInfo]) -> str:
    """``task: metric (dataset)``, plus the task's ``label_setting`` and its value when the record
    (or the skipped job's settings) names one: ``knn: top1 (cifar10, layer embedding)``."""
    info = tasks.get(rec["task"])
    extra = rec.get("extra")
    value = extra.get(info.label_setting) if info and info.label_setting and isinstance(extra, Mapping) else None
    detail = f", {info.label_setting} {value}" if value is not None else ""
    return f"{rec['task']}: {rec['metric']} ({rec['dataset']}{detail})"


def records_frame(
    records: Iterable[dict[str, Any]],
    skips: Iterable[Mapping[str, Any]] = (),
    tasks: Mapping[str, TaskInfo] | None = None,
) -> pd.DataFrame:
    """Records (plus skip pseudo-records) as a DataFrame with ``row`` and ``column`` labels.
    A record may carry its ``row_key`` (``rows.row_key`` with its job's config); else it is
    computed from the record alone."""
    tasks = registry_task_info() if tasks is None else tasks
    frame = pd.DataFrame(list(records) + _skip_records(skips, tasks))
    if frame.empty:
        return frame
    if "skip_reason" not in frame:
        frame["skip_reason"] = None
    keys = [k if isinstance(k, RowKey) else row_key(rec)
            for k, rec in zip(frame.get("row_key", [None] * len(frame)), frame.to_dict("records"))]
    frame["row_base"] = [k.base for k in keys]
    frame["setup"] = [dict(k.setup) for k in keys]
    frame["setup_id"] = [k.setup_id for k in keys]
    frame["row"] = label_rows(frame)
    frame[["row_head", "row_epochs", "row_backbone"]] = [row_attributes(s) for s in frame["setup"]]
    frame = frame.drop(columns="row_key", errors="ignore")
    frame["column"] = [_column_label(rec, tasks) for rec in frame.to_dict("records")]
    frame["scale"] = frame.groupby(["task", "metric"])["value"].transform(
        lambda v: _scale(tasks.get(v.name[0]), v)
    )
    return frame


def _scale(info: TaskInfo | None, values: pd.Series) -> float:
    """The factor that puts one (task, metric)'s values in report units."""
    if info is not None:
        return 1.0 if info.metric_units in AS_RECORDED_UNITS else 100.0
    return 1.0 if values.abs().max() > 1.0 else 100.0


def _class_count(dataset: str) -> int | None:
    spec = available_datasets().get(dataset)
    return spec.num_classes if spec is not None else None


def column_metric(metric: str, dataset: str, table: PaperTable) -> tuple[str | None, str]:
    """(the paper metric a record fills, header note). On a stand-in with fewer than
    ``FEW_CLASSES`` classes a top-5 is near 100 % for every encoder, so a top-1 record fills the
    paper's top-5 column (note ``, top-1: 10 classes``) and the top-5 record none (None)."""
    classes = _class_count(dataset)
    few = classes is not None and classes < FEW_CLASSES
    if not few or not (TOP5 in metric or TOP1 in metric):
        return metric, ""
    if TOP5 in metric and table.has_metric(metric):
        return None, ""
    top5 = metric.replace(TOP1, TOP5)
    if TOP1 in metric and not table.has_metric(metric) and table.has_metric(top5):
        return top5, f", top-1: {classes} classes"
    return metric, ""


def place_cells(frame: pd.DataFrame, paper: PaperData, tasks: Mapping[str, TaskInfo]) -> pd.DataFrame:
    """One line per (record, table it appears in): ``table``, ``paper_column``, ``label``,
    ``comparable`` (record on the paper's dataset). Held-out selection numbers are left out."""
    placed = []
    for rec in frame.to_dict("records"):
        if rec["split"] in HELD_OUT_SPLITS:
            continue
        info = tasks.get(rec["task"])
        if info is None or info.paper_table not in paper.tables:
            if info is None or not info.metrics or rec["metric"] in info.metrics:
                placed.append({**rec, "table": OTHER_TABLE, "paper_column": None,
                               "label": rec["column"], "comparable": False})
            continue
        table = paper.tables[info.paper_table]
        metric, note = column_metric(rec["metric"], rec["dataset"], table)
        if metric is None:
            continue
        column = table.column(info.paper_column, rec["dataset"], metric)
        if column is None:
            if table.has_metric(rec["metric"]):  # a stand-in the columns cannot tell apart
                placed.append({**rec, "table": table.key, "paper_column": None,
                               "label": f"{rec['task']}: {rec['metric']} (stand-in: {rec['dataset']})",
                               "comparable": False})
            continue
        comparable = column.is_paper_dataset(rec["dataset"])
        label = column.name if comparable else f"{column.name} (stand-in: {rec['dataset']}{note})"
        variant = paper.map_variant(rec["task"], rec["metric"])
        label += f" [{variant}]" if variant else ""
        targets = [table] + [t for t in paper.tables.values() if t.from_table == table.key]
        for target in targets:
            if column.name in {c.name for c in target.columns}:
                placed.append({**rec, "table": target.key, "paper_column": column.name,
                               "label": label, "comparable": comparable})
    cells = pd.DataFrame(placed)
    if cells.empty:
        return cells
    tasks_per_label = cells.groupby(["table", "label"])["task"].transform("nunique")
    cells.loc[tasks_per_label > 1, "label"] = (
        cells["label"] + " [" + cells["task"] + "]"
    )[tasks_per_label > 1]
    return cells


def _known(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def paper_counterpart(spec: PaperTable, row: str, lines: pd.DataFrame, same_scale: bool) -> str | None:
    """The paper row our ``row`` is compared with in ``spec``, from the head, epochs and backbone
    of its records ``lines`` (none: a row not run, matched on its label)."""
    if lines.empty:
        return spec.paper_row(row, same_scale=same_scale)
    first = lines.iloc[0]
    return spec.paper_row(row, _known(first["row_head"]), _known(first["row_epochs"]),
                          _known(first["row_backbone"]), same_scale)


CELL = ["row", "task", "dataset", "split", "metric"]  # what one report cell pools over seeds


def cell_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std and seed count (``n``) per ``CELL`` of ``frame``'s values, in report
    units."""
    scaled = frame["value"] * frame["scale"]
    grouped = scaled.groupby([frame[c] for c in CELL])
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1),
                         "n": frame.groupby(CELL)["seed"].nunique()})


def load_frame(results_dir: Path, profile: str,
               tasks: Mapping[str, TaskInfo] | None = None) -> pd.DataFrame:
    """Records and recorded skips of ``results_dir/profile`` as a report frame."""
    return folder_frame(Path(results_dir) / profile, tasks)


def folder_frame(folder: Path, tasks: Mapping[str, TaskInfo] | None = None,
                 skips: bool = True) -> pd.DataFrame:
    """Records (with their jobs' configs, for the rows) and, with ``skips``, recorded skips of
    one result folder as a report frame."""
    store = ResultStore(folder)
    records = [{**rec, "row_key": row_key(rec, payload["job"].get("config"))}
               for payload in store.job_files() for rec in payload["records"]]
    return records_frame(records, store.skips() if skips else (), tasks)
