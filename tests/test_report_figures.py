"""Figure helpers: the numbers behind Fig. 2a/2b and the PNGs they draw, training curves."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.report.figures import (
    easy_hard_positives,
    knn_table,
    last_epoch_summary,
    neighbour_similarities,
    plot_positive_grid,
    plot_similarity_distributions,
    plot_training_curves,
    read_log,
)

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


def test_figures_are_written_as_png(tmp_path: Path) -> None:
    same, diff = torch.rand(20, 5), torch.rand(20, 5) - 0.5
    assert is_png(plot_similarity_distributions({"InvP": (same, diff), "InsDis": (diff, same)},
                                                tmp_path / "a.png"))
    images = torch.rand(12, 1, 8, 8)
    path = plot_positive_grid(images, torch.tensor([0, 1]), torch.tensor([[2, 3], [4, 5]]),
                              torch.tensor([[6, 7], [8, 9]]), tmp_path / "b.png")
    assert is_png(path)


def test_training_curves_tolerate_missing_keys(tmp_path: Path) -> None:
    invp = [{"epoch": e, "loss": 9 - e, "loss_inv": 1.0, "pos_precision": 0.5 + e / 10,
             "knn_top1": 0.5, "lr": 0.03} for e in range(1, 4)]
    insdis = [{"epoch": e, "loss": 8 - e} for e in range(1, 4)]  # no diagnostics at all
    path = plot_training_curves({"InvP": [invp, invp], "InsDis": [insdis]}, tmp_path / "c.png")
    assert is_png(path)
    with pytest.raises(ValueError, match="no loss, knn, precision or unique keys"):
        plot_training_curves({"X": [[{"epoch": 1, "lr": 0.1}]]}, tmp_path / "d.png")


def test_read_log_names_the_bad_line(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n\n{broken\n")
    with pytest.warns(UserWarning, match=r"log.jsonl, line 3: dropping '\{broken'"):
        assert read_log(log) == [{"epoch": 1, "loss": 2.0}]
    log.write_text(json.dumps({"epoch": 1, "loss": 2.0}) + "\n")
    assert read_log(log) == [{"epoch": 1, "loss": 2.0}]


def test_report_links_training_curves_found_through_the_stored_jobs(tmp_path: Path) -> None:
    from dataclasses import replace

    from benchmark.core.config import resolve
    from benchmark.harness.plan import plan_run
    from benchmark.report.export import write_report
    from benchmark.core.store import ResultStore
    from report_support import BASE

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
    assert "![Training curves per method (one line per seed)](mini_figures/training_curves.png)" in text
    section = text.split("## Pretraining diagnostics at the last epoch", 1)[1]
    diagnostics = next(ln for ln in section.splitlines() if ln.startswith("| InvP"))
    assert "0.200 (n=1)" in diagnostics and "2.500 (n=1)" in diagnostics  # epoch 2: precision, loss
    assert is_png(tmp_path / "reports" / "mini_figures" / "training_curves.png")


def test_report_draws_fig2_from_the_invp_and_insdis_encoders(tmp_path: Path, data_root: Path) -> None:
    from dataclasses import replace

    from benchmark.core.config import resolve
    from benchmark.models.heads import build_head
    from benchmark.models.registry import build_backbone
    from benchmark.harness.plan import plan_run
    from benchmark.report.export import write_report
    from benchmark.core.store import ResultStore
    from report_support import BASE

    store = ResultStore(tmp_path / "results" / "mini")
    for method in ("invp", "insdis"):
        cfg = resolve("mini", method, [], 0)
        run_dir = Path(plan_run(cfg, [], tmp_path / "runs", sanity=False)[0].pretrain_dir)
        run_dir.mkdir(parents=True)
        backbone = build_backbone(cfg.model)
        head = build_head(cfg.model, backbone.feature_dim)
        torch.save({"backbone": backbone.state_dict(), "head": head.state_dict(),
                    "config": cfg.to_dict(), "config_hash": cfg.hash, "epoch": 0}, run_dir / "encoder.pt")
        rec = replace(BASE, method=method, method_config=cfg.method.to_dict(), profile="mini",
                      dataset="fashion_mnist", split="test", job_id=f"j-{method}")
        store.save({"job_id": f"j-{method}", "config": cfg.to_dict()}, [rec])
    report = write_report(tmp_path / "results", tmp_path / "reports", "mini",
                          runs_dir=tmp_path / "runs", data_root=data_root).read_text()
    for name in ("fig2a_similarity.png", "fig2b_positives.png"):
        assert f"(mini_figures/{name})" in report
        assert is_png(tmp_path / "reports" / "mini_figures" / name)


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
