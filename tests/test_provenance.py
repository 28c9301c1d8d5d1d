"""The dirty flag: code or config changes mark a record dirty, run outputs do not."""
from __future__ import annotations

import subprocess
from pathlib import Path

from benchmark.core import provenance


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_dirty_flag_ignores_results_and_reports(tmp_path: Path, monkeypatch):
    git(tmp_path, "init", "-q")
    for rel in ("benchmark/x.py", "results/mini/a.json", "reports/mini.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("0\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(provenance, "REPO_ROOT", tmp_path)
    assert provenance.git_state()["git_dirty"] is False

    (tmp_path / "results/mini/a.json").write_text("1\n")
    (tmp_path / "reports/mini.md").write_text("1\n")
    assert provenance.git_state()["git_dirty"] is False

    (tmp_path / "benchmark/x.py").write_text("1\n")
    state = provenance.git_state()
    assert state["git_dirty"] is True and len(state["git_commit"]) == 40


def test_accelerator_info_is_none_on_a_cpu_but_the_world_size() -> None:
    assert provenance.accelerator_info("cpu", 1) == {
        "cuda": None, "cudnn": None, "driver": None, "gpu": None, "world_size": 1}


def test_accelerator_info_names_cuda_cudnn_driver_and_gpu(tmp_path: Path, monkeypatch) -> None:
    import torch

    driver = tmp_path / "version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 "
                      "22:23:56 UTC 2024\nGCC version:  gcc version 12.2.0\n")
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", driver)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert provenance.accelerator_info("cuda:0", 4) == {
        "cuda": "12.4", "cudnn": "90100", "driver": "550.54.15", "gpu": "NVIDIA H200", "world_size": 4}
    monkeypatch.setattr(provenance, "NVIDIA_DRIVER_FILE", tmp_path / "absent")
    assert provenance.accelerator_info("cuda:0", 1)["driver"] is None


def test_task_records_carry_the_accelerator_and_the_jobs_world_size(tmp_path: Path) -> None:
    import torch

    from benchmark.core.config import resolve
    from benchmark.harness import jobs
    from benchmark.harness.plan import plan_run
    from tasks.base import Measurement

    cfg = resolve("mini", "invp", [], 0)
    job = next(j for j in plan_run(cfg, ["knn"], tmp_path) if j.task == "knn")
    (rec,) = jobs.task_records(job, cfg, [Measurement("top1", 0.5, "fashion_mnist")], None,
                               torch.device("cpu"), 1.0, "2026-12-02T00:00:00+00:00", world_size=2)
    assert rec.accelerator == {"cuda": None, "cudnn": None, "driver": None, "gpu": None, "world_size": 2}
    assert rec.device.startswith("cpu:") and rec.device.endswith(" x 2 processes")
