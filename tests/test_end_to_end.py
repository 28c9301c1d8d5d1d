"""A tiny end-to-end run through the real CLI: pretrain -> kNN and linear probes on the encoder
and the two sanity encoders -> atomic records -> report; a re-run skips finished jobs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "--set", "data.train_subset=256", "--set", "pretrain.epochs=2", "--set", "pretrain.batch_size=64",
    "--set", "pretrain.monitor.holdout=128", "--set", "pretrain.progress=false", "--set", "threads=1",
    "--set", "tasks.knn.train_limit=500",
    "--set", "tasks.linear.train_limit=500", "--set", "tasks.linear.holdout=100",
    "--set", "tasks.linear.epochs=3", "--set", "tasks.linear.milestones=[2]",
]


def run_cli(tmp_path: Path, data_root: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmark", "run", "--method", "invp", "--tasks", "knn,linear",
           "--profile", "mini", "--data-root", str(data_root), "--out", str(tmp_path / "runs"),
           "--results", str(tmp_path / "results"), "--reports", str(tmp_path / "reports"),
           "--sweeps", str(tmp_path / "sweeps"), *TINY, *extra]
    return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_run_produces_records_and_report_then_skips(tmp_path: Path, data_root: Path):
    first = run_cli(tmp_path, data_root)
    assert first.returncode == 0, first.stdout + first.stderr
    files = sorted((tmp_path / "results" / "mini").glob("*.json"))
    assert len(files) == 6  # (knn, linear) x (pretrained, random, pixels)
    records = [r for f in files for r in json.loads(f.read_text())["records"]]
    encoders = {r["encoder"] for r in records}
    assert encoders == {"pretrained", "random", "pixels"}
    knn = {r["encoder"]: r["value"] for r in records
           if r["task"] == "knn" and r["metric"] == "top1"}
    assert all(0.1 < v <= 1.0 for v in knn.values()), knn  # well above chance (10 classes)
    for r in records:
        assert r["config_hash"] and r["git_commit"] and r["versions"]["torch"]
        assert (r["checkpoint_hash"] is not None) == (r["encoder"] == "pretrained")
    report = (tmp_path / "reports" / "mini.md").read_text()
    assert "InvP" in report and "random init" in report and "raw pixels" in report
    assert len(list((tmp_path / "runs" / "mini").glob("invp-*/encoder.pt"))) == 1

    second = run_cli(tmp_path, data_root)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("[ cached]") == 7  # the pretraining and all six task jobs
    assert sorted((tmp_path / "results" / "mini").glob("*.json")) == files
