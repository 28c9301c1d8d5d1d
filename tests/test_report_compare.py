"""`benchmark compare` and `benchmark report` on result folders written by the real store."""
from __future__ import annotations

from pathlib import Path

import pytest
from report_support import record, save, seeds

from benchmark.harness.cli import main
from benchmark.report.compare import compare_folders

MINI = {"profile": "mini", "dataset": "fashion_mnist", "split": "test"}


def line(markdown: str, *parts: str) -> str:
    found = [ln for ln in markdown.splitlines() if all(f"| {p} |" in ln for p in parts)]
    assert len(found) == 1, (parts, markdown)
    return found[0]


def test_compare_reports_changed_same_and_one_sided_cells(tmp_path: Path) -> None:
    a = save(tmp_path / "a", seeds([0.60, 0.62], **MINI) + seeds([0.5], task="knn", **MINI))
    b = save(tmp_path / "b", seeds([0.70, 0.72], **MINI) + seeds([0.3], method="insdis",
                                                               method_config={"name": "insdis"}, **MINI))
    text, differing = compare_folders(a, b, tolerance=0.5)
    changed = line(text, "InvP", "linear", "top1")
    assert "61.00 ± 1.41 (n=2) | 71.00 ± 1.41 (n=2) | +10.00 | changed" in changed
    assert line(text, "InvP", "knn").endswith("| — |  | only in A |")
    assert line(text, "InsDis", "linear").endswith("only in B |")
    assert differing == 3
    same, none = compare_folders(a, a)
    assert none == 0 and "| same |" in same


def test_compare_cli_exit_status_and_bad_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = save(tmp_path / "results" / "mini", [record(**MINI)])
    assert main(["compare", str(a), str(a)]) == 0
    assert main(["compare", str(tmp_path / "results"), str(a)]) == 2
    assert "did you mean one of its profile folders: mini" in capsys.readouterr().err


def test_report_cli_writes_the_mini_report(tmp_path: Path) -> None:
    results = tmp_path / "results"
    save(results / "mini", seeds([0.6, 0.6, 0.6], **MINI)
         + seeds([0.2, 0.2, 0.2], method="pixels", method_config={}, encoder="pixels", **MINI))
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "reports" / "mini.md").read_text()
    assert "### Table 1" in text and "raw pixels (sanity)" in text and "67.7" not in text
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "reports"),
                 "--profile", "mini", "--paper", "--seeds", "5"]) == 0
    text = (tmp_path / "reports" / "mini.md").read_text()
    assert "67.7" in text and "(n=3) ‡" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["report", "--seeds", "0"], "--seeds must be at least 1"),
        (["report", "--runs", "nowhere"], "--runs nowhere is not a folder"),
        (["compare", "a", "b", "--tolerance", "-1"], "--tolerance must be >= 0"),
    ],
)
def test_bad_report_and_compare_options_name_the_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, argv: list, message: str
) -> None:
    save(tmp_path / "results" / "mini", [record(**MINI)])
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
