"""Two (or more) gloo processes on localhost, the way the DDP tests start them."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port free on localhost right now (for MASTER_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def set_rank_environment(rank: int, world: int, port: int) -> None:
    """The torchrun-style variables of one rank (the engine initialises itself from them), and
    one CPU thread per process."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def join_gloo(rank: int, world: int, port: int) -> None:
    """:func:`set_rank_environment`, then join the gloo process group."""
    set_rank_environment(rank, world, port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
