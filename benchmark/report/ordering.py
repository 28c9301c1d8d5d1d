"""Does the paper's ordering of rows hold in our numbers? One check per table column.

For every column where at least two of our rows have a paper counterpart with a number, every
pair of rows the paper orders (ties skipped) gets a verdict from our seeds (``pair_verdict``):
each row's values are averaged per seed, and Welch's two-sided t-test at ``ALPHA`` decides
whether the difference of the two rows' seed means is told apart from seed noise. Stand-in
columns are checked too: the ordering is the claim that may survive a change of scale even when
the numbers cannot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from benchmark.report.frame import paper_counterpart
from benchmark.report.paper_tables import PaperData

ALPHA = 0.05
AGREES, DISAGREES, WITHIN_NOISE, CANNOT_TELL = "agrees", "disagrees", "within noise", "cannot tell"
VERDICTS = (AGREES, DISAGREES, WITHIN_NOISE, CANNOT_TELL)
ORDERING_RULE = (f"Each pair the paper orders is judged on our per-seed values by Welch's two-sided t-test "
        f"at α = {ALPHA}: p < {ALPHA} and the same order as the paper's = **{AGREES}**, the "
        f"opposite order = **{DISAGREES}**, p ≥ {ALPHA} = **{WITHIN_NOISE}**; a row with fewer "
        f"than 2 seeds = **{CANNOT_TELL}**. Pairs the paper ties are skipped.")


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test that ``a`` and ``b`` have equal means (each n >= 2).
    Both without spread: 0 when the means differ, 1 when they are equal."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff = a.mean() - b.mean()
    if va + vb == 0:
        return 0.0 if diff != 0 else 1.0
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(diff) / math.sqrt(va + vb), df))


def pair_verdict(higher: Sequence[float], lower: Sequence[float]) -> str:
    """Verdict on the paper's claim that the row of ``higher`` beats the row of ``lower``, from
    each row's per-seed values."""
    if len(higher) < 2 or len(lower) < 2:
        return CANNOT_TELL
    if welch_p(higher, lower) >= ALPHA:
        return WITHIN_NOISE
    return AGREES if np.mean(higher) > np.mean(lower) else DISAGREES


@dataclass(frozen=True)
class OrderingCheck:
    """Paper and our orders of the rows of one column, and the verdict of every ordered pair."""

    table: str
    column: str
    paper_order: list[tuple[str, float]]
    our_order: list[tuple[str, float, float, int]]  # row, mean, sample std (NaN: n = 1), seeds
    verdicts: list[tuple[str, str, str]]  # paper's higher row, lower row, verdict

    def counts(self) -> dict[str, int]:
        return {v: sum(verdict == v for _, _, verdict in self.verdicts) for v in VERDICTS}

    def markdown(self) -> str:
        paper = " > ".join(f"{row} {value:.1f}" for row, value in self.paper_order)
        ours = " > ".join(f"{row} {mean:.2f}" + (f" ± {std:.2f}" if n > 1 else "") + f" (n={n})"
                          for row, mean, std, n in self.our_order)
        counted = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        pairs = "; ".join(f"{a} > {b}: {v}" for a, b, v in self.verdicts)
        return (f"- **{self.table}, {self.column}**: {counted}. Paper: {paper}. Ours: {ours}. "
                f"Pairs: {pairs}.")


def summary(checks: Sequence[OrderingCheck]) -> str:
    """All checks' pairs counted by verdict, one line."""
    total = {v: sum(c.counts()[v] for c in checks) for v in VERDICTS}
    return (f"Over {sum(total.values())} ordered pairs in {len(checks)} columns: "
            + ", ".join(f"{n} {v}" for v, n in total.items()) + ".")


def _seed_values(records: pd.DataFrame) -> list[float]:
    """A row's values in report units, one per seed (trials of one seed averaged)."""
    return (records["value"] * records["scale"]).groupby(records["seed"]).mean().tolist()


def ordering_checks(cells: pd.DataFrame, paper: PaperData) -> list[OrderingCheck]:
    """Checks for every (table, column) of ``cells`` (``report.place_cells`` output)."""
    if cells.empty:
        return []
    ran = cells[cells["value"].notna() & cells["paper_column"].notna()]
    checks = []
    for (table, label, paper_column), group in ran.groupby(["table", "label", "paper_column"], sort=False):
        spec = paper.tables[table]
        same_scale = bool(group["comparable"].iloc[0])
        rows: dict[str, tuple[list[float], float]] = {}
        for row, records in group.groupby("row"):
            reference = paper_counterpart(spec, row, records, same_scale)
            number = paper.number(table, reference, paper_column) if reference else None
            if number is not None:
                rows[row] = (_seed_values(records), number.value)
        paper_order = sorted(((r, v[1]) for r, v in rows.items()), key=lambda x: -x[1])
        rank = {r: i for i, (r, _) in enumerate(paper_order)}
        ordered = sorted(((a, b) if rows[a][1] > rows[b][1] else (b, a)
                          for a, b in combinations(rows, 2) if rows[a][1] != rows[b][1]),
                         key=lambda pair: (rank[pair[0]], rank[pair[1]]))
        if not ordered:
            continue
        ours = [(r, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v))
                for r, (v, _) in rows.items()]
        checks.append(OrderingCheck(
            table, label, paper_order,
            sorted(ours, key=lambda x: -x[1]),
            [(a, b, pair_verdict(rows[a][0], rows[b][0])) for a, b in ordered],
        ))
    return checks
