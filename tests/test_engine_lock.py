"""The run folder's lock: processes that need the same pretraining train it once. One holds the
lock while it trains; the others wait, then find the encoder done (also a DDP world, whose ranks
wait together)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import engine_support as es
import pytest
import torch
import torch.multiprocessing as mp
from gloo_support import free_port, set_rank_environment

from benchmark.core import identity, provenance
from benchmark.core.atomic import save_atomic
from benchmark.core.config import resolve
from benchmark.core.distributed import shutdown
from benchmark.core.folder_lock import FolderLock
from benchmark.engine.pretrain import pretrain_unless_done
from benchmark.harness.plan import plan_run

# Plans the tiny run, says it is ready, waits for the go file, then runs the pretraining job.
RUNNER = """
import sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {root!r}]
import engine_support
from benchmark.core.config import resolve
from benchmark.harness.jobs import Paths, run_pretrain_job
from benchmark.harness.plan import plan_run
from benchmark.core import identity
from benchmark.core.atomic import save_atomic
tmp = Path({tmp!r})
job = plan_run(resolve({profile!r}, "engine_double"), [], tmp / "runs")[0]
(tmp / sys.argv[1]).touch()
while not (tmp / "go").exists():
    time.sleep(0.005)
outcome = run_pretrain_job(job, Paths(tmp / "results", tmp / "runs", tmp / "data"))
print(outcome.status, outcome.message)
"""


def test_a_folder_lock_has_one_holder_at_a_time(tmp_path: Path) -> None:
    first, second = FolderLock(tmp_path), FolderLock(tmp_path)
    assert first.try_acquire() and not second.try_acquire()
    first.release()
    assert second.try_acquire()
    second.release()


@pytest.mark.slow
def test_two_processes_that_need_one_pretraining_train_it_once(tmp_path: Path) -> None:
    profile = es.tiny_profile(tmp_path)
    code = RUNNER.format(tests=str(es.TESTS_DIR), root=str(es.REPO_ROOT), tmp=str(tmp_path), profile=str(profile))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"ready{i}"], cwd=es.REPO_ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the processes never got ready"
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start at once
    results = [p.communicate(timeout=180) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    statuses = sorted(out.split()[0] for out, _ in results)
    assert statuses == ["cached", "done"], results
    waiter = next(err for out, err in results if out.startswith("cached"))
    assert "waiting for" in waiter and ".lock: another process is pretraining" in waiter
    job = plan_run(resolve(str(profile), "engine_double"), [], tmp_path / "runs")[0]
    run_dir = Path(job.pretrain_dir)
    assert [r["epoch"] for r in es.read_log(run_dir)] == [1, 2, 3]  # trained once
    assert {out.split()[1] for out, _ in results} == {str(run_dir / "encoder.pt")}


def _waiting_rank(rank: int, world: int, port: int, tmp: Path) -> None:
    set_rank_environment(rank, world, port)
    sys.stderr = open(tmp / f"rank{rank}.err", "w", buffering=1)
    try:
        path, trained = pretrain_unless_done(es.tiny_config(tmp), tmp / "run")
        torch.save({"path": str(path), "trained": trained}, tmp / f"rank{rank}.pt")
    finally:
        shutdown()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.mark.slow
def test_ddp_ranks_wait_together_for_the_lock_then_reuse_the_encoder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = FolderLock(run_dir)
    assert holder.try_acquire()  # another process is pretraining into run_dir
    ctx = mp.spawn(_waiting_rank, args=(2, free_port(), tmp_path), nprocs=2, join=False)
    deadline = time.monotonic() + 120
    while "waiting for" not in _read(tmp_path / "rank0.err"):
        assert time.monotonic() < deadline and all(p.is_alive() for p in ctx.processes), _read(tmp_path / "rank0.err")
        time.sleep(0.1)
    time.sleep(3)  # a few polls more: both ranks keep waiting
    assert all(p.is_alive() for p in ctx.processes)
    assert not any(tmp_path.glob("rank*.pt")) and not (run_dir / "log.jsonl").exists()
    encoder = save_atomic({"backbone": {}, "head": {}, **identity.identity_fields(es.tiny_config(tmp_path).tree),
                                "epoch": 3}, run_dir / "encoder.pt")
    before = provenance.file_hash(encoder)
    holder.release()
    while not ctx.join(timeout=120):
        pass
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert results == [{"path": str(encoder), "trained": False}] * 2
    assert provenance.file_hash(encoder) == before and not (run_dir / "log.jsonl").exists()
