"""torch.distributed set-up from torchrun or SLURM/submitit environment variables.

One process per device: NCCL when the device is CUDA, gloo on CPU. Without those variables (or
with a world size of 1) nothing is initialised and every helper is a no-op, so single-process
code and DDP code are the same code.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from benchmark.core.runtime import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local rank and the device it drives."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_port(scheduler_job_id: str) -> int:
    """The torch.distributed master port of a job: derived from its id (every rank, on every
    node, computes the same one without talking) and below Linux's ephemeral range
    (32768-60999), so no outgoing connection on the node can be holding it."""
    return 20000 + zlib.crc32(str(scheduler_job_id).encode()) % 12000


def slurm_process_env() -> dict[str, str]:
    """torchrun's variables for this SLURM task, from SLURM's: RANK (SLURM_PROCID), WORLD_SIZE
    (SLURM_NTASKS), LOCAL_RANK (SLURM_LOCALID), LOCAL_WORLD_SIZE (tasks per node), MASTER_ADDR
    (the first host of SLURM_JOB_NODELIST) and MASTER_PORT (as set, else :func:`distributed_port`
    of the job id): every task of a multi-node job agrees on the same master without talking.
    Under a submitit executor its job environment is read instead (the local one too); under a
    plain ``srun``, SLURM's."""
    from submitit import JobEnvironment
    from submitit.slurm.slurm import SlurmJobEnvironment

    job = JobEnvironment() if "SUBMITIT_EXECUTOR" in os.environ else SlurmJobEnvironment()
    return {"MASTER_ADDR": job.hostnames[0],
            "MASTER_PORT": os.environ.get("MASTER_PORT") or str(distributed_port(job.job_id)),
            "RANK": str(job.global_rank), "WORLD_SIZE": str(job.num_tasks),
            "LOCAL_RANK": str(job.local_rank), "LOCAL_WORLD_SIZE": str(job.num_tasks // job.num_nodes)}


def export_slurm_env() -> None:
    """Set :func:`slurm_process_env`'s variables in this process (replacing inherited ones)."""
    os.environ.update(slurm_process_env())


def launched_world_size() -> int:
    """World size announced by torchrun (WORLD_SIZE) or SLURM (SLURM_NTASKS); 1 when neither."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def init_distributed(device_spec: str = "auto") -> DistContext:
    """Initialise the process group when launched with several processes; pick the device.

    CUDA processes take ``cuda:<local rank>`` (``device_spec`` auto or cuda) and NCCL; CPU
    processes use gloo. Returns the context of this process.
    """
    device = resolve_device(device_spec)
    world_size = launched_world_size()
    if world_size <= 1:
        return DistContext(0, 1, 0, device)
    if "WORLD_SIZE" not in os.environ:
        export_slurm_env()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size ((0, 1) when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """Whether this process is rank 0 (always, when not distributed)."""
    return rank_and_world()[0] == 0


def broadcast_from_main(value: int | float, device: torch.device | str) -> int | float:
    """Rank 0's ``value`` (an int, or a float sent as float64) on every rank (``value`` itself
    when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    kind = float if isinstance(value, float) else int
    tensor = torch.tensor([value], dtype=torch.float64 if kind is float else torch.int64,
                          device=device)
    dist.broadcast(tensor, src=0)
    return kind(tensor.item())


def all_reduce_in_place(tensors: Sequence[torch.Tensor], scale: float = 1.0) -> None:
    """Replace every tensor by its sum over ranks times ``scale``, in one all-reduce (on the
    tensors' device: NCCL reduces CUDA tensors only)."""
    if not tensors:
        return
    flat = torch.cat([t.flatten() for t in tensors])
    dist.all_reduce(flat)
    for tensor, part in zip(tensors, flat.mul_(scale).split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


def broadcast_in_place(tensors: Sequence[torch.Tensor]) -> None:
    """Replace every tensor by rank 0's, in one broadcast (no-op when not distributed)."""
    if not tensors or not (dist.is_available() and dist.is_initialized()):
        return
    flat = torch.cat([t.flatten() for t in tensors])
    dist.broadcast(flat, src=0)
    for tensor, part in zip(tensors, flat.split([t.numel() for t in tensors])):
        tensor.copy_(part.view_as(tensor))


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of ``values`` over ranks (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / dist.get_world_size()


def shutdown() -> None:
    """Destroy the process group if one was initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
