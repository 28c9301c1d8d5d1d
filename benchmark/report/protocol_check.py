"""The protocol self-check: our numbers on public checkpoints against the numbers published for
them (``paper/published_checkpoints.yaml``).

A record answers a published number when it was computed on external weights named after the
checkpoint (``extra["weights"]["name"]``, the weights list's key) by the same task, metric and
dataset; its mean over seeds (in percent) is "ours". The table says, per checkpoint and metric:
expected, ours, delta = ours - expected, and whether |delta| is within the entry's tolerance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from benchmark.core.config import read_yaml_file
from benchmark.core.errors import BadFileError
from benchmark.models.external_encoder import EXTERNAL

PUBLISHED_FILE = Path(__file__).resolve().parent / "paper" / "published_checkpoints.yaml"
EXPECTED_KEYS = ("task", "metric", "dataset", "value", "tolerance", "source")
CHECKPOINT_KEYS = ("title", "format", "url", "expected")
REPORTED_SPLITS_EXCLUDED = ("holdout",)  # selection-only scores: never compared


@dataclass(frozen=True)
class Expected:
    """One published number: the records that answer it, its value and how close counts."""

    task: str
    metric: str
    dataset: str
    value: float
    tolerance: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A public checkpoint: its name (the weights list's key), where it is, how to read it and
    the numbers published for it."""

    key: str
    title: str
    format: str
    url: str
    expected: tuple[Expected, ...]


def _fields(entry: Any, keys: tuple[str, ...], where: str, path: Path) -> Mapping[str, Any]:
    if not isinstance(entry, Mapping) or any(key not in entry for key in keys):
        raise BadFileError(f"{path}: {where} must be a mapping with {', '.join(keys)}; fix the file")
    return entry


def published_checkpoints(path: Path = PUBLISHED_FILE) -> dict[str, PublishedCheckpoint]:
    """The checkpoints of the published-numbers file, by name; a malformed entry is a
    BadFileError naming the file and the entry."""
    tree = read_yaml_file(path)
    entries = tree.get("checkpoints") if isinstance(tree, Mapping) else None
    if not isinstance(entries, Mapping) or not entries:
        raise BadFileError(f"{path}: expected a `checkpoints:` mapping of named checkpoints; fix the file")
    out = {}
    for key, entry in entries.items():
        spec = _fields(entry, CHECKPOINT_KEYS, f"checkpoints.{key}", path)
        expected = []
        for i, item in enumerate(spec["expected"] or []):
            item = _fields(item, EXPECTED_KEYS, f"checkpoints.{key}.expected[{i}]", path)
            expected.append(Expected(str(item["task"]), str(item["metric"]), str(item["dataset"]),
                                     float(item["value"]), float(item["tolerance"]),
                                     str(item["source"]), str(item.get("note") or "")))
        out[str(key)] = PublishedCheckpoint(str(key), str(spec["title"]), str(spec["format"]),
                                            str(spec["url"]), tuple(expected))
    return out


def _weights_name(extra: Any) -> str | None:
    weights = extra.get("weights") if isinstance(extra, Mapping) else None
    return weights.get("name") if isinstance(weights, Mapping) else None


def check_table(frame: pd.DataFrame,
                published: Mapping[str, PublishedCheckpoint] | None = None) -> pd.DataFrame:
    """One row per published number of every checkpoint some record was computed on: checkpoint,
    task, metric, dataset, expected, ours (mean over seeds, percent; NaN when not run), n, delta,
    within (True / False / None when not run), tolerance, source. Empty when no record is on a
    published checkpoint."""
    published = published_checkpoints() if published is None else published
    if frame.empty or "encoder" not in frame:
        return pd.DataFrame()
    ours = frame[(frame["encoder"] == EXTERNAL) & frame["value"].notna()
                 & ~frame["split"].isin(REPORTED_SPLITS_EXCLUDED)].copy()
    ours["checkpoint"] = ours["extra"].map(_weights_name)
    names = [name for name in published if name in set(ours["checkpoint"])]
    rows = []
    for name in names:
        mine = ours[ours["checkpoint"] == name]
        for exp in published[name].expected:
            match = mine[(mine["task"] == exp.task) & (mine["metric"] == exp.metric)
                         & (mine["dataset"] == exp.dataset)]
            values = match["value"] * match["scale"]
            mean = float(values.mean()) if len(values) else math.nan
            delta = mean - exp.value
            rows.append({"checkpoint": name, "task": exp.task, "metric": exp.metric,
                         "dataset": exp.dataset, "expected": exp.value, "ours": mean,
                         "n": len(values), "delta": delta,
                         "within": None if math.isnan(mean) else abs(delta) <= exp.tolerance,
                         "tolerance": exp.tolerance, "source": exp.source, "note": exp.note})
    return pd.DataFrame(rows)


def _verdict(within: bool | None) -> str:
    return "not run" if within is None else "yes" if within else "NO"


def protocol_check_markdown(frame: pd.DataFrame,
                            published: Mapping[str, PublishedCheckpoint] | None = None) -> list[str]:
    """The report's "Protocol self-check" section (no lines when no record is on a published
    checkpoint)."""
    table = check_table(frame, published)
    if table.empty:
        return []
    lines = ["## Protocol self-check: published checkpoints", "",
             "Our protocols on public checkpoints (`sweep --weights-list`), against the number "
             "published for each: ours = mean over seeds (n), Δ = ours − expected, within = "
             "|Δ| ≤ the entry's tolerance (points). A `NO` means our protocol does not reproduce "
             "the published number: read its source and note before trusting that column.", "",
             "| checkpoint | task: metric (dataset) | expected | ours (n) | Δ | tolerance | within | source |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        ran = row["within"] is not None
        ours = f"{row['ours']:.1f} ({row['n']})" if ran else "—"
        delta = f"{row['delta']:+.1f}" if ran else "—"
        source = row["source"] + (f" (note: {row['note']})" if row["note"] else "")
        lines.append(f"| {row['checkpoint']} | {row['task']}: {row['metric']} ({row['dataset']}) | "
                     f"{row['expected']:.1f} | {ours} | {delta} | ±{row['tolerance']:g} | "
                     f"{_verdict(row['within'])} | {source} |")
    verdicts = [_verdict(w) for w in table["within"]]
    lines += ["", f"{verdicts.count('yes')} within tolerance, {verdicts.count('NO')} outside, "
              f"{verdicts.count('not run')} not run.", ""]
    return lines
