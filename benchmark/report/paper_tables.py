"""Where a result record belongs in the paper's Tables 1-5, and the paper's own numbers.

Two kinds of data live here, each in one place:

* ``ROW_RULES``: how a record's ``method`` and ``method_config`` name its row (InvP, its
  ablations, InsDis, KNN-positive) and the two sanity rows of the encoder kinds;
* ``benchmark/report/paper/invp_paper.yaml``: the paper's columns, tolerances, printed numbers with
  their sources and the paper's method settings (``load_paper``).

A record lands in a table through its task's ``paper_table`` / ``paper_column`` (task registry)
and its metric; a record on a dataset other than the paper's is a stand-in (mini profile): it is
placed in the same column but never compared with the paper's number.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

PAPER_FILE = Path(__file__).resolve().parent / "paper" / "invp_paper.yaml"
OTHER_TABLE = "Other evaluations"
SANITY_ROWS = {"random": "random init (sanity)", "pixels": "raw pixels (sanity)"}


@dataclass(frozen=True)
class RowRule:
    """Records of ``method`` whose config has every ``when`` item get row ``label``."""

    label: str
    method: str
    when: Mapping[str, Any] = field(default_factory=dict)


# First match wins: ablations before the plain method. Table 5's rows are InvP run with config
# overrides (or the separate KNN-positive method); docs/methods/invp.md §Ablations maps them to options.
ROW_RULES: tuple[RowRule, ...] = (
    RowRule("InvP without hard positive", "invp", {"hard_positive": False}),
    RowRule("InvP without hard negative", "invp", {"n_background": "all"}),
    RowRule("KNN (InvP, l = 1)", "invp", {"steps": 1}),
    RowRule("InvP", "invp"),
    RowRule("InsDis", "insdis"),
    RowRule("KNN-positive", "knn"),
    RowRule("MoCo v2", "mocov2"),
    RowRule("InterCLR", "interclr"),
    RowRule("CLIM", "clim"),
)
ROW_ORDER = ("InvP", "InsDis", "KNN-positive", "MoCo v2", "InterCLR", "CLIM", "KNN (InvP, l = 1)",
             "InvP without hard positive", "InvP without hard negative")  # display order of our rows


def _same(actual: Any, expected: Any) -> bool:
    return actual == expected or str(actual).lower() == str(expected).lower()


SEPARATOR = " · "  # between a row's base label and what sets its configuration apart


def base_row(row: str) -> str:
    """A row label without the `` · 200 ep`` suffix that sets apart other configurations."""
    return row.split(SEPARATOR)[0]


def row_label(method: str, method_config: Mapping[str, Any] | None, encoder: str) -> str:
    """The report row of a record: a sanity row, a ``ROW_RULES`` label, or the method name."""
    if encoder in SANITY_ROWS:
        return SANITY_ROWS[encoder]
    config = method_config or {}
    for rule in ROW_RULES:
        if rule.method == method and all(
            key in config and _same(config[key], value) for key, value in rule.when.items()
        ):
            return rule.label
    return method


@dataclass(frozen=True)
class PaperColumn:
    """One column of a paper table and the record metrics that fill it."""

    name: str
    metrics: tuple[str, ...]
    datasets: tuple[str, ...]
    tolerance: float
    paper_map: str | None = None  # the mAP variant(s) the printed numbers used, per source

    def is_paper_dataset(self, dataset: str) -> bool:
        return normalise(dataset) in {normalise(d) for d in self.datasets}


@dataclass(frozen=True)
class PaperRow:
    """A paper row one of our rows is compared with, and the pretraining it was printed for
    (None: not stated; the table's epochs and backbone unless the entry names its own)."""

    row: str
    head: str | None = None
    epochs: int | None = None
    backbone: str | None = None

    def fits(self, head: Any, epochs: Any, backbone: Any, same_scale: bool) -> bool:
        """Whether a row of this head, epochs and backbone (None: unknown) is this paper row's
        configuration. The head must match; epochs and backbone only at the paper's scale
        (``same_scale``: on the paper's dataset), since a stand-in changes them by design."""
        wanted = [(self.head, head)] + ([(self.epochs, epochs), (self.backbone, backbone)]
                                         if same_scale else [])
        return all(want is None or have is None or _same(have, want) for want, have in wanted)


@dataclass(frozen=True)
class PaperTable:
    """One of the paper's Tables 1-5: columns, row mapping and the paper's pretrain epochs."""

    key: str
    title: str
    paper_epochs: int | None
    columns: tuple[PaperColumn, ...]
    reference: Mapping[str, tuple[PaperRow, ...]]
    rows: tuple[str, ...] | None = None
    from_table: str | None = None

    def paper_row(self, row: str, head: Any = None, epochs: Any = None, backbone: Any = None,
                  same_scale: bool = True) -> str | None:
        """The paper row our ``row`` (base label) is compared with: the first of its references
        whose configuration fits (``PaperRow.fits``); None when none does."""
        for ref in self.reference.get(base_row(row), ()):
            if ref.fits(head, epochs, backbone, same_scale):
                return ref.row
        return None

    def has_metric(self, metric: str) -> bool:
        return any(metric.lower() in c.metrics for c in self.columns)

    def column(self, paper_column: str | None, dataset: str, metric: str) -> PaperColumn | None:
        """The column a task's record fills: among the columns of its metric, the one its
        ``paper_column`` names, else the one of its dataset, else the only one; None if unclear."""
        wanted = [c for c in self.columns if metric.lower() in c.metrics]
        for pick in (lambda c: normalise(paper_column or "") == normalise(c.name),
                     lambda c: c.is_paper_dataset(dataset)):
            found = [c for c in wanted if pick(c)]
            if found:
                return found[0]
        return wanted[0] if len(wanted) == 1 else None


@dataclass(frozen=True)
class PaperNumber:
    value: float
    source: str


@dataclass(frozen=True)
class RelatedNumber:
    """A number another method's paper or release reports, under its own protocol (not a cell
    of the InvP tables): shown beside them, never compared with ours."""

    method: str
    benchmark: str
    value: float
    protocol: str
    source: str


@dataclass(frozen=True)
class PaperData:
    """Everything ``invp_paper.yaml`` holds."""

    tables: Mapping[str, PaperTable]
    numbers: Mapping[tuple[str, str, str], PaperNumber]
    settings: Mapping[str, Mapping[str, Any]]
    related: tuple[RelatedNumber, ...] = ()
    map_variants: Mapping[str, str] = field(default_factory=dict)  # ``task:metric`` or metric -> name

    def map_variant(self, task: str, metric: str) -> str | None:
        """The mAP variant a record's metric is (``map_variants``), None for other metrics."""
        return self.map_variants.get(f"{task}:{metric}") or self.map_variants.get(metric)

    def paper_rows(self, table: str) -> list[str]:
        """Rows the paper prints in ``table``, in file order."""
        seen: dict[str, None] = {}
        for t, row, _ in self.numbers:
            if t == table:
                seen.setdefault(row, None)
        return list(seen)

    def number(self, table: str, row: str, column: str) -> PaperNumber | None:
        return self.numbers.get((table, row, column))


def normalise(text: str) -> str:
    """Lower-case alphanumerics plus ``%``: 'VOC 07' == 'voc07', '1 %' == '1%'."""
    return re.sub(r"[^a-z0-9%]", "", str(text).lower())


def _require(condition: bool, path: Path, message: str) -> None:
    if not condition:
        raise ValueError(f"paper numbers file {path}: {message}")


def _references(spec: Mapping[str, Any], path: Path, table: str) -> dict[str, tuple[PaperRow, ...]]:
    """``reference:`` of a table: our row -> a paper row name, or a list of ``{row, head, epochs,
    backbone}``; every paper row is the counterpart of one of our rows at most."""
    out: dict[str, tuple[PaperRow, ...]] = {}
    seen: dict[str, str] = {}
    for ours, entries in (spec.get("reference") or {}).items():
        refs = []
        for entry in entries if isinstance(entries, list) else [entries]:
            entry = entry if isinstance(entry, dict) else {"row": entry}
            _require("row" in entry and set(entry) <= {"row", "head", "epochs", "backbone"}, path,
                     f"table {table!r} reference {ours!r}: entries need 'row' and may name "
                     f"'head', 'epochs', 'backbone', got {entry}")
            ref = PaperRow(str(entry["row"]), entry.get("head"),
                           entry.get("epochs", spec.get("paper_epochs")),
                           entry.get("backbone", spec.get("backbone")))
            _require(seen.setdefault(ref.row, ours) == ours, path,
                     f"table {table!r}: paper row {ref.row!r} is the counterpart of both "
                     f"{seen[ref.row]!r} and {ours!r}; one row per paper row")
            refs.append(ref)
        out[str(ours)] = tuple(refs)
    return out


def load_paper(path: Path = PAPER_FILE) -> PaperData:
    """Parse and check the paper-numbers file; errors name the file and the bad entry."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read paper numbers file {path}: {exc}") from None
    _require(isinstance(raw, dict) and "tables" in raw and "numbers" in raw, path,
             "needs top-level 'tables' and 'numbers' sections")
    tables = {}
    for key, spec in raw["tables"].items():
        _require("columns" in spec, path, f"table {key!r} has no 'columns'")
        for c in spec["columns"]:
            _require("name" in c and "metric" in c, path,
                     f"table {key!r}: every column needs 'name' and 'metric', got {c}")
        columns = tuple(
            PaperColumn(
                name=str(c["name"]),
                metrics=tuple(str(m).lower() for m in (
                    c["metric"] if isinstance(c["metric"], list) else [c["metric"]])),
                datasets=tuple(str(d) for d in c.get("datasets", ())),
                tolerance=float(c.get("tolerance", 1.0)),
                paper_map=c.get("paper_map"),
            )
            for c in spec["columns"]
        )
        tables[key] = PaperTable(
            key=key,
            title=str(spec.get("title", key)),
            paper_epochs=spec.get("paper_epochs"),
            columns=columns,
            reference=_references(spec, path, key),
            rows=tuple(spec["rows"]) if spec.get("rows") else None,
            from_table=spec.get("from_table"),
        )
    numbers = {}
    for i, entry in enumerate(raw["numbers"]):
        missing = {"table", "row", "column", "value", "source"} - set(entry)
        _require(not missing, path, f"numbers entry {i} lacks {sorted(missing)}: {entry}")
        table = tables.get(entry["table"])
        _require(table is not None, path, f"numbers entry {i}: unknown table {entry['table']!r}")
        _require(entry["column"] in {c.name for c in table.columns}, path,
                 f"numbers entry {i}: {entry['table']} has no column {entry['column']!r}")
        key = (entry["table"], str(entry["row"]), str(entry["column"]))
        _require(key not in numbers, path, f"numbers entry {i} repeats {key}")
        numbers[key] = PaperNumber(float(entry["value"]), str(entry["source"]))
    related = []
    for i, entry in enumerate(raw.get("related_numbers") or []):
        fields = {"method", "benchmark", "value", "protocol", "source"}
        _require(isinstance(entry, dict) and set(entry) == fields, path,
                 f"related_numbers entry {i} needs exactly {sorted(fields)} (quote text holding "
                 f"commas), got {entry}")
        related.append(RelatedNumber(str(entry["method"]), str(entry["benchmark"]), float(entry["value"]),
                                     str(entry["protocol"]), str(entry["source"])))
    return PaperData(tables=tables, numbers=numbers, settings=raw.get("paper_settings", {}),
                     related=tuple(related), map_variants=dict(raw.get("map_variants") or {}))


def settings_differences(
    method: str, config: Mapping[str, Any], paper: PaperData
) -> list[str] | None:
    """``key ours (paper X)`` for every setting differing from the paper's; None if unknown."""
    reference = paper.settings.get(method)
    if reference is None:
        return None
    return [
        f"{key} {json.dumps(config.get(key))} (paper {json.dumps(value)})"
        for key, value in reference.items()
        if not _same_setting(config.get(key), value)
    ]


def _same_setting(ours: Any, theirs: Any) -> bool:
    if isinstance(theirs, Mapping) and isinstance(ours, Mapping):
        return all(_same_setting(ours.get(k), v) for k, v in theirs.items())
    return _same(ours, theirs)
