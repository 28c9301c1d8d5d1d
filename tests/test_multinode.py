"""Multi-node DDP on one machine: two torchrun "nodes" on localhost (``--nnodes 2 --node-rank
0/1``, one gloo process each, static rendezvous at 127.0.0.1) pretrain the tiny profile and end
equal to one process with the same global batch (tests/test_engine_ddp.py's comparison)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gloo_support import free_port
from test_engine_ddp import assert_ranks_match_one_process, train_tiny

TESTS = Path(__file__).resolve().parent
SUBSET, STEPS = 64, [2, 4]  # two epochs of two batches of 32 (16 per node)
NO_MONITOR = ("pretrain.monitor.every=0",)  # the kNN monitor is not what this test is about


def node_command(node_rank: int, port: int, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node_rank),
            "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
            str(TESTS / "multinode_worker.py"), str(tmp), str(SUBSET)]


def test_two_torchrun_nodes_match_one_process(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    port = free_port()
    nodes = [subprocess.Popen(node_command(rank, port, tmp_path), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    for rank, (node, output) in enumerate(zip(nodes, outputs)):
        assert node.returncode == 0, f"node {rank} failed:\n{output[-3000:]}"
    single = train_tiny(tmp_path, tmp_path / "single", SUBSET, NO_MONITOR)
    assert_ranks_match_one_process(tmp_path, single, STEPS)
