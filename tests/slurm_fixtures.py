"""Shared by the launcher/sweep tests: a tiny job runner and the cluster fixtures.

The runner does real, cheap work with the same contract as ``benchmark.harness.jobs.run_job``: a
"pretraining" takes ``pretrain.epochs`` SGD steps on a linear layer and writes ``encoder.pt``;
a task writes one result record computed from that encoder. This module is pickled by value, so submitit's job
processes (local or Slurm) can run it without importing the test folder.
"""
from __future__ import annotations

import os
import pdb
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cloudpickle
import pytest
import torch

from benchmark.core.provenance import file_hash
from benchmark.core.store import ResultRecord
from benchmark.harness.jobs import Outcome, Paths
from benchmark.harness.plan import Job

cloudpickle.register_pickle_by_value(sys.modules[__name__])

REPO = Path(__file__).resolve().parents[1]


def fail_marker(paths: Paths, job_id: str) -> Path:
    """Create this file to make the job with ``job_id`` fail (remove it to let it pass)."""
    return Path(paths.runs) / f"fail-{job_id}"


def tiny_runner(job: Job, paths: Paths, force: bool = False, resume: str = "auto") -> Outcome:
    """Run ``job`` cheaply; raises when its fail marker exists."""
    if fail_marker(paths, job.job_id).exists():
        raise RuntimeError(f"injected failure of job {job.job_id}")
    torch.set_num_threads(1)
    if job.kind == "pretrain":
        return _pretrain(job)
    return _task(job, paths)


def _pretrain(job: Job) -> Outcome:
    run_dir = Path(job.pretrain_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = job.config["seed"]
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(job.config["pretrain"]["epochs"]):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1000 * seed + step))
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save({"backbone": model.state_dict(), "config": job.config}, run_dir / "encoder.pt")
    return Outcome(job.job_id, job.label, "done", str(run_dir / "encoder.pt"))


def _task(job: Job, paths: Paths) -> Outcome:
    started = time.time()
    encoder = Path(job.pretrain_dir) / "encoder.pt"
    checkpoint_hash = None
    if job.encoder == "pretrained":
        weights = torch.load(encoder)["backbone"]["weight"]
        value, extra = float(weights.abs().sum()), {"encoder_mtime": encoder.stat().st_mtime}
        checkpoint_hash = file_hash(encoder)  # a pretrained result names its encoder
    else:
        value, extra = 0.0, {}
    record = ResultRecord(
        method=job.config["method"]["name"], method_config={}, encoder=job.encoder,
        backbone="linear", pretrain_epochs=job.config["pretrain"]["epochs"], task=job.task,
        dataset="none", split="test", metric="weight_l1", value=value, seed=job.config["seed"],
        profile=job.config["profile"], job_id=job.job_id, config_hash="-", checkpoint_hash=checkpoint_hash,
        git_commit=None, git_dirty=None, versions={}, host=os.uname().nodename, device="cpu",
        wall_time_s=0.0, started_at=str(started), extra={**extra, "started": started})
    path = paths.store(job.config["profile"]).save({"job_id": job.job_id}, [record])
    return Outcome(job.job_id, job.label, "done", str(path))


def ddp_probe(job: Job, paths: Paths, force: bool = False, resume: str = "auto") -> Outcome:
    """Join the torch.distributed world the launcher set up and all-reduce each rank's number;
    every rank writes what it saw to ``<pretrain_dir>/rank<r>.json``."""
    import json

    from benchmark.core.distributed import all_reduce_mean, init_distributed, shutdown

    ctx = init_distributed("cpu")
    mean = all_reduce_mean(torch.tensor([float(ctx.rank)])).item()
    seen = {"rank": ctx.rank, "world": ctx.world_size, "mean": mean,
            "master": f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"}
    shutdown()
    Path(job.pretrain_dir).mkdir(parents=True, exist_ok=True)
    (Path(job.pretrain_dir) / f"rank{ctx.rank}.json").write_text(json.dumps(seen))
    return Outcome(job.job_id, job.label, "done", f"rank {ctx.rank}")


def _sinfo_works() -> bool:
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm_cluster():
    """A reachable Slurm controller: the running one (SLURM_CONF), else, as root, one brought
    up for this session by .ci/slurm_up.sh and stopped at the end; skipped otherwise."""
    if _sinfo_works():
        yield os.environ.get("SLURM_CONF")
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("no Slurm cluster reachable (`sinfo` fails) and not root to bring one up "
                    "with .ci/slurm_up.sh")
    slurm_dir = tempfile.mkdtemp(prefix="slurm-test-")
    env = {**os.environ, "SLURM_DIR": slurm_dir}
    up = subprocess.run(["bash", str(REPO / ".ci" / "slurm_up.sh")], env=env,
                        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if up.returncode != 0:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm_down.sh")], env=env)
        pytest.fail(f".ci/slurm_up.sh failed:\n{up.stdout}\n{up.stderr}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = f"{slurm_dir}/slurm.conf"
    yield os.environ["SLURM_CONF"]
    subprocess.run(["bash", str(REPO / ".ci" / "slurm_down.sh")], env=env)
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture
def cluster(request):
    """Parametrised launcher name; ``slurm-or-local`` is ``slurm`` when a cluster is reachable
    (or root can start one for the session), else ``submitit-local``."""
    if request.param != "slurm-or-local":
        return request.param
    if _sinfo_works() or (os.geteuid() == 0 and shutil.which("apt-get")):
        request.getfixturevalue("slurm_cluster")
        return "slurm"
    return "submitit-local"


@pytest.fixture(autouse=True)
def no_post_mortem(monkeypatch):
    """submitit's DebugExecutor calls pdb.post_mortem() on failure: not under pytest."""
    monkeypatch.setattr(pdb, "post_mortem", lambda *a, **k: None)
