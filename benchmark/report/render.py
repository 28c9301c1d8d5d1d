"""Markdown reports computed from result records alone, laid out as the paper's Tables 1-5.

Each table has the paper's columns. A row is one of our methods (InvP, its ablations, InsDis,
KNN-positive: ``paper_tables.ROW_RULES``) or one of the paper's printed rows; with paper numbers
shown, a column reads ``paper | ours | Δ``: ours is the mean ± sample std over seeds with n, Δ is
ours minus the paper's number, and ``⚠`` marks |Δ| above the column's tolerance. A record on a
dataset other than the paper's (the mini profile's stand-ins) is shown without comparison. Cells
without a record say ``not run`` (with the reason when the job recorded a skip). Every cell of
ours links to a provenance footnote; ``†`` marks numbers from a dirty tree, ``‡`` fewer seeds than
expected. An appendix keeps every headline measurement and a provenance table per row.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import pandas as pd

from benchmark.report.diagnostics_table import diagnostics_markdown, without_diagnostics
from benchmark.report.figure_report import FigureSet
from benchmark.report.frame import (
    DEFAULT_EXPECTED_SEEDS,
    DIRTY_MARK,
    FEW_SEEDS_MARK,
    NOT_IN_SUITE,
    NOT_RUN,
    TOLERANCE_MARK,
    TaskInfo,
    paper_counterpart,
    place_cells,
    registry_task_info,
)
from benchmark.report.ordering import ORDERING_RULE, ordering_checks, summary
from benchmark.report.paper_tables import (
    OTHER_TABLE,
    SANITY_ROWS,
    PaperData,
    PaperNumber,
    PaperTable,
    base_row,
    load_paper,
    settings_differences,
)
from benchmark.report.protocol_check import protocol_check_markdown
from benchmark.report.rows import row_order


class Footnotes:
    """Numbered provenance footnotes, one per distinct text."""

    def __init__(self) -> None:
        self.texts: dict[str, int] = {}

    def ref(self, text: str) -> str:
        number = self.texts.setdefault(text, len(self.texts) + 1)
        return f"[^{number}]"

    def markdown(self) -> list[str]:
        return [f"[^{n}]: {text}" for text, n in self.texts.items()]


def _text(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _joined(values: Iterable[Any]) -> str:
    """Sorted distinct values (missing ones dropped), comma-separated; ``-`` when none."""
    return ", ".join(sorted({_text(v) for v in values if v is not None and v == v})) or "-"


def provenance_text(group: pd.DataFrame, paper: PaperData, paper_epochs: int | None) -> str:
    """Config hashes, settings differing from the paper's, epochs, commits, dates, devices."""
    first = group.iloc[0]
    parts = [f"task `{first['task']}` on `{first['dataset']}` ({first['split']})",
             f"config {_joined(group['config_hash'])}", f"seeds {_joined(group['seed'])}"]
    if first["encoder"] == "pretrained":
        diffs = settings_differences(first["method"], first["method_config"] or {}, paper)
        if diffs is None:
            parts.append(f"paper settings of `{first['method']}` not published")
        elif diffs:
            parts.append("differs from the paper: " + "; ".join(diffs))
        epochs = _joined(group["pretrain_epochs"])
        parts.append(f"pretrain epochs {epochs}"
                     + (f" (paper {paper_epochs})" if paper_epochs else ""))
    commits = sorted({f"{str(c)[:10]}{' (dirty)' if d else ''}"
                      for c, d in zip(group["git_commit"], group["git_dirty"])})
    parts += [f"commit {', '.join(commits)}",
              f"date {_joined(str(d)[:10] for d in group['started_at'])}",
              f"device {_joined(group['device'])}"]
    return "; ".join(parts)


