"""Figure helpers: the numbers behind Fig. 2a/2b and the PNGs they draw, training curves."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest
import torch

from benchmark.report.figure_inputs import (
    SIMILARITY_EDGES,
    dense_counts,
    easy_hard_positives,
    histogram,
    knn_table,
    read_log,
)
from benchmark.report.figures import (
    curve_bands,
    curves_figure,
    grid_cells,
    last_epoch_summary,
    positive_grid_figure,
    save_figure,
    similarity_figure,
)
from tasks.diagnostic_measures import nearest_similarities as neighbour_similarities

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


def test_neighbour_similarities_match_a_brute_force_count() -> None:
    g = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    same, diff = neighbour_similarities(features, labels, k=3, chunk=7)
    z = torch.nn.functional.normalize(features, dim=1)
    for i in (0, 17, 39):
        sims = z @ z[i]
        same_i = sorted((sims[j].item() for j in range(40) if j != i and labels[j] == labels[i]), reverse=True)[:3]
        diff_i = sorted((sims[j].item() for j in range(40) if labels[j] != labels[i]), reverse=True)[:3]
        assert same[i].tolist() == pytest.approx(same_i, abs=1e-6)
        assert diff[i].tolist() == pytest.approx(diff_i, abs=1e-6)


def test_clustered_features_have_high_same_class_similarity() -> None:
    g = torch.Generator().manual_seed(1)
    centres = torch.eye(4) * 5
    labels = torch.arange(4).repeat_interleave(10)
    features = centres[labels] + 0.3 * torch.randn(40, 4, generator=g)
    same, diff = neighbour_similarities(features, labels)
    assert same.mean() > 0.9 > diff.mean() + 0.5


def test_easy_and_hard_positives_on_a_chain() -> None:
    # Points on an arc: neighbours in the graph are the adjacent angles, so propagating 3 steps
    # reaches farther (less similar) points than the direct neighbours.
    angles = torch.linspace(0, 1.5, 30)
    features = torch.stack([angles.cos(), angles.sin()], dim=1)
    anchors = torch.tensor([15])
    easy, hard = easy_hard_positives(features, anchors, k=2, steps=3, n_show=2)
    assert sorted(easy[0].tolist()) == [14, 16]
    assert sorted(hard[0].tolist()) == [12, 18]  # three hops away on either side
    assert knn_table(features, 2)[0].tolist() == [1, 2]


def group(same: torch.Tensor, diff: torch.Tensor) -> dict:
    """A Fig. 2a group of one seed from similarity values."""
    return {"same": dense_counts(histogram(same)).tolist(), "diff": dense_counts(histogram(diff)).tolist(),
            "same_mean": float(same.mean()), "diff_mean": float(diff.mean()), "runs": 1}


def test_histograms_round_trip_on_the_shared_edges() -> None:
    values = torch.tensor([-1.0, -0.999, 0.5, 0.5, 1.0, float("-inf")])
    stored = histogram(values)
    assert stored["first"] == 0 and sum(stored["counts"]) == 5  # -inf (no neighbour) left out
    counts = dense_counts(stored)
    assert counts[0] == 2 and counts[600] == 2 and counts[-1] == 1 and len(SIMILARITY_EDGES) == 801


def test_fig2a_panels_share_one_similarity_axis(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    narrow = 0.98 + 0.02 * torch.rand(200, generator=g)  # InvP's cone
    wide = 0.4 + 0.6 * torch.rand(200, generator=g)
    fig = similarity_figure({"InvP": group(narrow, narrow - 0.001), "InsDis": group(wide, wide - 0.1)},
                            SIMILARITY_EDGES)
    invp, insdis = fig.axes[:2]
    assert invp.get_xlim() == insdis.get_xlim()
    low, high = invp.get_xlim()
    assert low < 0.35 and high >= 1.0  # the wide panel's range, with the narrow one inside it
    assert is_png(save_figure(fig, tmp_path / "a.png"))


def test_fig2b_marks_each_positive_same_class_or_not_from_the_labels(tmp_path: Path) -> None:
    grid = {"anchors": [0, 1], "easy": [[2, 3], [4, 5]], "hard": [[6, 7], [8, 9]],
            "labels": {str(i): label for i, label in enumerate([0, 1, 0, 1, 1, 1, 0, 2, 1, 0])},
            "class_names": ["T-shirt", "Trouser", "Bag"]}
    cells = grid_cells(grid)
    assert [same for _, _, _, same in cells[0]] == [True, True, False, True, False]
    assert [same for _, _, _, same in cells[1]] == [True, True, True, True, False]
    assert cells[0][4] == ("hard", 7, 2, False)
    fig = positive_grid_figure(grid, {i: torch.rand(1, 8, 8) for i in range(10)})
    first_row = fig.axes[:5]
    assert [ax.get_title() for ax in first_row] == ["anchor\nT-shirt", "easy\nT-shirt", "easy\nTrouser",
                                                    "hard\nT-shirt", "hard\nBag"]
    frames = [matplotlib.colors.to_hex(ax.spines["top"].get_edgecolor()) for ax in first_row[1:]]
    green, red = matplotlib.colors.to_hex("tab:green"), matplotlib.colors.to_hex("tab:red")
    assert frames == [green, red, green, red]
    assert is_png(save_figure(fig, tmp_path / "b.png"))


def test_curve_bands_are_the_mean_and_std_over_three_seeds() -> None:
    logs = [[{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0, "knn_top1": 0.5}],
            [{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 2.0, "knn_top1": 0.7}],
            [{"epoch": 1, "loss": 4.0}, {"epoch": 2, "loss": 5.0}]]
    band = curve_bands(logs, "loss")
    assert band["mean"].tolist() == [4.0, 3.0]
    assert band["std"].tolist() == pytest.approx([1.0, 3 ** 0.5])
    knn = curve_bands(logs, "knn_top1")
    assert knn.index.tolist() == [2] and knn.loc[2, "n"] == 2 and knn.loc[2, "mean"] == pytest.approx(0.6)


def test_curves_draw_one_line_per_row_one_metric_per_panel_legend_outside(tmp_path: Path) -> None:
    invp = [{"epoch": e, "loss": 9 - e, "pos_precision": 0.5 + e / 10, "knn_top1": 0.5, "lr": 0.03}
            for e in range(1, 4)]
    clim = [{"epoch": e, "loss": 8 - e, "knn_precision": 0.3, "knn_top1": 0.6} for e in range(1, 4)]
    fig = curves_figure({"InvP": [invp, invp, invp], "CLIM": [clim, clim]})
    titles = {ax.get_title(): ax for ax in fig.axes if ax.axison}
    assert set(titles) == {"total loss", "kNN monitor top-1 (embedding)", "precision of discovered positives",
                           "CLIM: precision of the kNN selection"}
    assert len(titles["total loss"].lines) == 2  # one per row, not one per seed
    assert len(titles["kNN monitor top-1 (embedding)"].lines) == 2
    assert len(titles["CLIM: precision of the kNN selection"].lines) == 1
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert is_png(save_figure(fig, tmp_path / "c.png"))
    with pytest.raises(ValueError, match="none of the curve keys"):
        curves_figure({"X": [[{"epoch": 1, "lr": 0.1}]]})


def test_read_log_names_the_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n\n{broken\n")
    with pytest.warns(UserWarning, match=r"log.jsonl, line 3: dropping '\{broken'"):
        assert read_log(log) == [{"epoch": 1, "loss": 2.0}]
    log.write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n")
    assert read_log(log) == [{"epoch": 1, "loss": 2.0}]


def test_report_links_training_curves_found_through_the_stored_jobs(tmp_path: Path) -> None:
    from dataclasses import replace

    from report_support import BASE

    from benchmark.core.config import resolve
    from benchmark.core.store import ResultStore
    from benchmark.harness.plan import plan_run
    from benchmark.report.export import write_report

    cfg = resolve("mini", "invp", [], 0)
    run_dir = Path(plan_run(cfg, [], tmp_path / "runs", sanity=False)[0].pretrain_dir)
    run_dir.mkdir(parents=True)
    run_dir.joinpath("log.jsonl").write_text(
        "\n".join(json.dumps({"epoch": e, "loss": 5.0 / e, "pos_precision": 0.1 * e}) for e in (1, 2)))
    rec = replace(BASE, method_config=cfg.method.to_dict(), profile="mini", dataset="fashion_mnist",
                  split="test", job_id="j1")
    ResultStore(tmp_path / "results" / "mini").save({"job_id": "j1", "config": cfg.to_dict()}, [rec])
    report = write_report(tmp_path / "results", tmp_path / "reports", "mini", runs_dir=tmp_path / "runs")
    text = report.read_text()
    assert "![Training curves: mean over seeds per row, band ± 1 std](mini_figures/training_curves.png)" in text
    section = text.split("## Pretraining diagnostics at the last epoch", 1)[1]
    diagnostics = next(ln for ln in section.splitlines() if ln.startswith("| InvP"))
    assert "0.200 (n=1)" in diagnostics and "2.500 (n=1)" in diagnostics  # epoch 2: precision, loss
    assert is_png(tmp_path / "reports" / "mini_figures" / "training_curves.png")


def make_runs(tmp_path: Path, seed: int = 0) -> None:
    """Randomly initialised InvP and InsDis mini encoders (init seed ``seed``) with a two-epoch
    log, and one stored result per method pointing at them."""
    from dataclasses import replace

    from report_support import BASE

    from benchmark.core.config import resolve
    from benchmark.core.store import ResultStore
    from benchmark.harness.plan import plan_run
    from benchmark.models.heads import build_head
    from benchmark.models.registry import build_backbone

    store = ResultStore(tmp_path / "results" / "mini")
    torch.manual_seed(seed)
    for method in ("invp", "insdis"):
        cfg = resolve("mini", method, [], 0)
        run_dir = Path(plan_run(cfg, [], tmp_path / "runs", sanity=False)[0].pretrain_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        backbone = build_backbone(cfg.model)
        head = build_head(cfg.model, backbone.feature_dim)
        torch.save({"backbone": backbone.state_dict(), "head": head.state_dict(),
                    "config": cfg.to_dict(), "config_hash": cfg.hash, "epoch": 0}, run_dir / "encoder.pt")
        run_dir.joinpath("log.jsonl").write_text("\n".join(
            json.dumps({"epoch": e, "loss": 5.0 / e, "knn_top1": 0.1 * e, "rankme": 3.0 + e}) for e in (1, 2)))
        rec = replace(BASE, method=method, method_config=cfg.method.to_dict(), profile="mini",
                      dataset="fashion_mnist", split="test", job_id=f"j-{method}")
        store.save({"job_id": f"j-{method}", "config": cfg.to_dict()}, [rec])


FIGURES = ("fig2a_similarity.png", "fig2b_positives.png", "training_curves.png")


def test_report_redraws_the_same_figures_from_the_stored_inputs_without_the_runs(
        tmp_path: Path, data_root: Path) -> None:
    import shutil

    from benchmark.report.export import write_report

    make_runs(tmp_path)
    report = write_report(tmp_path / "results", tmp_path / "with_runs", "mini",
                          runs_dir=tmp_path / "runs", data_root=data_root).read_text()
    for name in FIGURES:
        assert f"(mini_figures/{name})" in report and is_png(tmp_path / "with_runs" / "mini_figures" / name)
    stored = sorted((tmp_path / "results" / "mini" / "figures").glob("*.json"))
    assert [p.name.split("-")[0] for p in stored] == ["insdis", "invp"]
    assert all(p.stat().st_size < 20_000 for p in stored)
    record = json.loads(stored[1].read_text())
    assert {"encoder_sha256", "code_version", "fig2a", "fig2b", "curves"} <= record.keys()
    assert record["curves"][1] == {"epoch": 2, "loss": 2.5, "knn_top1": 0.2, "rankme": 5.0}
    shutil.rmtree(tmp_path / "runs")
    again = write_report(tmp_path / "results", tmp_path / "without_runs", "mini", data_root=data_root).read_text()
    for name in FIGURES:
        assert f"(mini_figures/{name})" in again
        assert (tmp_path / "without_runs" / "mini_figures" / name).read_bytes() == \
            (tmp_path / "with_runs" / "mini_figures" / name).read_bytes(), name


def test_a_stored_input_of_another_encoder_is_rewritten(tmp_path: Path, data_root: Path) -> None:
    from benchmark.report.export import write_report

    make_runs(tmp_path, seed=0)
    write_report(tmp_path / "results", tmp_path / "a", "mini", runs_dir=tmp_path / "runs", data_root=data_root)
    path = next((tmp_path / "results" / "mini" / "figures").glob("invp-*.json"))
    first = json.loads(path.read_text())
    write_report(tmp_path / "results", tmp_path / "b", "mini", runs_dir=tmp_path / "runs", data_root=data_root)
    assert json.loads(path.read_text()) == first  # same encoder: kept
    make_runs(tmp_path, seed=1)  # the run's encoder replaced by another one
    write_report(tmp_path / "results", tmp_path / "c", "mini", runs_dir=tmp_path / "runs", data_root=data_root)
    second = json.loads(path.read_text())
    assert second["encoder_sha256"] != first["encoder_sha256"]
    assert second["fig2a"] != first["fig2a"]


def test_last_epoch_summary_over_seeds() -> None:
    logs = {"InvP": [[{"epoch": 1, "pos_precision": 0.1}, {"epoch": 2, "pos_precision": 0.4}],
                     [{"epoch": 2, "pos_precision": 0.6, "loss": 3.0}]],
            "InsDis": [[{"epoch": 2, "loss": 5.0}]]}
    table = last_epoch_summary(logs)
    assert table.loc["InvP", "pos_precision"] == "0.500 ± 0.141 (n=2)"
    assert table.loc["InvP", "loss"] == "3.000 (n=1)"
    assert table.loc["InsDis", "pos_precision"] == "—"
    assert table.loc["InvP", "epochs"] == "2"


def test_the_report_reads_a_killed_runs_log_without_its_half_written_line(tmp_path):
    """A run killed mid-write and never resumed leaves a half-written last line: the figures skip
    it with a warning naming the file and line (it used to stop the report with a ValueError)."""
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 1, "loss": 2.0}\n{"epoch": 2, "loss": 1.5}\n{"epoch": 3, "lo')
    with pytest.warns(UserWarning, match=r"log\.jsonl, line 3: dropping"):
        assert [r["epoch"] for r in read_log(log)] == [1, 2]
