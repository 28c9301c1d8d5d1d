"""DDP: two gloo processes on CPU end with identical bank and graph, equal to one process on the
concatenated batches, and with the same NCE normaliser; all_gather_cat handles uneven batches."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_support import free_port, join_gloo
from method_configs import method_config
from methods_reference import unit_rows

from methods.base import build_method
from methods.parts.dist_utils import all_gather_cat

N, D = 64, 8
CONFIG = method_config("invp", temperature=0.1, k=3, steps=2, n_pos=5, n_background=16,
                       ramp={"type": "binary", "length": 1})
NCE = method_config("insdis", variant="nce", nce_k=16, nce_z="ema")
SPLIT = 5  # rank 0 takes the first 5 rows of every batch, rank 1 the other 3


def batches():
    g = torch.Generator().manual_seed(0)
    return [(unit_rows(8, D, 10 + step), torch.randperm(N, generator=g)[:8]) for step in range(4)]


def run_steps(method, data, rows):
    for epoch, (v, idx) in enumerate(data, start=1):
        method.on_epoch_start(epoch)
        out = method.loss(v[rows].clone().requires_grad_(True), idx[rows], epoch)
        out.loss.backward()
        method.update()
    return method.state_dict()


def _worker(rank, port, out_dir):
    join_gloo(rank, 2, port)
    torch.manual_seed(100 + rank)  # rank 1 draws another initial bank: rank 0's must be broadcast
    gathered = all_gather_cat(torch.full((3 - rank, 2), float(rank)))
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    state = run_steps(build_method(CONFIG, N, D), batches(), rows)
    nce = run_steps(build_method(NCE, N, D), batches(), rows)
    torch.save({"state": state, "nce": nce, "gathered": gathered}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_ranks_match_each_other_and_a_single_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(100)
    single = run_steps(build_method(CONFIG, N, D), batches(), slice(None))
    assert ranks[0]["gathered"].tolist() == [[0.0, 0.0]] * 3 + [[1.0, 1.0]] * 2
    assert torch.equal(ranks[0]["state"]["bank"]["weight"], ranks[1]["state"]["bank"]["weight"])
    assert torch.equal(ranks[0]["state"]["neighbours"]["table"], ranks[1]["state"]["neighbours"]["table"])
    assert torch.allclose(ranks[0]["state"]["bank"]["weight"], single["bank"]["weight"], atol=1e-6)
    assert torch.equal(ranks[0]["state"]["neighbours"]["table"], single["neighbours"]["table"])
    assert single["neighbours"]["table"].any()
    assert ranks[0]["nce"]["normaliser"] == ranks[1]["nce"]["normaliser"] is not None
    assert torch.equal(ranks[0]["nce"]["bank"]["weight"], ranks[1]["nce"]["bank"]["weight"])
