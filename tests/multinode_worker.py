"""One torchrun "node" of tests/test_multinode.py: pretrain the tiny profile as this rank (the
engine reads torchrun's variables), then save the method's state as ``bank-rank<RANK>.pt``.

    python -m torch.distributed.run --nnodes 2 --node-rank R ... tests/multinode_worker.py TMP SUBSET
"""
import os
import sys
from pathlib import Path

import torch
from test_engine_ddp import train_tiny
from test_multinode import NO_MONITOR

from benchmark.core.distributed import shutdown

if __name__ == "__main__":
    tmp, subset = Path(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(1)
    try:
        state = train_tiny(tmp, tmp / "ddp", subset, NO_MONITOR)
        torch.save(state, tmp / f"bank-rank{os.environ['RANK']}.pt")
    finally:
        shutdown()
