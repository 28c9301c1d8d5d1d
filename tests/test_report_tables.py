"""The paper tables of the report, checked on the Markdown rendered from synthetic records."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from report_support import INVP_CONFIG, TASKS, record, seeds

from benchmark.report.frame import records_frame
from benchmark.report.paper_tables import load_paper, row_label
from benchmark.report.render import render_markdown

MINI = {"profile": "mini", "dataset": "fashion_mnist", "split": "test"}


def render(records, profile="imagenet", skips=(), **kwargs) -> str:
    return render_markdown(records_frame(records, skips, TASKS), profile, tasks=TASKS, **kwargs)


def table(markdown: str, title: str) -> list[list[str]]:
    """Cells of the Markdown table under the heading starting with ``### title``."""
    section = markdown.split(f"### {title}", 1)[1]
    block = next(b for b in section.split("\n\n") if b.startswith("|"))
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]


def cell(rows: list[list[str]], row: str, column: str) -> str:
    header = rows[0]
    found = [r for r in rows[2:] if r[0] == row]
    assert found, f"no row {row!r} in {[r[0] for r in rows[2:]]}"
    return found[0][header.index(column)]


def footnote(markdown: str, text: str) -> str:
    number = re.search(r"\[\^(\d+)\]", text).group(1)
    return re.search(rf"^\[\^{number}\]: (.*)$", markdown, re.M).group(1)


def test_ours_beside_paper_with_delta_and_tolerance_mark() -> None:
    md = render(seeds([0.60, 0.61, 0.62]) + seeds([0.540, 0.544, 0.536], method="insdis",
                                                    method_config={"name": "insdis"}, pretrain_epochs=200))
    rows = table(md, "Table 1")
    assert cell(rows, "InvP", "paper row") == "InvP (ResNet-50)"
    assert cell(rows, "InvP", "ImageNet paper") == "67.7"
    assert cell(rows, "InvP", "ImageNet ours").startswith("61.00 ± 1.00 (n=3)")
    assert cell(rows, "InvP", "ImageNet Δ") == "-6.70 ⚠"
    assert cell(rows, "InsDis", "ImageNet Δ") == "+0.00"  # 54.0 exactly: inside the tolerance
    assert cell(rows, "PIRL", "VOC07 paper") == "81.1"  # a paper-only baseline row
    assert cell(rows, "PIRL", "VOC07 ours") == "—"


def test_cells_without_records_say_not_run_and_why() -> None:
    skip = {"job": {"job_id": "s", "task": "places205_linear", "encoder": "pretrained",
                    "method": "invp", "config": {"method": INVP_CONFIG, "seed": 0,
                                                 "tasks": {"places205_linear": {"dataset": "places205"}}}},
            "reason": "dataset missing: places205: folder not found under data/places205"}
    md = render(seeds([0.6, 0.6, 0.6]), skips=[skip])
    rows = table(md, "Table 1")
    assert cell(rows, "InvP", "Places205 ours") == "not run: dataset missing"
    assert cell(rows, "InvP", "VOC07 ours") == "not run"
    assert cell(table(md, "Table 3"), "InvP", "CIFAR10 ours") == "not run"
    assert cell(table(md, "Table 4"), "InvP", "AP paper") == "56.2"


def test_one_seed_and_dirty_tree_are_marked_and_footnoted() -> None:
    md = render([record(value=0.5, git_dirty=True, git_commit="0123456789abcdef")])
    ours = cell(table(md, "Table 1"), "InvP", "ImageNet ours")
    assert ours.startswith("50.00 (n=1) † ‡ [^") and "±" not in ours
    note = footnote(md, ours)
    assert "commit 0123456789 (dirty)" in note
    assert "seeds 0" in note and "config cfg0" in note


