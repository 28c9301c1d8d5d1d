"""``python -m benchmark sweep`` end to end with the real mini pipeline (pretraining + the kNN
task) on the local Slurm cluster, or on submitit's local executor where Slurm is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from slurm_fixtures import cluster, slurm_cluster  # noqa: F401

from benchmark.core.provenance import file_hash
from benchmark.data import get_dataset, resolve_data_root
from benchmark.harness.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("cluster", [pytest.param("slurm-or-local", marks=pytest.mark.slurm)],
                         indirect=True)
def test_sweep_runs_the_mini_pipeline_and_status_reports_it(cluster, tmp_path, capsys):
    data_root = resolve_data_root().resolve()
    if get_dataset("fashion_mnist").check(data_root):
        pytest.skip(f"Fashion-MNIST is not prepared under {data_root} (make data)")
    common = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
              "--sweeps", str(tmp_path / "sweeps"), "--name", "e2e"]
    args = ["sweep", "--methods", "insdis", "--tasks", "knn", "--seeds", "0", "--no-sanity",
            "--set", "pretrain.epochs=1", "--set", "data.train_subset=300",
            "--set", "pretrain.monitor.holdout=200", "--launcher", cluster, "--wait",
            "--cpus-per-task", "1", "--mem-gb", "3", "--time-min", "10",
            "--data-root", str(data_root), *common]
    assert main(args) == 0
    records = [r for path in (tmp_path / "results" / "mini").glob("*.json")
               for r in json.loads(path.read_text())["records"]]
    assert {(r["method"], r["task"], r["metric"]) for r in records} >= {("insdis", "knn", "top1")}
    top1 = next(r["value"] for r in records if r["metric"] == "top1")
    assert 0.1 < top1 <= 1.0  # better than chance on 10 classes
    encoder = next((tmp_path / "runs" / "mini").glob("insdis-*/encoder.pt"))
    assert {r["checkpoint_hash"] for r in records} == {file_hash(encoder)}  # this encoder's
    capsys.readouterr()
    assert main(["status", "e2e", "--sweeps", str(tmp_path / "sweeps"),
                 "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "2 done"
    assert str(encoder) in out
    assert main(["report", "--results", str(tmp_path / "results"), "--out",
                 str(tmp_path / "reports"), "--profile", "mini"]) == 0
    assert "InsDis" in (tmp_path / "reports" / "mini.md").read_text()
    assert main(args) == 0  # re-submitting a finished sweep submits nothing
    state = json.loads((tmp_path / "sweeps" / "e2e" / "sweep.json").read_text())
    assert state["submissions"][-1]["scheduler_ids"] == {}
    assert Path(state["submissions"][0]["folder"]).parent.is_dir()
