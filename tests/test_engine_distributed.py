"""Process-group set-up from launcher variables (torchrun's, or SLURM's via submitit)."""
from __future__ import annotations

import os

import pytest
import torch

from benchmark.core import distributed

EXPORTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
SLURM = {"SLURM_JOB_ID": "123", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
         "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NODEID": "1", "SLURM_JOB_NUM_NODES": "2",
         "SLURM_NNODES": "2", "SUBMITIT_EXECUTOR": "slurm"}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in (*EXPORTED, *SLURM):
        monkeypatch.setenv(key, "placeholder")  # recorded as absent, so undone afterwards
        monkeypatch.delenv(key)
    return monkeypatch


def _fake_process_group(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    backends: list[str] = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: bool(backends))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend: backends.append(backend))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: int(os.environ["RANK"]))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: int(os.environ["WORLD_SIZE"]))
    return backends


def test_single_process_initialises_nothing(clean_env: pytest.MonkeyPatch) -> None:
    backends = _fake_process_group(clean_env)
    ctx = distributed.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert backends == []
    clean_env.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1
    assert not distributed.init_distributed("cpu").enabled and backends == []


def test_slurm_variables_become_a_gloo_group_on_cpu(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in SLURM.items():
        clean_env.setenv(key, value)
    backends = _fake_process_group(clean_env)
    ctx = distributed.init_distributed("cpu")
    assert backends == ["gloo"]
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.device.type) == (1, 2, 1, "cpu")
    assert ctx.enabled and not ctx.is_main
    assert os.environ["MASTER_ADDR"] == "node01" and os.environ["MASTER_PORT"].isdigit()


def test_torchrun_variables_are_used_as_given(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("RANK", "3")
    clean_env.setenv("LOCAL_RANK", "1")
    backends = _fake_process_group(clean_env)
    ctx = distributed.init_distributed("cpu")
    assert backends == ["gloo"] and (ctx.rank, ctx.world_size, ctx.local_rank) == (3, 4, 1)


TWO_NODES_OF_FOUR = {"SLURM_JOB_ID": "4711", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu[07-08]",
                     "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2"}


def _slurm_task(env: pytest.MonkeyPatch, procid: int, executor: str | None) -> None:
    """The variables SLURM gives task ``procid`` of a 2-node x 4-GPU job (and nothing torchrun's)."""
    for key in EXPORTED:
        env.delenv(key, raising=False)
    for key, value in {**TWO_NODES_OF_FOUR, "SLURM_PROCID": str(procid), "SLURM_LOCALID": str(procid % 4),
                       "SLURM_NODEID": str(procid // 4)}.items():
        env.setenv(key, value)
    if executor:
        env.setenv("SUBMITIT_EXECUTOR", executor)


@pytest.mark.parametrize("executor", ["slurm", None], ids=["submitit", "plain-srun"])
def test_two_nodes_of_four_gpus_form_one_nccl_world(clean_env: pytest.MonkeyPatch, executor: str | None) -> None:
    """Every task of 2 nodes x 4 GPUs: its global rank, cuda:<local rank>, NCCL, the first node as master."""
    chosen: list[torch.device] = []
    clean_env.setattr(distributed, "resolve_device", lambda spec: torch.device("cuda", 0))
    clean_env.setattr(torch.cuda, "set_device", chosen.append)
    ports = set()
    for procid in range(8):
        _slurm_task(clean_env, procid, executor)
        backends = _fake_process_group(clean_env)
        ctx = distributed.init_distributed("cuda")
        assert (ctx.rank, ctx.world_size, ctx.local_rank) == (procid, 8, procid % 4)
        assert ctx.device == torch.device("cuda", procid % 4) == chosen[-1] and backends == ["nccl"]
        assert (os.environ["MASTER_ADDR"], os.environ["LOCAL_WORLD_SIZE"]) == ("gpu07", "4")
        ports.add(os.environ["MASTER_PORT"])
    assert ports == {str(distributed.distributed_port("4711"))}


def test_slurm_launcher_exports_the_multi_node_world(clean_env: pytest.MonkeyPatch) -> None:
    """The submitit launcher's job sets the same variables before the job runs (task 5 of 8)."""
    from benchmark.harness.submitit_launcher import CheckpointableJob

    _slurm_task(clean_env, 5, "slurm")
    clean_env.setenv("MASTER_ADDR", "login-node")  # inherited from the submitting shell: replaced
    seen = CheckpointableJob(None, None, runner=lambda *args, **kwargs: dict(os.environ))()
    assert {key: seen[key] for key in EXPORTED} == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4", "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(distributed.distributed_port("4711"))}


def test_a_master_port_set_by_the_batch_script_is_kept(clean_env: pytest.MonkeyPatch) -> None:
    for key, value in SLURM.items():
        clean_env.setenv(key, value)
    clean_env.setenv("MASTER_PORT", "29512")
    clean_env.setenv("MASTER_ADDR", "stale-host")
    _fake_process_group(clean_env)
    ctx = distributed.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size) == (1, 2)
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("node01", "29512")