def _our_cell(group: pd.DataFrame, expected_seeds: int, paper: PaperData,
              paper_epochs: int | None, notes: Footnotes) -> tuple[str, float | None]:
    """(cell text, mean in report units) of one row x column group of records."""
    if group.empty:
        return NOT_RUN, None
    ran = group[group["value"].notna()]
    if ran.empty:
        reasons = [r for r in group["skip_reason"].dropna().unique()]
        return (f"{NOT_RUN}: {', '.join(reasons)}" if reasons else NOT_RUN), None
    values = ran["value"] * ran["scale"]
    mean = float(values.mean())
    seeds = ran["seed"].nunique()
    text = f"{mean:.2f}" if len(values) == 1 else f"{mean:.2f} ± {values.std(ddof=1):.2f}"
    text += f" (n={seeds})"
    if ran["git_dirty"].fillna(False).astype(bool).any():
        text += f" {DIRTY_MARK}"
    if seeds < expected_seeds:
        text += f" {FEW_SEEDS_MARK}"
    return text + " " + notes.ref(provenance_text(ran, paper, paper_epochs)), mean


@dataclass(frozen=True)
class Column:
    """A rendered column: its label, the paper column it sits under, and whether it compares."""

    label: str
    paper_column: str | None
    comparable: bool


def _table_columns(here: pd.DataFrame, spec: PaperTable | None, compare: bool) -> list[Column]:
    """The paper's columns in order (each split by stand-in dataset and task), then extras. A
    column no record fills is left out, unless it shows the paper's numbers."""
    columns = []
    for paper_column in spec.columns if spec is not None else ():
        found = here[here["paper_column"] == paper_column.name] if not here.empty else here
        pairs = list(dict.fromkeys(zip(found["label"], found["comparable"]))) if not found.empty else []
        filled = set(found.loc[found["value"].notna(), "label"]) if not found.empty else set()
        pairs = [(label, c) for label, c in pairs if (compare and c) or label in filled]
        if compare and not any(comparable for _, comparable in pairs):
            pairs.insert(0, (paper_column.name, True))
        columns += [Column(label, paper_column.name, bool(c)) for label, c in pairs]
    extra = here[here["paper_column"].isna() & here["value"].notna()]["label"] if not here.empty else []
    return columns + [Column(label, None, False) for label in dict.fromkeys(extra)]


def _table_rows(here: pd.DataFrame, spec: PaperTable | None, paper: PaperData,
                compare: bool) -> list[tuple[str | None, str | None]]:
    """(our row, paper row it is compared with): ours first, then paper-only rows, sanity last."""
    ours = list(here["row"].unique()) if not here.empty else []
    if not compare:
        return [(row, None) for row in row_order(ours)]
    ours += [row for row in spec.rows or spec.reference if row not in ours]
    pairs = [(row, paper_counterpart(spec, row, here[here["row"] == row] if not here.empty else here,
                                     same_scale=True)) for row in row_order(ours)]
    used = {p for _, p in pairs}
    pairs += [(None, p) for p in paper.paper_rows(spec.key) if p not in used]
    return sorted(pairs, key=lambda pair: pair[0] in SANITY_ROWS.values())


def _delta(mean: float | None, number: PaperNumber | None, tolerance: float) -> str:
    """``ours - paper`` as shown (two decimals), marked when above ``tolerance``."""
    if number is None or mean is None:
        return ""
    diff = round(round(mean, 2) - number.value, 2) + 0.0  # + 0.0: never "-0.00"
    return f"{diff:+.2f}" + (f" {TOLERANCE_MARK}" if abs(diff) > tolerance else "")


