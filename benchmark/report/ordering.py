"""Does the paper's ordering of rows hold in our numbers? One check per table column.

For every column where at least two of our rows have a paper counterpart with a number, the
rows are ordered by the paper's numbers and by our means, and every pair the paper orders
(ties skipped) is counted as agreeing or not. Stand-in columns are checked too: the ordering is
the claim that may survive a change of scale even when the numbers cannot.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from benchmark.report.frame import paper_counterpart
from benchmark.report.paper_tables import PaperData


@dataclass(frozen=True)
class OrderingCheck:
    """Paper and our orders of the rows of one column, and how many row pairs agree."""

    table: str
    column: str
    paper_order: list[tuple[str, float]]
    our_order: list[tuple[str, float]]
    agreeing: int
    pairs: int

    def markdown(self) -> str:
        paper = " > ".join(f"{row} {value:.1f}" for row, value in self.paper_order)
        ours = " > ".join(f"{row} {value:.2f}" for row, value in self.our_order)
        verdict = "holds" if self.agreeing == self.pairs else "does not hold"
        return (f"- **{self.table}, {self.column}**: the paper's order {verdict} "
                f"({self.agreeing} of {self.pairs} pairs). Paper: {paper}. Ours: {ours}.")


def ordering_checks(cells: pd.DataFrame, paper: PaperData) -> list[OrderingCheck]:
    """Checks for every (table, column) of ``cells`` (``report.place_cells`` output)."""
    if cells.empty:
        return []
    ran = cells[cells["value"].notna() & cells["paper_column"].notna()]
    checks = []
    for (table, label, paper_column), group in ran.groupby(["table", "label", "paper_column"], sort=False):
        spec = paper.tables[table]
        rows = {}
        same_scale = bool(group["comparable"].iloc[0])
        for row, records in group.groupby("row"):
            reference = paper_counterpart(spec, row, records, same_scale)
            number = paper.number(table, reference, paper_column) if reference else None
            if number is not None:
                rows[row] = (float((records["value"] * records["scale"]).mean()), number.value)
        scored = [(a, b) for a, b in combinations(rows, 2) if rows[a][1] != rows[b][1]]
        if not scored:
            continue
        agreeing = sum((rows[a][0] - rows[b][0]) * (rows[a][1] - rows[b][1]) > 0 for a, b in scored)
        checks.append(OrderingCheck(
            table, label,
            sorted(((r, v[1]) for r, v in rows.items()), key=lambda x: -x[1]),
            sorted(((r, v[0]) for r, v in rows.items()), key=lambda x: -x[1]),
            agreeing, len(scored),
        ))
    return checks
