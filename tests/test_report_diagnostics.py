"""The report's "Representation diagnostics" table from hand-made diagnostics records: mean ±
std over seeds per row, the collapse flag with its thresholds, and no diagnostics column in the
accuracy tables."""
from __future__ import annotations

from pathlib import Path

from report_support import INVP_CONFIG, save, seeds

from benchmark.report.diagnostics_table import diagnostics_table
from benchmark.report.export import write_report
from benchmark.report.frame import load_frame

INSDIS_CONFIG = {"name": "insdis", "temperature": 0.07}
COLLAPSE = {"collapse_cosine": 0.9, "collapse_rank": 2.0}
MINI = {"profile": "mini", "dataset": "fashion_mnist", "split": "test", "task": "diagnostics",
        "pretrain_epochs": 20, "backbone": "mini_resnet", "extra": {"layer": "embedding", **COLLAPSE}}


def diagnostics_records(method: str, config: dict, values: dict[str, list[float]]) -> list[dict]:
    """Three seeds of every metric in ``values`` for ``method``."""
    return [rec for metric, per_seed in values.items()
            for rec in seeds(per_seed, method=method, method_config=config, metric=metric,
                             job_id=None, **MINI)]


def with_job_ids(records: list[dict]) -> list[dict]:
    return [{**r, "job_id": f"job-{r['method']}-{r['seed']}"} for r in records]


def write_records(folder: Path) -> None:
    invp = diagnostics_records("invp", INVP_CONFIG, {
        "mean_cosine": [0.95, 0.97, 0.5], "rankme": [3.0, 2.5, 20.0], "alignment": [0.01, 0.02, 0.03],
        "collapsed": [1.0, 1.0, 0.0]})
    insdis = diagnostics_records("insdis", INSDIS_CONFIG, {
        "mean_cosine": [0.2, 0.3, 0.25], "rankme": [40.0, 42.0, 44.0], "alignment": [0.3, 0.3, 0.3],
        "collapsed": [0.0, 0.0, 0.0]})
    accuracy = [dict(r, task="knn", metric="top1") for r in seeds([0.7, 0.72, 0.71], **{**MINI, "task": "knn"})]
    save(folder, with_job_ids(invp + insdis + accuracy))


def test_the_table_has_one_line_per_row_with_mean_std_and_the_flag_count(tmp_path: Path) -> None:
    write_records(tmp_path / "results" / "mini")
    table = diagnostics_table(load_frame(tmp_path / "results", "mini"))
    assert sorted(table.index) == ["InsDis", "InvP"]
    assert table.loc["InvP", "mean_cosine"] == "0.807 ± 0.266 (n=3)"
    assert table.loc["InvP", "collapsed"] == "yes (2/3 seeds)"
    assert table.loc["InsDis", "collapsed"] == "no (0/3 seeds)"
    assert table.loc["InsDis", "rankme"] == "42.000 ± 2.000 (n=3)"
    assert "nn_same_class_sim" not in table.columns  # no record of it: no column
    assert table.loc["InvP", "dataset"] == "fashion_mnist"


def test_the_report_shows_the_section_with_the_threshold_and_keeps_it_out_of_the_accuracy_tables(
        tmp_path: Path) -> None:
    write_records(tmp_path / "results" / "mini")
    text = write_report(tmp_path / "results", tmp_path / "reports", "mini").read_text()
    section = text.split("## Representation diagnostics", 1)[1].split("\n## ", 1)[0]
    assert "mean pairwise cosine >= 0.9" in section and "RankMe <= 2" in section
    invp_line = next(line for line in section.splitlines() if line.startswith("| InvP"))
    assert "yes (2/3 seeds)" in invp_line and "0.807 ± 0.266 (n=3)" in invp_line
    tables = text.split("## Representation diagnostics", 1)[0]
    assert "diagnostics: mean_cosine" not in tables and "knn: top1" in tables
    assert text.index("## Representation diagnostics") < text.index("## All measurements")


def test_no_diagnostics_records_no_section(tmp_path: Path) -> None:
    save(tmp_path / "results" / "mini",
         [dict(r, job_id=f"j{r['seed']}") for r in seeds([0.7, 0.72], **{**MINI, "task": "knn", "metric": "top1"})])
    assert diagnostics_table(load_frame(tmp_path / "results", "mini")).empty
    assert "Representation diagnostics" not in write_report(tmp_path / "results", tmp_path / "r", "mini").read_text()
