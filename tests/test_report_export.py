"""``report --format csv|json``: one line per cell with mean, std and seed count."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from report_support import record, save, seeds

from benchmark.harness.cli import main

MINI = {"profile": "mini", "dataset": "fashion_mnist", "split": "test"}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    save(tmp_path / "results" / "mini",
         seeds([0.60, 0.61, 0.62], **MINI) + [record(value=0.7, task="knn", **MINI)])
    return tmp_path / "results"


def test_csv_has_one_line_per_cell_with_mean_std_and_n(results: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out"),
                 "--format", "csv"]) == 0
    assert f"report: {tmp_path / 'out' / 'mini.csv'}" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "out" / "mini.csv")
    assert list(table.columns) == ["row", "task", "metric", "dataset", "split", "mean", "std", "n"]
    linear = table[table["task"] == "linear"].iloc[0]
    assert (linear["row"], linear["metric"], linear["dataset"], linear["n"]) == ("InvP", "top1", "fashion_mnist", 3)
    assert linear["mean"] == pytest.approx(61.0) and linear["std"] == pytest.approx(1.0)
    assert not (tmp_path / "out" / "mini.md").exists()


def test_json_is_a_list_of_cells_and_one_seed_has_no_std(results: Path, tmp_path: Path) -> None:
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "out"),
                 "--format", "json"]) == 0
    cells = json.loads((tmp_path / "out" / "mini.json").read_text())
    knn = next(c for c in cells if c["task"] == "knn")
    assert knn == {"row": "InvP", "task": "knn", "metric": "top1", "dataset": "fashion_mnist",
                   "split": "test", "mean": pytest.approx(70.0), "std": None, "n": 1}


def test_an_unknown_format_is_a_usage_error(results: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["report", "--results", str(results), "--format", "xlsx"])
    assert stop.value.code == 2
    assert "argument --format: invalid choice: 'xlsx'" in capsys.readouterr().err


def test_values_keep_their_task_units(tmp_path: Path) -> None:
    # linear top-1 is a fraction (x100); a cosine and RankMe are diagnostics in their own units
    # (never x100, though 0.99 is in [0, 1]); detection AP is recorded in percent already
    save(tmp_path / "results" / "mini", [
        record(value=0.61, **MINI),
        record(value=0.99, task="diagnostics", metric="mean_cosine", **MINI),
        record(value=0.5, task="diagnostics", metric="rankme", job_id="diag-rank", **MINI),
        record(value=20.0, task="detection", metric="AP", **{**MINI, "dataset": "mini_det"}),
    ])
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "out"),
                 "--format", "csv"]) == 0
    table = pd.read_csv(tmp_path / "out" / "mini.csv").set_index(["task", "metric"])["mean"]
    assert table[("linear", "top1")] == pytest.approx(61.0)
    assert table[("diagnostics", "mean_cosine")] == pytest.approx(0.99)
    assert table[("diagnostics", "rankme")] == pytest.approx(0.5)
    assert table[("detection", "AP")] == pytest.approx(20.0)
