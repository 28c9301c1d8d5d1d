"""Writing a profile's report: the Markdown page (with figures), or its cells as CSV or JSON.

``md`` is ``reports/<profile>.md`` (``render.render_markdown``); ``csv`` and ``json`` hold one
line per cell (report row, task, metric, dataset, split) with the mean, sample std and seed
count of its records in report units (percent for accuracy-like metrics), for people's own
plots: ``reports/<profile>.csv`` / ``.json``.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.core.fields import safe_name
from benchmark.core.store import write_text_atomic
from benchmark.report.figure_report import write_figures
from benchmark.report.frame import DEFAULT_EXPECTED_SEEDS, cell_stats, load_frame, registry_task_info
from benchmark.report.render import render_markdown

FORMATS = ("md", "csv", "json")
EXPORT_COLUMNS = ["row", "task", "metric", "dataset", "split", "mean", "std", "n"]


def export_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per cell of ``frame``'s records (skips left out), ``EXPORT_COLUMNS``."""
    ran = frame[frame["value"].notna()] if not frame.empty else frame
    if ran.empty:
        return pd.DataFrame(columns=EXPORT_COLUMNS)
    return cell_stats(ran).reset_index()[EXPORT_COLUMNS]


def export_text(frame: pd.DataFrame, fmt: str) -> str:
    """``export_table`` as CSV or JSON (a list of objects; no std is null)."""
    table = export_table(frame)
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", indent=1) + "\n"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def write_report(
    results_dir: Path,
    out_dir: Path,
    profile: str,
    runs_dir: Path | None = None,
    data_root: Path | None = None,
    compare: bool | None = None,
    expected_seeds: int = DEFAULT_EXPECTED_SEEDS,
    fmt: str = "md",
) -> Path:
    """Write ``reports/<profile>.<fmt>`` from ``results/<profile>``; returns the written path.

    Markdown only: the figures (PNGs beside it) are drawn from the figure inputs stored under
    ``results/<profile>/figures``, first refreshed from the pretraining runs under ``runs_dir``
    when given (logs and encoders; ``data_root``: where the Fig. 2 images are, default
    ``$BENCHMARK_DATA``).
    """
    safe_name(profile, "profile")  # it names the results folder, the report and its figures
    tasks = registry_task_info()
    frame = load_frame(results_dir, profile, tasks)
    out_dir = Path(out_dir)
    path = out_dir / f"{profile}.{fmt}"
    if fmt != "md":
        write_text_atomic(path, export_text(frame, fmt))
        return path
    figures = None
    if not frame.empty:
        figures = write_figures(results_dir, profile, None if runs_dir is None else Path(runs_dir), out_dir,
                                data_root)
    write_text_atomic(path, render_markdown(frame, profile, tasks=tasks, compare=compare,
                                            expected_seeds=expected_seeds, figures=figures))
    return path
