"""DDP on CPU for real: 2 gloo processes on localhost against 1 process with the same global
batch. With a BatchNorm-free backbone the two must agree: same weights, same memory bank on
every rank (all-gathered update), same epoch-averaged loss."""
from __future__ import annotations

from pathlib import Path

import engine_support as es
import pytest
import torch
import torch.multiprocessing as mp
from gloo_support import free_port, set_rank_environment

from benchmark.core.distributed import shutdown
from benchmark.engine.pretrain import prepare_run

pytestmark = pytest.mark.slow

OVERRIDES = ("model.backbone=engine_plain_cnn", "pretrain.epochs=2", "pretrain.checkpoint_every_steps=0")


def train_tiny(tmp: Path, run_dir: Path, subset: int, extra: tuple[str, ...] = ()) -> dict:
    """Pretrain the tiny profile (BN-free backbone, the bank double; ``extra`` overrides) into
    ``run_dir``; the method's state."""
    cfg = es.tiny_config(tmp, (*OVERRIDES, f"data.train_subset={subset}", *extra), negatives=0)
    run = prepare_run(cfg, run_dir, resume="never")
    run.run()
    return run.parts.method.state_dict()


def _worker(rank: int, world: int, port: int, tmp: Path, subset: int) -> None:
    set_rank_environment(rank, world, port)
    try:
        state = train_tiny(tmp, tmp / "ddp", subset)
        torch.save(state, tmp / f"bank-rank{rank}.pt")
    finally:
        shutdown()


# 192 images: six full batches of 32 (16 per rank); 200: and a last partial one of 8 (4 per rank),
# trained as the official InvP loaders do (no drop_last)
@pytest.mark.parametrize("subset, steps", [(192, [6, 12]), (200, [7, 14])])
def test_two_gloo_ranks_match_one_process(tmp_path: Path, subset: int, steps: list[int]) -> None:
    mp.spawn(_worker, args=(2, free_port(), tmp_path, subset), nprocs=2, join=True)
    single = train_tiny(tmp_path, tmp_path / "single", subset)
    assert_ranks_match_one_process(tmp_path, single, steps)


def assert_ranks_match_one_process(tmp_path: Path, single: dict, steps: list[int]) -> None:
    """The ranks' saved banks (``bank-rank<r>.pt``), encoder and log (``ddp/``) against the
    single process's (``single/`` and its method state ``single``)."""
    rank0 = torch.load(tmp_path / "bank-rank0.pt")
    rank1 = torch.load(tmp_path / "bank-rank1.pt")
    assert torch.equal(rank0["bank"], rank1["bank"]), "ranks hold different memory banks"
    assert torch.allclose(rank0["bank"], single["bank"], atol=1e-5)
    ddp = torch.load(tmp_path / "ddp" / "encoder.pt", weights_only=True)
    ref = torch.load(tmp_path / "single" / "encoder.pt", weights_only=True)
    assert ddp["epoch"] == ref["epoch"] == 2
    for part in ("backbone", "head"):
        for key, value in ref[part].items():
            assert torch.allclose(ddp[part][key], value, atol=1e-5), f"{part}.{key} differs"

    ddp_log, ref_log = es.read_log(tmp_path / "ddp"), es.read_log(tmp_path / "single")
    assert [r["steps"] for r in ddp_log] == [r["steps"] for r in ref_log] == steps
    for a, b in zip(ddp_log, ref_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