def render_table(cells: pd.DataFrame, table_key: str, paper: PaperData, compare: bool,
                 expected_seeds: int, notes: Footnotes) -> str | None:
    """One table as Markdown (None when it has nothing to show)."""
    spec = paper.tables.get(table_key)
    here = cells[cells["table"] == table_key] if not cells.empty else cells
    if spec is not None and spec.rows is not None and not here.empty:
        here = here[here["row"].map(base_row).isin(spec.rows)]
    compare = compare and spec is not None
    if here.empty and not compare:
        return None
    columns = _table_columns(here, spec, compare)
    tolerance = {c.name: c.tolerance for c in spec.columns} if spec else {}
    header = ["row"] + (["paper row"] if compare else [])
    for col in columns:
        compared = compare and col.comparable
        header += ([f"{col.label} paper", f"{col.label} ours", f"{col.label} Δ"] if compared
                   else [f"{col.label} ours" if compare else col.label])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for our, paper_row in _table_rows(here, spec, paper, compare):
        line = [our or paper_row] + ([paper_row or NOT_IN_SUITE] if compare else [])
        for col in columns:
            text, mean = NOT_IN_SUITE, None
            if our is not None:
                group = here[(here["row"] == our) & (here["label"] == col.label)] if not here.empty else here
                text, mean = _our_cell(group, expected_seeds, paper,
                                       spec.paper_epochs if spec else None, notes)
            if not (compare and col.comparable):
                line.append(text)
                continue
            number = paper.number(table_key, paper_row, col.paper_column) if paper_row else None
            line += [f"{number.value:.1f}" if number else NOT_IN_SUITE, text,
                     _delta(mean, number, tolerance[col.paper_column])]
        lines.append("| " + " | ".join(line) + " |")
    title = f"### {table_key}: {spec.title}" if spec else f"### {table_key}"
    maps = [f"{c.name}: the paper's numbers are {c.paper_map}" for c in spec.columns
            if c.paper_map] if spec else []
    notes = [f"mAP variants ({'; '.join(maps)}); ours are named in each column header.", ""] if maps else []
    return "\n".join([title, "", *notes, *lines])


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Appendix pivot: one row per report row, one column per (task, metric, dataset, split)."""
    ran = frame[frame["value"].notna()].copy()
    ran["column"] = ran["column"] + " " + ran["split"]
    ran["scaled"] = ran["value"] * ran["scale"]

    def cell(values: pd.Series) -> str:
        if len(values) == 1:
            return f"{values.mean():.2f}"
        return f"{values.mean():.2f} ± {values.std(ddof=1):.2f} (n={len(values)})"

    table = ran.pivot_table(index="row", columns="column", values="scaled", aggfunc=cell)
    return table.loc[row_order(table.index)].fillna(NOT_RUN)


def _accelerator_text(info: Any) -> str | None:
    """``NVIDIA H200 (CUDA 12.4, cuDNN 90100, driver 550.54.15) x 4`` / ``cpu x 1``; None for
    records written before accelerators were recorded."""
    if not isinstance(info, Mapping) or not info:
        return None
    if info.get("gpu") is None:
        return f"cpu x {info['world_size']}"
    return (f"{info['gpu']} (CUDA {info['cuda']}, cuDNN {info['cudnn']}, driver {info['driver']}) "
            f"x {info['world_size']}")


def provenance_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per row: seeds, config hashes, checkpoints, commits (``*`` = dirty tree), devices,
    accelerators (GPU, CUDA, cuDNN, driver, processes), dates."""
    rows = []
    ran = frame[frame["value"].notna()]
    for row, group in ran.groupby("row", sort=False):
        commits = {
            f"{str(c)[:10]}{'*' if d else ''}" for c, d in zip(group["git_commit"], group["git_dirty"])
        }
        rows.append(
            {
                "row": row,
                "seeds": _joined(group["seed"]),
                "pretrain epochs": _joined(group["pretrain_epochs"]),
                "config hashes": _joined(group["config_hash"]),
                "checkpoints": _joined(group["checkpoint_hash"]),
                "commits": ", ".join(sorted(commits)),
                "devices": _joined(group["device"]),
                "accelerators": _joined(map(_accelerator_text, group.get("accelerator", []))),
                "dates": _joined(str(d)[:10] for d in group["started_at"]),
            }
        )
    return pd.DataFrame(rows).set_index("row").loc[row_order(r["row"] for r in rows)]