def test_footnote_lists_settings_that_differ_from_the_paper_and_epochs() -> None:
    md = render(seeds([0.6, 0.6, 0.6]))
    note = footnote(md, cell(table(md, "Table 1"), "InvP", "ImageNet ours"))
    assert "temperature 0.2 (paper 0.07)" in note
    assert "n_pos 20 (paper 50)" in note
    assert "k 4" not in note  # equal to the paper's: not listed
    assert "pretrain epochs 800 (paper 800)" in note
    assert "config cfg0, cfg1, cfg2" in note and "device cpu" in note
    table5 = footnote(md, cell(table(md, "Table 5"), "InvP", "ImageNet ours"))
    assert "pretrain epochs 800 (paper 200)" in table5


def test_table5_rows_come_from_method_config_overrides() -> None:
    ep200 = {"pretrain_epochs": 200}
    records = (seeds([0.633, 0.633, 0.633], **ep200)
               + seeds([0.60, 0.60, 0.60], method_config={**INVP_CONFIG, "hard_positive": False}, **ep200)
               + seeds([0.62] * 3, method_config={**INVP_CONFIG, "n_background": "all"}, **ep200)
               + seeds([0.58] * 3, method_config={**INVP_CONFIG, "steps": 1}, **ep200)
               + seeds([0.576] * 3, method="knn", method_config={"name": "knn"}, **ep200))
    rows = table(render(records), "Table 5")
    assert cell(rows, "InvP without hard positive", "paper row") == "without hard positive"
    assert cell(rows, "InvP without hard positive", "ImageNet Δ") == "-0.70"
    assert cell(rows, "InvP without hard negative", "ImageNet paper") == "61.9"
    assert cell(rows, "KNN (InvP, l = 1)", "paper row") == "—"  # the paper's KNN is KNN-positive
    assert cell(rows, "KNN (InvP, l = 1)", "ImageNet Δ") == ""
    assert cell(rows, "KNN-positive", "ImageNet Δ") == "+0.00"
    assert cell(rows, "InvP", "ImageNet Δ") == "+0.00"


@pytest.mark.parametrize(
    ("method", "overrides", "encoder", "label"),
    [
        ("invp", {}, "pretrained", "InvP"),
        ("invp", {"hard_positive": False}, "pretrained", "InvP without hard positive"),
        ("invp", {"n_background": "ALL"}, "pretrained", "InvP without hard negative"),
        ("invp", {"steps": 1}, "pretrained", "KNN (InvP, l = 1)"),
        ("knn", {}, "pretrained", "KNN-positive"),
        ("insdis", {}, "pretrained", "InsDis"),
        ("mocov2", {}, "pretrained", "MoCo v2"),
        ("invp", {}, "random", "random init (sanity)"),
        ("pixels", {}, "pixels", "raw pixels (sanity)"),
        ("newmethod", {}, "pretrained", "newmethod"),
    ],
)
def test_row_labels(method: str, overrides: dict, encoder: str, label: str) -> None:
    config = {**INVP_CONFIG, **overrides} if method == "invp" else overrides
    assert row_label(method, config, encoder) == label


def test_mini_report_has_its_own_tables_without_paper_numbers_and_sanity_rows() -> None:
    records = (seeds([0.60, 0.61, 0.62], **MINI)
               + seeds([0.3, 0.3, 0.3], method="random", method_config={}, encoder="random", **MINI)
               + seeds([0.2, 0.2, 0.2], method="pixels", method_config={}, encoder="pixels", **MINI)
               + seeds([0.9, 0.9, 0.9], task="knn", **MINI))
    md = render(records, profile="mini")
    rows = table(md, "Table 1")
    assert rows[0] == ["row", "ImageNet (stand-in: fashion_mnist)"]
    assert [r[0] for r in rows[2:]] == ["InvP", "random init (sanity)", "raw pixels (sanity)"]
    assert cell(rows, "raw pixels (sanity)", "ImageNet (stand-in: fashion_mnist)").startswith("20.00 ± 0.00 (n=3)")
    assert "67.7" not in md and "paper" not in rows[0]
    assert "### Table 3" not in md  # nothing ran there and no paper numbers are shown
    assert cell(table(md, "Other evaluations"), "InvP", "knn: top1 (fashion_mnist)").startswith("90.00")


