"""Exact resume: a pretraining killed at any moment (SIGKILL) or stopped by SIGTERM and resumed
ends with bit-identical weights to an uninterrupted run (CPU, same seed); also for MoCo v2,
whose key encoder, queue and pointer travel in the checkpoint, and InterCLR (bank, pseudo-labels,
centroids, sampling seed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import engine_support as es
import pytest
import torch

from benchmark.core.config import resolve
from benchmark.core.errors import EXIT_PREEMPTED
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.pretrain import pretrain

pytestmark = pytest.mark.slow

LAUNCH = (
    "import sys; sys.path[:0] = [{tests!r}, {root!r}]; import engine_support; "
    "from benchmark.harness.pretrain_cli import main; sys.exit(main(sys.argv[1:]))"
)


def _launch(profile: Path, run_dir: Path, *extra: str, method: str = "engine_double") -> subprocess.Popen:
    code = LAUNCH.format(tests=str(es.TESTS_DIR), root=str(es.REPO_ROOT))
    cmd = [sys.executable, "-c", code, "--profile", str(profile), "--method", method,
           "--run-dir", str(run_dir), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=es.REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not ckpt.list_checkpoints(run_dir / "checkpoints"):
        if proc.poll() is not None:
            pytest.fail(f"pretraining exited early ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no checkpoint appeared within the timeout")
        time.sleep(0.005)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{part}.{k}": v for part in ("backbone", "head") for k, v in state[part].items()}


def _assert_identical(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def _losses(run_dir: Path) -> list[tuple[int, float, float]]:
    return [(r["epoch"], r["loss"], r["knn_top1"]) for r in es.read_log(run_dir)]


def _reference(tmp: Path, method: str) -> tuple[Path, Path]:
    """Profile and run folder of one uninterrupted run of ``method``."""
    tmp.mkdir(parents=True, exist_ok=True)
    profile = es.tiny_profile(tmp)
    run_dir = tmp / "run"
    pretrain(resolve(str(profile), method), run_dir, resume="never")
    return profile, run_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Profile and run folder of one uninterrupted run."""
    return _reference(tmp_path_factory.mktemp("reference"), "engine_double")


@pytest.mark.parametrize("method", ["engine_double", "mocov2", "interclr", "clim"])
def test_resume_after_sigkill_is_bit_identical(method: str, reference: tuple[Path, Path], tmp_path: Path) -> None:
    profile, ref_dir = reference if method == "engine_double" else _reference(tmp_path / "ref", method)
    run_dir = tmp_path / "killed"
    proc = _launch(profile, run_dir, method=method)
    _wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "encoder.pt").exists(), "the run finished before it was killed"

    resumed = _launch(profile, run_dir, "--resume", "auto", method=method)
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    assert b"resumed from" in err
    _assert_identical(ref_dir / "encoder.pt", run_dir / "encoder.pt")
    assert _losses(run_dir) == _losses(ref_dir)
    if method == "interclr":
        state = torch.load(ckpt.list_checkpoints(run_dir / "checkpoints")[0], weights_only=True)["method"]
        assert state["bank"]["weight"].shape == (192, 16) and state["pseudo"]["centroids"].shape == (4, 16)
    if method == "clim":
        state = torch.load(ckpt.list_checkpoints(run_dir / "checkpoints")[0], weights_only=True)["method"]
        assert state["bank"]["weight"].shape == (192, 16) and state["tables"]["selected"].shape == (192, 4)
    if method == "mocov2":
        state = torch.load(ckpt.list_checkpoints(run_dir / "checkpoints")[0], weights_only=True)
        assert state["key_encoder"].keys() == {f"{part}.{k}" for part in ("backbone", "head")
                                               for k in state[part]}
        assert state["method"]["queue"]["keys"].shape == (64, 16) and state["method"]["steps"] == 18


def test_sigterm_saves_a_checkpoint_and_exits(reference: tuple[Path, Path], tmp_path: Path) -> None:
    profile, ref_dir = reference
    run_dir = tmp_path / "terminated"
    proc = _launch(profile, run_dir, "--set", "pretrain.checkpoint_every_steps=0")
    # With per-step checkpoints off, the first checkpoint is the end of epoch 1 (step 6).
    _wait_for_checkpoint(proc, run_dir)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_PREEMPTED, err.decode()[-2000:]
    assert b"preempted" in err
    saved = ckpt.list_checkpoints(run_dir / "checkpoints")[0]
    steps_per_epoch = 6
    assert int(saved.stem.split("-")[1]) % steps_per_epoch != 0, "SIGTERM did not save mid-epoch"

    resumed = _launch(profile, run_dir, "--set", "pretrain.checkpoint_every_steps=0")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()[-2000:]
    _assert_identical(ref_dir / "encoder.pt", run_dir / "encoder.pt")
