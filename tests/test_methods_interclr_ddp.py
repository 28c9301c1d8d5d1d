"""DDP: two gloo processes keep InterCLR's bank, pseudo-labels, centroids and queue identical, and
equal to one process on the concatenated batches (the initial clustering comes from rank 0)."""
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_support import free_port, join_gloo
from method_configs import method_config
from methods_reference import unit_rows
from test_methods_mocov2_ddp import SPLIT
from test_methods_mocov2_ddp import run_steps as mocov2_steps

from methods.base import build_method

N, D = 64, 8
CONFIG = method_config("interclr", queue_size=12, num_clusters=4, min_cluster=10, negatives=6, pool_size=20,
                       centroid_interval=2, kmeans_backend="torch")


def run_steps(rows, global_seed: int):
    torch.manual_seed(global_seed)
    method = build_method(CONFIG, N, D)
    method.on_train_start(lambda: unit_rows(N, D, 1 + global_seed % 100))  # rank 1: other features
    return mocov2_steps(method, rows)


def _worker(rank, port, out_dir):
    join_gloo(rank, 2, port)
    rows = slice(0, SPLIT) if rank == 0 else slice(SPLIT, None)
    torch.save(run_steps(rows, 100 + rank), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_ranks_keep_one_bank_and_one_labelling(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = run_steps(slice(None), 100)
    for rank in ranks:
        assert torch.equal(rank["bank"]["weight"], single["bank"]["weight"])
        assert torch.equal(rank["pseudo"]["labels"], single["pseudo"]["labels"])
        assert torch.allclose(rank["pseudo"]["centroids"], single["pseudo"]["centroids"], atol=1e-6)
        assert torch.equal(rank["queue"]["keys"], single["queue"]["keys"])
        assert rank["seed"] == single["seed"] and rank["steps"] == single["steps"] == 3
