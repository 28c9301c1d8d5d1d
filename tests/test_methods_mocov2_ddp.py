"""DDP: two gloo processes update the MoCo queue identically and as one process does on the
concatenated batches; shuffle-BN keys across 2 ranks equal split-BN keys of one process."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_support import free_port, join_gloo
from method_configs import method_config
from methods_reference import unit_rows
from torch import nn

from benchmark.engine.key_encoder import KeyEncoder
from methods.base import build_method

N, D = 64, 8
CONFIG = method_config("mocov2", queue_size=12, temperature=0.2)
SPLIT = 4  # each rank takes half of every batch of 8


def batches():
    g = torch.Generator().manual_seed(0)
    return [({"query": unit_rows(8, D, 10 + s), "key": unit_rows(8, D, 20 + s)}, torch.randperm(N, generator=g)[:8])
            for s in range(3)]


def run_steps(method, rows):
    for views, idx in batches():
        out = method.loss({name: v[rows].clone().requires_grad_(name == "query") for name, v in views.items()},
                          idx[rows], 1)
        out.loss.backward()
        method.update()
    return method.state_dict()


def bn_net():
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def images():
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(1))


def _worker(rank, port, out_dir):
    join_gloo(rank, 2, port)
    torch.manual_seed(100 + rank)  # rank 1 draws another initial queue: rank 0's must be broadcast
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    state = run_steps(build_method(CONFIG, N, D), rows)
    keys = KeyEncoder(bn_net()).encode(images()[rows], seed=4, step=9, autocast=torch.no_grad)
    torch.save({"state": state, "keys": keys}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_ranks_share_one_queue_and_shuffle_bn(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(100)
    single = run_steps(build_method(CONFIG, N, D), slice(None))
    for rank in ranks:
        assert torch.equal(rank["state"]["queue"]["keys"], single["queue"]["keys"])
        assert rank["state"]["queue"]["pointer"] == single["queue"]["pointer"] == 24 % 12
    split_bn = KeyEncoder(bn_net(), bn_splits=2).encode(images(), seed=4, step=9, autocast=torch.no_grad)
    assert torch.allclose(torch.cat([ranks[0]["keys"], ranks[1]["keys"]]), split_bn, atol=1e-6)