def render_markdown(
    frame: pd.DataFrame,
    profile: str,
    paper: PaperData | None = None,
    tasks: Mapping[str, TaskInfo] | None = None,
    compare: bool | None = None,
    expected_seeds: int = DEFAULT_EXPECTED_SEEDS,
    figures: FigureSet | None = None,
) -> str:
    """The whole report as Markdown text. ``compare`` (default: every profile but ``mini``)
    shows the paper's numbers; ``figures`` adds the figure links and last-epoch diagnostics."""
    paper = load_paper() if paper is None else paper
    tasks = registry_task_info() if tasks is None else tasks
    compare = profile != "mini" if compare is None else compare
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = [f"# invp-bench results: profile `{profile}`", ""]
    ran = frame[frame["value"].notna()] if not frame.empty else frame
    if ran.empty and not compare:
        return "\n".join(lines + ["No result records found.", ""])
    lines += [
        f"Generated {generated} from {ran['job_id'].nunique() if not ran.empty else 0} result "
        f"files ({len(ran)} records). Accuracy-like values are percentages: mean ± sample std "
        f"over seeds, n = number of seeds. {DIRTY_MARK} = computed from a tree with uncommitted "
        f"changes; {FEW_SEEDS_MARK} = fewer than {expected_seeds} seeds; "
        + (f"Δ = ours − paper, {TOLERANCE_MARK} = |Δ| above the column's tolerance; "
           "`stand-in` columns ran on another dataset and are not compared; " if compare else
           "columns name the stand-in dataset that replaces the paper's; ")
        + "`[^n]` = provenance footnote.",
        "",
    ]
    notes = Footnotes()
    cells = place_cells(without_diagnostics(frame), paper, tasks) if not frame.empty else pd.DataFrame()
    for table_key in [*paper.tables, OTHER_TABLE]:
        text = render_table(cells, table_key, paper, compare, expected_seeds, notes)
        if text:
            lines += [text, ""]
    lines += diagnostics_markdown(frame, row_order) if not frame.empty else []
    lines += protocol_check_markdown(frame) if not frame.empty else []
    checks = ordering_checks(cells, paper)
    if checks:
        lines += ["## Does the paper's ordering hold?", "",
                  "Rows with a paper counterpart, ordered by the paper's number and by our mean "
                  "(± sample std over seeds). " + ORDERING_RULE, "", summary(checks), "",
                  *[c.markdown() for c in checks], ""]
    if figures is not None and figures.figures:
        lines += ["## Figures", ""] + [f"![{c}]({p})\n\n*{c}*\n" for c, p in figures.figures]
    if figures is not None and figures.diagnostics is not None:
        lines += ["## Pretraining diagnostics at the last epoch", "",
                  "From the pretraining logs: precision of discovered positives (and of the "
                  "top-M pool) = fraction sharing the anchor's label; similarities of the "
                  "hardest / easiest positives; kNN monitor top-1 on the held-out split.", "",
                  figures.diagnostics.loc[row_order(figures.diagnostics.index)].to_markdown(), ""]
    if compare and paper.related:
        lines += ["## Numbers the related methods report", "",
                  "Under their own protocols (named), so not placed in or compared with the "
                  "tables above.", "",
                  "| method | benchmark | value | protocol | source |", "|---|---|---|---|---|",
                  *[f"| {r.method} | {r.benchmark} | {r.value:g} | {r.protocol} | {r.source} |"
                    for r in paper.related], ""]
    if compare:
        sources = sorted({n.source for n in paper.numbers.values()})
        lines += ["## Sources of the paper numbers", "", *[f"- {s}" for s in sources], ""]
    if not ran.empty:
        lines += ["## All measurements", "", results_table(frame).to_markdown(), "",
                  "## Provenance by row", "",
                  "`*` after a commit marks numbers computed from a tree with uncommitted changes.",
                  "", provenance_table(frame).to_markdown(), ""]
    lines += ["## Footnotes", "", *notes.markdown(), ""] if notes.texts else []
    return "\n".join(lines)
