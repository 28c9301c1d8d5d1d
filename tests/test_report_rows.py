"""Report rows: one row per pretraining configuration up to the seed, labelled by what differs
from the profile's default, and mapped to the paper row of the same head, epochs and backbone."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from report_support import TASKS, record, save, seeds
from test_report_tables import cell, table

from benchmark.core.config import resolve
from benchmark.report.frame import load_frame, records_frame
from benchmark.report.render import render_markdown

REPO = Path(__file__).resolve().parents[1]


def runs(profile: str, values: list[float], overrides: tuple[str, ...] = (), **changes: Any):
    """(records, job configs) of one seed per value, as the harness stores them."""
    records, configs = [], {}
    for seed, value in enumerate(values):
        cfg = resolve(profile, "invp", list(overrides), seed=seed).to_dict()
        job_id = f"{profile}-{'-'.join(overrides) or 'default'}-{seed}".replace("=", "_").replace(".", "_")
        records.append(record(value=value, seed=seed, profile=profile, job_id=job_id,
                              method_config=cfg["method"], pretrain_epochs=cfg["pretrain"]["epochs"],
                              backbone=cfg["model"]["backbone"], **changes))
        configs[job_id] = cfg
    return records, configs


def test_20_and_200_epoch_runs_are_two_rows_and_only_the_200_epoch_one_meets_table_5() -> None:
    records = seeds([0.60, 0.61, 0.62], pretrain_epochs=20) + seeds([0.63] * 2, pretrain_epochs=200)
    frame = records_frame(records, tasks=TASKS)
    assert sorted(frame["row"].unique()) == ["InvP", "InvP · 200 ep"]
    rows = table(render_markdown(frame, "imagenet", tasks=TASKS), "Table 5")
    assert cell(rows, "InvP", "ImageNet ours").startswith("61.00 ± 1.00 (n=3)")  # not n=6
    assert cell(rows, "InvP", "paper row") == "—"  # 20 epochs: shown, never compared
    assert cell(rows, "InvP · 200 ep", "paper row") == "InvP"
    assert cell(rows, "InvP · 200 ep", "ImageNet Δ") == "-0.30"


def test_an_lr_grid_gives_one_row_per_lr_and_the_profile_default_keeps_the_bare_label(tmp_path: Path) -> None:
    records, configs = runs("mini", [0.7], dataset="fashion_mnist", split="test")  # lr 0.03: the default
    for lr, value in (("0.06", 0.8), ("0.12", 0.9)):
        more, more_configs = runs("mini", [value] * 3, (f"pretrain.optimizer.lr={lr}",),
                                  dataset="fashion_mnist", split="test")
        records += more
        configs.update(more_configs)
    save(tmp_path / "mini", records, configs)
    frame = load_frame(tmp_path, "mini", TASKS)
    by_row = frame.groupby("row")["value"].agg(["mean", "count"])
    assert by_row["count"].to_dict() == {"InvP": 1, "InvP · lr 0.06": 3, "InvP · lr 0.12": 3}
    assert by_row.loc["InvP · lr 0.12", "mean"] == 0.9


def test_an_mlp_head_invp_run_meets_the_papers_mlp_row(tmp_path: Path) -> None:
    records, configs = runs("imagenet-mlp", [0.71] * 3)
    save(tmp_path / "imagenet-mlp", records, configs)
    md = render_markdown(load_frame(tmp_path, "imagenet-mlp", TASKS), "imagenet-mlp", tasks=TASKS)
    rows = table(md, "Table 1")
    assert cell(rows, "InvP", "paper row") == "InvP (ResNet-50-MLP)"
    assert cell(rows, "InvP", "ImageNet paper") == "71.3"
    assert cell(rows, "InvP (ResNet-50)", "ImageNet paper") == "67.7"  # the linear row: paper only
    assert cell(rows, "InvP (ResNet-50)", "ImageNet ours") == "—"


def test_external_weights_are_one_row_per_file_named_by_the_weights() -> None:
    def external(name: str, sha: str, seed: int) -> dict:
        return record(method="external", method_config={}, encoder="external", seed=seed,
                      job_id=f"ext-{sha}-{seed}", extra={"weights": {"name": name, "sha256": sha}})

    frame = records_frame([external("torchvision r50", "aa", 0), external("torchvision r50", "aa", 1),
                           external("dino r50", "bb", 0)], tasks=TASKS)
    assert frame.groupby("row")["seed"].count().to_dict() == {"dino r50": 1, "torchvision r50": 2}


def test_committed_mini_records_give_the_rows_they_gave_plus_the_second_random_init() -> None:
    """The six methods, the two ablations and the sanity rows; the linear probes also ran on the
    random init of MoCo v2's model (MLP head, Kaiming init), a different encoder (layer4 top-1
    0.54 against 0.26) that used to be pooled into the random-init row. Raw pixels do not depend
    on the model: one row."""
    frame = load_frame(REPO / "results", "mini")
    assert set(frame["row"]) == {
        "InvP", "InsDis", "KNN-positive", "MoCo v2", "InterCLR", "CLIM",
        "InvP without hard positive", "InvP without hard negative",
        "random init (sanity)", "random init (sanity) · head mlp · init kaiming",
        "raw pixels (sanity)"}


def test_compare_keeps_the_same_rows_apart_as_the_report() -> None:
    from benchmark.report.compare import load_cells

    rows = set(load_cells(REPO / "results" / "mini").index.get_level_values("row"))
    assert "random init (sanity) · head mlp · init kaiming" in rows and "random init (sanity)" in rows