def test_stand_in_columns_are_never_compared_even_with_paper_numbers_on() -> None:
    md = render(seeds([0.6, 0.6, 0.6], **MINI), profile="mini", compare=True)
    rows = table(md, "Table 1")
    assert "ImageNet (stand-in: fashion_mnist) ours" in rows[0]
    assert "ImageNet (stand-in: fashion_mnist) Δ" not in rows[0]
    assert cell(rows, "InvP", "ImageNet ours") == "not run"  # the paper's dataset column


def test_rows_with_different_method_configs_are_kept_apart() -> None:
    md = render(seeds([0.6, 0.6, 0.6]) + [record(value=0.7, method_config={**INVP_CONFIG, "temperature": 0.5}, seed=5)])
    rows = table(md, "Table 1")
    assert cell(rows, "InvP", "ImageNet ours").startswith("60.00 ± 0.00 (n=3)")
    assert cell(rows, "InvP · temperature 0.5", "ImageNet ours").startswith("70.00 (n=1)")


def test_held_out_selection_numbers_stay_out_of_the_tables() -> None:
    md = render(seeds([0.6, 0.6, 0.6]) + seeds([0.99, 0.99, 0.99], split="holdout"))
    assert cell(table(md, "Table 1"), "InvP", "ImageNet ours").startswith("60.00")


def test_paper_file_cites_only_the_paper_and_files_inside_the_repository() -> None:
    from benchmark.report.paper_tables import PAPER_FILE

    text = PAPER_FILE.read_text()
    for outside in ("shared/", "../", "/work", "http", "search tool", "corpus"):
        assert outside not in text, outside
    for cited in re.findall(r"docs/[\w./-]+\.md", text):
        assert (PAPER_FILE.parents[3] / cited).is_file(), cited


def test_paper_file_is_consistent() -> None:
    paper = load_paper()
    for key, spec in paper.tables.items():
        printed = set(paper.paper_rows(key))
        assert {ref.row for refs in spec.reference.values() for ref in refs} <= printed, key
        assert all(n.source.startswith("P Table") for k, n in paper.numbers.items() if k[0] == key)
    assert paper.number("Table 5", "KNN", "ImageNet").value == 57.6


@pytest.mark.parametrize(("text", "message"), [
    ("tables:\n  Table 1:\n    columns: [{name: ImageNet, metric: top1}]\n"
     "numbers:\n  - {table: Table 1, row: X, column: Places, value: 1, source: s}\n",
     r"paper.yaml.*no column 'Places'"),
    ("tables: {}\nnumbers: []\nrelated_numbers:\n"  # unquoted comma: an extra key
     "  - {method: X, benchmark: VOC07 SVM, best layer, value: 1, protocol: p, source: s}\n",
     r"paper.yaml.*related_numbers entry 0 needs exactly"),
    ("tables:\n  Table 5:\n    columns: [{name: ImageNet, metric: top1}]\n"
     "    reference: {KNN-positive: KNN, 'KNN (InvP, l = 1)': KNN}\nnumbers: []\n",
     r"paper.yaml.*paper row 'KNN' is the counterpart of both 'KNN-positive' and 'KNN \(InvP"),
])
def test_bad_paper_file_names_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "paper.yaml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_paper(bad)


