"""Markdown reports computed from result records alone.

Rows are encoders (each method, then the two sanity rows: random init and raw pixels), columns
are (task, metric, dataset); a cell is the mean ± std over seeds with the number of seeds. A
provenance table lists, per row, the config hashes, checkpoints, commits (dirty trees marked),
devices and dates the numbers came from.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from benchmark.store import ResultStore, write_text_atomic

SANITY_ROWS = {"random": "random init (sanity)", "pixels": "raw pixels (sanity)"}
PERCENT_METRICS = ("top1", "top5", "acc", "accuracy", "map", "ap", "mean_per_class")


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame with a ``row`` label (method or sanity row) and a ``column`` label."""
    frame = pd.DataFrame(list(records))
    if frame.empty:
        return frame
    frame["row"] = [SANITY_ROWS.get(e, m) for e, m in zip(frame["encoder"], frame["method"])]
    frame["column"] = frame["task"] + ": " + frame["metric"] + " (" + frame["dataset"] + ")"
    return frame


def _format_cell(values: pd.Series) -> str:
    scale = 100.0 if values.abs().max() <= 1.0 else 1.0
    mean = values.mean() * scale
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {values.std(ddof=1) * scale:.2f} (n={len(values)})"


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Pivot: one row per encoder, one column per (task, metric, dataset), formatted cells."""
    table = frame.pivot_table(index="row", columns="column", values="value", aggfunc=_format_cell)
    order = [r for r in table.index if r not in SANITY_ROWS.values()] + [
        r for r in SANITY_ROWS.values() if r in table.index
    ]
    return table.loc[order].fillna("not run")


def provenance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row: seeds, config hashes, checkpoints, commits (``*`` = dirty tree), devices, dates."""

    def joined(values: Iterable[Any]) -> str:
        return ", ".join(sorted({str(v) for v in values if v is not None and v == v})) or "-"

    rows = []
    for row, group in frame.groupby("row", sort=False):
        commits = {
            f"{str(c)[:10]}{'*' if d else ''}" for c, d in zip(group["git_commit"], group["git_dirty"])
        }
        rows.append(
            {
                "row": row,
                "seeds": joined(group["seed"]),
                "pretrain epochs": joined(group["pretrain_epochs"]),
                "config hashes": joined(group["config_hash"]),
                "checkpoints": joined(group["checkpoint_hash"]),
                "commits": ", ".join(sorted(commits)),
                "devices": joined(group["device"]),
                "dates": joined(d[:10] for d in group["started_at"]),
            }
        )
    return pd.DataFrame(rows).set_index("row")


def render_markdown(frame: pd.DataFrame, profile: str) -> str:
    """The whole report as Markdown text."""
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# invp-bench results: profile `{profile}`", ""]
    if frame.empty:
        return "\n".join(lines + ["No result records found.", ""])
    lines += [
        f"Generated {generated} from {frame['job_id'].nunique()} result files "
        f"({len(frame)} records). Values are percentages for accuracy-like metrics; "
        "mean ± sample std over seeds with n when several seeds ran.",
        "",
        "## Results",
        "",
        results_table(frame).to_markdown(),
        "",
        "## Provenance",
        "",
        "`*` after a commit marks numbers computed from a tree with uncommitted changes.",
        "",
        provenance_table(frame).to_markdown(),
        "",
    ]
    return "\n".join(lines)


def write_report(results_dir: Path, out_dir: Path, profile: str) -> Path:
    """Render ``reports/<profile>.md`` from ``results/<profile>``; returns the written path."""
    frame = records_frame(ResultStore(Path(results_dir) / profile).records())
    path = Path(out_dir) / f"{profile}.md"
    write_text_atomic(path, render_markdown(frame, profile))
    return path
