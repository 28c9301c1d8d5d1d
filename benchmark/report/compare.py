"""Per-cell differences between two result folders (e.g. before and after a code change).

A cell is (report row, task, dataset, split, metric); each side gives mean, sample std and seed
count over its records. ``changed`` marks cells whose means differ by more than the tolerance
(percentage points for accuracy-like metrics). Cells present on one side only are listed too.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmark.report.frame import CELL, cell_stats, folder_frame


def load_cells(folder: Path) -> pd.DataFrame:
    """Mean, std and n per cell of the records in one result folder (``results/<profile>``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"result folder {folder} does not exist; pass results/<profile>")
    if not any(folder.glob("*.json")):
        hint = [p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.json"))]
        raise FileNotFoundError(
            f"no result files (*.json) in {folder}"
            + (f"; did you mean one of its profile folders: {', '.join(hint)}?" if hint else "")
        )
    return cell_stats(folder_frame(folder, tasks={}, skips=False))


def compare_cells(a: pd.DataFrame, b: pd.DataFrame, tolerance: float = 0.5) -> pd.DataFrame:
    """Outer join of two ``load_cells`` frames with ``delta`` (B − A) and a ``status`` column:
    same | changed | only in A | only in B."""
    joined = a.add_suffix("_a").join(b.add_suffix("_b"), how="outer")
    joined["delta"] = joined["mean_b"] - joined["mean_a"]
    status = pd.Series("same", index=joined.index)
    status[joined["delta"].abs() > tolerance] = "changed"
    status[joined["mean_b"].isna()] = "only in A"
    status[joined["mean_a"].isna()] = "only in B"
    joined["status"] = status
    return joined


def _side(mean: float, std: float, n: float) -> str:
    if pd.isna(mean):
        return "—"
    spread = "" if pd.isna(std) else f" ± {std:.2f}"
    return f"{mean:.2f}{spread} (n={int(n)})"


def render_comparison(table: pd.DataFrame, name_a: str, name_b: str, tolerance: float) -> str:
    """Markdown: one line per cell, changed and one-sided cells first."""
    order = {"changed": 0, "only in A": 1, "only in B": 2, "same": 3}
    table = table.assign(_order=table["status"].map(order)).sort_values(["_order", *CELL])
    lines = [f"# Compare `{name_a}` (A) → `{name_b}` (B)", "",
             f"Δ = B − A; `changed` = |Δ| > {tolerance} (percentage points for accuracies).", "",
             "| row | task | dataset | split | metric | A | B | Δ | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (row, task, dataset, split, metric), r in table.iterrows():
        delta = "" if pd.isna(r["delta"]) else f"{r['delta']:+.2f}"
        lines.append(f"| {row} | {task} | {dataset} | {split} | {metric} | "
                     f"{_side(r['mean_a'], r['std_a'], r['n_a'])} | "
                     f"{_side(r['mean_b'], r['std_b'], r['n_b'])} | {delta} | {r['status']} |")
    counts = table["status"].value_counts()
    lines += ["", ", ".join(f"{counts.get(s, 0)} {s}" for s in order)]
    return "\n".join(lines) + "\n"


def compare_folders(a: Path, b: Path, tolerance: float = 0.5) -> tuple[str, int]:
    """(Markdown, number of changed or one-sided cells) for two result folders."""
    table = compare_cells(load_cells(a), load_cells(b), tolerance)
    return render_comparison(table, str(a), str(b), tolerance), int((table["status"] != "same").sum())