def test_multi_metric_and_multi_dataset_tasks_find_their_columns() -> None:
    records = (seeds([0.78, 0.78, 0.78], task="semisup", metric="top5_1pct")
               + seeds([0.5, 0.5, 0.5], task="semisup", metric="top1_1pct")
               + seeds([0.98] * 3, task="transfer", dataset="cifar10", split="test")
               + seeds([0.9] * 3, task="transfer", dataset="oxford_pets", metric="mean_per_class")
               + seeds([55.0] * 3, task="detection", dataset="voc_detection", metric="AP")
               + seeds([0.4] * 3, task="detection", dataset="voc_detection", metric="AP50")
               + seeds([0.7] * 3, task="linear_multilayer") + seeds([0.68] * 3))
    md = render(records)
    assert cell(table(md, "Table 2"), "InvP", "1% Δ") == "+1.30 ⚠"
    assert "top1_1pct" not in table(md, "Table 2")[0]  # not a paper column
    rows3 = table(md, "Table 3")
    assert cell(rows3, "InvP", "CIFAR10 Δ") == "+0.10"
    assert cell(rows3, "InvP", "Pets ours").startswith("90.00")
    assert cell(rows3, "InvP", "Cars ours") == "not run"
    assert cell(table(md, "Table 4"), "InvP", "AP Δ") == "-1.20 ⚠"
    assert cell(table(md, "Table 4"), "InvP", "AP50 ours").startswith("0.40 ")  # already percent
    rows1 = table(md, "Table 1")
    assert cell(rows1, "InvP", "ImageNet [linear] Δ") == "+0.30"
    assert cell(rows1, "InvP", "ImageNet [linear_multilayer] Δ") == "+2.30 ⚠"


def test_stand_ins_the_columns_cannot_tell_apart_get_their_own_column() -> None:
    md = render(seeds([0.95] * 3, task="transfer", dataset="digits", **{k: v for k, v in MINI.items() if k != "dataset"}),
                profile="mini")
    assert cell(table(md, "Table 3"), "InvP", "transfer: top1 (stand-in: digits)").startswith("95.00")


def test_every_registered_paper_task_lands_in_a_paper_table() -> None:
    from benchmark.report.frame import registry_task_info

    paper = load_paper()
    for name, info in registry_task_info().items():
        if info.paper_table is not None:
            assert info.paper_table in paper.tables, name
            assert any(paper.tables[info.paper_table].has_metric(m) for m in info.metrics), name


def test_a_paper_profile_without_records_still_shows_the_paper_tables() -> None:
    md = render([], profile="imagenet")
    assert cell(table(md, "Table 5"), "InvP", "ImageNet ours") == "not run"
    assert cell(table(md, "Table 5"), "InvP", "ImageNet paper") == "63.3"
    assert render([], profile="mini").endswith("No result records found.\n")


def test_ordering_check_gives_every_pair_a_verdict_and_the_summary_counts_all_four() -> None:
    records = (seeds([0.60, 0.61, 0.62], **MINI)
               + seeds([0.64, 0.65, 0.64], method_config={**INVP_CONFIG, "hard_positive": False}, **MINI)
               + seeds([0.50, 0.51, 0.50], method="knn", method_config={"name": "knn"}, **MINI)
               + [record(value=0.62, method_config={**INVP_CONFIG, "n_background": "all"}, **MINI)])
    md = render(records, profile="mini")
    line = next(ln for ln in md.splitlines() if ln.startswith("- **Table 5"))
    assert "1 disagrees" in line and "2 agrees" in line and "3 cannot tell" in line
    assert "InvP > InvP without hard positive: disagrees" in line  # 61 vs 64.3, tight seeds
    assert "InvP > KNN-positive: agrees" in line
    assert "InvP > InvP without hard negative: cannot tell" in line  # one seed
    assert "Ours: InvP without hard positive 64.33 ± 0.58 (n=3) > InvP without hard negative 62.00 (n=1)" in line
    assert "Welch's two-sided t-test at α = 0.05" in md
    assert "Over 6 ordered pairs in 1 columns: 2 agrees, 1 disagrees, 0 within noise, 3 cannot tell." in md
    assert "- **Table 1" not in md  # a single row with a paper counterpart: nothing to order


def test_related_methods_numbers_are_listed_with_their_protocol_only_beside_the_paper() -> None:
    paper_view = render(seeds([0.68] * 3))
    section = paper_view.split("## Numbers the related methods report", 1)[1].split("\n## ", 1)[0]
    assert "| InterCLR | VOC07 SVM mAP, best layer (feature5) | 85.24 |" in section
    assert "| CLIM | ImageNet linear top-1 (ResNet-50) | 75.5 | epochs, batch" in section
    assert "docs/methods/clim.md §Reported numbers" in section
    assert "Numbers the related methods report" not in render(seeds([0.68] * 3), profile="mini")


