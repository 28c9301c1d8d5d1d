"""The report's "Representation diagnostics" section: the ``diagnostics`` task's records
(tasks/diagnostics.py) as one line per report row and dataset, mean ± sample std over seeds
in the metrics' own units (not percent), with the collapse flag and its thresholds."""
from __future__ import annotations

from typing import Callable, Iterable

import pandas as pd

from tasks.diagnostics import DiagnosticsTask

TASK = DiagnosticsTask.name
FLAG = "collapsed"
VALUE_METRICS = tuple(m for m in DiagnosticsTask.metrics if m != FLAG)
THRESHOLDS = ("collapse_cosine", "collapse_rank")
EXPLANATION = (
    "From the `diagnostics` task on the held-out (test) split, L2-normalised embedding: alignment "
    "(mean squared distance of two augmented views; 0 = equal), uniformity (log mean Gaussian "
    "potential, t = 2; -4 = perfectly spread, 0 = one point), RankMe (effective rank), mean "
    "pairwise cosine, and the mean cosine to the 5 nearest same-class / different-class images "
    "(paper §4.3). Mean ± sample std over seeds (n)."
)


def without_diagnostics(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the diagnostics records (they have their own section, not a column of
    the accuracy tables)."""
    return frame[frame["task"] != TASK] if not frame.empty else frame


def _cell(values: pd.Series) -> str:
    spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
    return f"{values.mean():.3f}{spread} (n={len(values)})"


def _flag(values: pd.Series) -> str:
    flagged = int((values >= 0.5).sum())
    return f"{'yes' if flagged else 'no'} ({flagged}/{len(values)} seeds)"


def diagnostics_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (row, dataset) of the diagnostics records: each metric's mean ± std (n) and
    ``collapsed`` as "yes/no (flagged/seeds)"; empty without diagnostics records."""
    ran = frame[(frame["task"] == TASK) & frame["value"].notna()] if not frame.empty else frame
    lines = []
    for (row, dataset), group in ran.groupby(["row", "dataset"]) if not ran.empty else ():
        by_metric = {m: g.groupby("seed")["value"].mean() for m, g in group.groupby("metric")}
        line = {"row": row, "dataset": dataset}
        line.update({m: _cell(by_metric[m]) for m in VALUE_METRICS if m in by_metric})
        if FLAG in by_metric:
            line[FLAG] = _flag(by_metric[FLAG])
        lines.append(line)
    if not lines:
        return pd.DataFrame()
    table = pd.DataFrame(lines).set_index("row")
    columns = ["dataset"] + [m for m in (*VALUE_METRICS, FLAG) if m in table.columns]
    return table[columns].fillna("—")


def thresholds_text(frame: pd.DataFrame) -> str:
    """The collapse rule with the thresholds the records were flagged with (each distinct
    value named)."""
    ran = frame[(frame["task"] == TASK) & frame["value"].notna()]
    found = {name: sorted({float(e[name]) for e in ran["extra"] if isinstance(e, dict) and name in e})
             for name in THRESHOLDS}
    cosine = " / ".join(f"{v:g}" for v in found["collapse_cosine"]) or "?"
    rank = " / ".join(f"{v:g}" for v in found["collapse_rank"]) or "?"
    return (f"**Collapse** (`collapsed` = yes): mean pairwise cosine >= {cosine} (the embedding fills a "
            f"narrow cone) or RankMe <= {rank} (it spans about that few directions); the count says "
            "in how many seeds.")


def diagnostics_markdown(frame: pd.DataFrame, order: Callable[[Iterable[str]], list[str]]) -> list[str]:
    """The section's Markdown lines (none without diagnostics records); ``order`` sorts rows as
    the accuracy tables do."""
    table = diagnostics_table(frame)
    if table.empty:
        return []
    ordered = table.loc[order(dict.fromkeys(table.index))]
    return ["## Representation diagnostics", "", EXPLANATION, "", thresholds_text(frame), "",
            ordered.to_markdown(), ""]
