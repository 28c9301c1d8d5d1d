"""CLIM through the engine: 2 gloo ranks with the mixed and two multi-resolution query views
(one DDP forward for all of them) match one process on the same global batch, and with mixing
and multi-resolution off CLIM trains exactly as MoCo v2."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_support as es
import pytest
import torch
import torch.multiprocessing as mp
from gloo_support import free_port, set_rank_environment

from benchmark.core.config import resolve
from benchmark.core.distributed import shutdown
from benchmark.engine.pretrain import prepare_run

pytestmark = pytest.mark.slow

OVERRIDES = ["model.backbone=engine_plain_cnn", "pretrain.epochs=2", "pretrain.checkpoint_every_steps=0"]


def _config(tmp: Path, method: str, overrides: list[str]) -> Any:
    return resolve(str(es.tiny_profile(tmp)), method, overrides)


def _train(tmp: Path, run_dir: Path, method: str = "clim", overrides: tuple[str, ...] = ()) -> dict:
    run = prepare_run(_config(tmp, method, OVERRIDES + list(overrides)), run_dir, resume="never")
    run.run()
    return {"method": run.parts.method.state_dict(), "log": es.read_log(run_dir) if run.dist.is_main else []}


# One epoch: the selection of a later refresh is a discrete function of the bank, so the ~1e-7
# differences of DDP's gradient averaging may flip a neighbour or a cluster there.
ONE_EPOCH = ("pretrain.epochs=1",)


def _worker(rank: int, world: int, port: int, tmp: Path) -> None:
    set_rank_environment(rank, world, port)
    try:
        torch.save(_train(tmp, tmp / "ddp", overrides=ONE_EPOCH)["method"], tmp / f"state-rank{rank}.pt")
    finally:
        shutdown()


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "encoder.pt", weights_only=True)
    return {f"{part}.{k}": v for part in ("backbone", "head") for k, v in state[part].items()}


def test_clim_on_two_gloo_ranks_matches_one_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    single = _train(tmp_path, tmp_path / "single", overrides=ONE_EPOCH)
    ranks = [torch.load(tmp_path / f"state-rank{r}.pt") for r in range(2)]
    for name in ("neighbours", "selected", "assignments", "centroids"):
        assert torch.equal(ranks[0]["tables"][name], ranks[1]["tables"][name]), f"ranks differ in {name}"
    assert torch.equal(ranks[0]["bank"]["weight"], ranks[1]["bank"]["weight"])
    assert torch.allclose(ranks[0]["bank"]["weight"], single["method"]["bank"]["weight"], atol=1e-5)
    assert torch.equal(ranks[0]["tables"]["selected"], single["method"]["tables"]["selected"])
    ddp, ref = _weights(tmp_path / "ddp"), _weights(tmp_path / "single")
    for key, value in ref.items():
        assert torch.allclose(ddp[key], value, atol=1e-5), f"{key} differs"
    logs = es.read_log(tmp_path / "ddp")
    for a, b in zip(logs, single["log"]):
        # (masked means such as pos_precision are averaged over ranks, so they differ)
        for key in ("loss", "loss_moco", "loss_mix", "loss_multires", "empty_selection", "knn_precision"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), key
    assert 0 <= single["log"][-1]["empty_selection"] < 1


def test_clim_without_mixing_and_multires_trains_as_mocov2(tmp_path: Path) -> None:
    _train(tmp_path, tmp_path / "clim", overrides=("method.mix=none", "method.multires_sizes=[]"))
    _train(tmp_path, tmp_path / "mocov2", method="mocov2")
    clim, moco = _weights(tmp_path / "clim"), _weights(tmp_path / "mocov2")
    assert all(torch.equal(clim[k], moco[k]) for k in moco)
    assert [r["loss"] for r in es.read_log(tmp_path / "clim")] == [r["loss"] for r in es.read_log(tmp_path / "mocov2")]