def test_detection_trials_of_one_encoder_pool_into_mean_and_std() -> None:
    """Each trial is its own job (tasks/detection: seed + trial); the report pools the trials of
    every seed into the cell's mean ± sample std, as MoCo averages its 5 trials."""
    trials = [record(task="detection", dataset="voc_detection", split="test", metric="AP",
                     value=v, job_id=f"det-trial{t}", extra={"trial": t, "trials": 5})
              for t, v in enumerate([54.0, 55.0, 56.0, 57.0, 58.0])]
    ours = cell(table(render(trials), "Table 4"), "InvP", "AP ours")
    assert ours.startswith("56.00 ± 1.58 (n=1)")


def test_a_stand_in_column_no_record_fills_is_left_out() -> None:
    skip = {"job": {"job_id": "s", "task": "transfer", "encoder": "pixels", "method": "pixels",
                    "config": {"seed": 0, "profile": "mini", "tasks": {"transfer": {"datasets": ["digits"]}}}},
            "reason": "not applicable: raw pixels cannot be fine-tuned"}
    md = render(seeds([0.95] * 3, task="transfer", dataset="digits", split="test", profile="mini"),
                profile="mini", skips=[skip])
    header = table(md, "Table 3")[0]
    assert header == ["row", "transfer: top1 (stand-in: digits)"]  # no voc11_map / mean_per_class column
    assert cell(table(md, "Table 3"), "raw pixels (sanity)",
                "transfer: top1 (stand-in: digits)") == "not run: not applicable"


def test_a_few_class_stand_in_fills_the_papers_top5_column_with_top1_and_says_so() -> None:
    semisup = {"task": "semisup", **MINI}
    md = render(seeds([0.70] * 3, metric="top1_1pct", **semisup)
                + seeds([0.99] * 3, metric="top5_1pct", **semisup), profile="mini")
    rows = table(md, "Table 2")
    assert rows[0] == ["row", "1% (stand-in: fashion_mnist, top-1: 10 classes)"]
    assert cell(rows, "InvP", rows[0][1]).startswith("70.00")  # the top-5 (99 %) is not shown here


def test_voc07_headers_name_our_map_variant_and_the_table_names_the_papers() -> None:
    voc = {"task": "voc07_lbfgs", "dataset": "voc07_cls", "split": "test"}
    md = render(seeds([0.80] * 3, metric="voc11_map", **voc) + seeds([0.81] * 3, metric="voc11_map_pr", **voc))
    header = table(md, "Table 1")[0]
    assert "VOC07 [11-point devkit] ours" in header and "VOC07 [11-point PR curve] ours" in header
    assert cell(table(md, "Table 1"), "InvP", "VOC07 [11-point PR curve] ours").startswith("81.00")
    assert ("mAP variants (VOC07: the paper's numbers are InvP sklearn AP, SimCLR 11-point PR "
            "curve, PIRL not stated); ours are named in each column header.") in md.split("### Table 1")[1]


def test_provenance_table_names_the_accelerators() -> None:
    gpu = {"cuda": "12.4", "cudnn": "90100", "driver": "550.54.15", "gpu": "NVIDIA H200", "world_size": 4}
    md = render([record(accelerator=gpu), record(seed=1, accelerator={}),
                 record(seed=2, method="insdis", method_config={"name": "insdis"},
                        accelerator={**gpu, "gpu": None, "world_size": 1})])
    section = md.split("## Provenance by row", 1)[1]
    invp = next(line for line in section.splitlines() if line.startswith("| InvP "))
    assert "NVIDIA H200 (CUDA 12.4, cuDNN 90100, driver 550.54.15) x 4" in invp
    assert "cpu x 1" in next(line for line in section.splitlines() if line.startswith("| InsDis "))
