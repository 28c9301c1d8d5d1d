"""How much memory cached features take, and the refusal when a job cannot hold them.

Sizes, for N rows and per-layer widths D_1..D_L in a dtype of s bytes (float32 4, float16 and
bfloat16 2):

- the on-disk cache of a split: ``N x sum(D_l) x s`` bytes of features (plus 8 bytes a row of
  labels per layer); it is memory-mapped when read, so it counts against the disk, not the RAM;
- a consumer that needs every row resident pages the whole mapping in and works on a copy
  (:class:`WorkingCopy`): the cached linear probe's L-BFGS/SGD passes on a float32 copy of every
  layer, ``N x sum(D_l) x (s + 4)`` bytes (``s + 4`` -> ``4`` when the cache is float32);
  transfer-linear on a float64 copy of its layer, ``N x D x (s + 8)``; the VOC07 SVM on a float64
  copy of one layer at a time, ``N x (sum(D_l) x s + max(D_l) x 8)``.
  :func:`check_feature_budget` compares that with the job's memory before any image is read;
- writing the cache of the layers not cached yet needs their ``N x D x s`` bytes (less what an
  interrupted extraction already wrote) free on the cache's disk: :func:`check_cache_disk`
  refuses before any image is read when they are not, for every task that caches features;
- a consumer that streams the rows in chunks (the kNN task, ``tasks/knn_classifier.py``) holds
  ``O(chunk x D)``: it is not checked here, its chunk is sized from the same budget
  (:func:`budget_bytes`).

GB here means GiB (2**30 bytes), as the launcher's ``mem_gb`` (Slurm ``--mem`` in MiB / 1024).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from benchmark.core.fields import ConfigError

GIB = 2**30
MEMINFO = Path("/proc/meminfo")
WORKING_DTYPE = "float32"  # what resident consumers compute in


class FeatureBudgetError(ConfigError):
    """The features a task would hold do not fit the job's memory (a user error: exit 2)."""


def dtype_size(dtype: str) -> int:
    """Bytes per element of the torch dtype called ``dtype`` (``float16``, ``float32``, ...)."""
    return torch.empty(0, dtype=getattr(torch, dtype)).element_size()


def feature_bytes(n: int, dims: Sequence[int], dtype: str) -> int:
    """``n x sum(dims) x sizeof(dtype)``: the bytes of ``n`` rows of every layer in ``dims``."""
    return int(n) * sum(int(d) for d in dims) * dtype_size(dtype)


@dataclass(frozen=True)
class WorkingCopy:
    """The copy a resident consumer computes on: its dtype, and whether it copies one layer at a
    time (the SVM fits each layer in turn) or every layer at once."""

    dtype: str = WORKING_DTYPE
    one_layer_at_a_time: bool = False


FLOAT32_EVERY_LAYER = WorkingCopy()


def resident_bytes(n: int, dims: Sequence[int], dtype: str,
                   working: WorkingCopy = FLOAT32_EVERY_LAYER) -> int:
    """What a consumer holding every row keeps: the mapped rows plus its working copy (none when
    the cache already is in the working dtype)."""
    copied = [max(int(d) for d in dims)] if working.one_layer_at_a_time and dims else dims
    extra = feature_bytes(n, copied, working.dtype) if dtype != working.dtype else 0
    return feature_bytes(n, dims, dtype) + extra


def available_memory_gb() -> float:
    """The machine's free memory: ``MemAvailable`` of /proc/meminfo, else free pages x page size."""
    if MEMINFO.is_file():
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB


def budget_bytes(budget_gb: float | None) -> int:
    """The job's memory in bytes: ``budget_gb`` (``TaskContext.memory_budget_gb``), or when None
    what the machine has free (:func:`available_memory_gb`)."""
    return int((available_memory_gb() if budget_gb is None else float(budget_gb)) * GIB)


def check_feature_budget(n: int, dims: Sequence[int], dtype: str, budget_gb: float | None, what: str,
                         task: str | None = None, working: WorkingCopy = FLOAT32_EVERY_LAYER) -> None:
    """Raise :class:`FeatureBudgetError` when holding ``n`` rows of ``dims`` cached in ``dtype``
    with the consumer's ``working`` copy (:func:`resident_bytes`) exceeds the budget; the message
    gives N, D per layer, the dtype, the GB needed against the budget and the alternatives.
    ``what`` names the features (e.g. ``tasks.linear: imagenet train``), ``task`` the task whose
    ``mem_gb`` the fix names."""
    needed, budget = resident_bytes(n, dims, dtype, working), budget_bytes(budget_gb)
    if needed <= budget:
        return
    source = "the job's mem_gb" if budget_gb is not None else "free memory on this machine"
    copy = f"a {working.dtype} copy of {'one layer at a time' if working.one_layer_at_a_time else 'them'}"
    held = "the rows" if dtype == working.dtype else f"the rows + {copy}"
    layers = ", ".join(str(int(d)) for d in dims)
    raise FeatureBudgetError(
        f"{what}: {int(n):,} rows x D [{layers}] (sum {sum(int(d) for d in dims):,}) cached in {dtype} "
        f"need {needed / GIB:,.1f} GB resident ({held}), above the "
        f"{budget / GIB:,.1f} GB budget ({source}); use features: online (the online probe) or ask "
        f"for more memory: launcher.tasks.{task or '<task>'}.mem_gb"
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _bytes_under(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def check_cache_disk(to_write: dict[Path, int], what: str) -> None:
    """Raise :class:`FeatureBudgetError` when the cache folders of ``to_write`` (folder -> bytes
    of its whole cache) need more than their disk has free, counting what each folder already
    holds (an interrupted extraction's shards) as written; ``what`` names the features."""
    if not to_write:
        return
    needed = sum(max(0, size - _bytes_under(folder)) for folder, size in to_write.items())
    where = _existing(next(iter(to_write)))
    free = shutil.disk_usage(where).free
    if needed > free:
        raise FeatureBudgetError(
            f"{what}: caching them needs {needed / GIB:,.1f} GB on the disk of {where}, which has "
            f"{free / GIB:,.1f} GB free; free space there or run with --out on a larger disk "
            "(the cache lives under <out>/cache)")
