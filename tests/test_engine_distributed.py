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
