"""A long task's progress on disk, so that a stopped, preempted or killed job resumes where it was.

A task that trains (probes, fine-tuning, semi-supervised, transfer grids, detection) keeps one
:class:`TaskProgress`: it calls :meth:`TaskProgress.step_done` at every step boundary with a
function returning its state (model, optimizer, scheduler, sampler position, generator states).
The state is saved every ``every_s`` seconds, and at once when a stop is requested (Slurm's
time-limit signal, SIGTERM/SIGUSR1: :mod:`benchmark.core.stop_request`), after which
:class:`~benchmark.core.errors.Preempted` is raised so the launcher requeues the job. On the next
start :meth:`TaskProgress.load` returns that state and the task continues from it: the same
batches in the same order, so a resumed task ends with the heads an uninterrupted one would have.

In a job of several processes (one per GPU) only rank 0 writes or deletes the file and every
rank loads it (:meth:`TaskProgress.step_done_together` stops all ranks at the same step).

The file lives in the job's own folder (``TaskContext.progress_dir``), is written atomically
(``benchmark.core.atomic``) and read with ``weights_only=True``; it carries the identity of what
wrote it (task, settings, encoder), and a file of another identity is refused, never resumed. The
harness deletes the folder once the job's records are stored.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist

from benchmark.core.atomic import save_atomic
from benchmark.core.config import config_hash
from benchmark.core.distributed import is_main_process, rank_and_world
from benchmark.core.errors import Preempted
from benchmark.core.safe_load import load_weights_only
from benchmark.core.stop_request import request_stop, stop_requested

CHECKPOINT_EVERY_S = 300.0  # a killed job loses at most this much work (plus one step)
PROGRESS_REMEDY = ("It is a task's progress checkpoint: delete it and the task starts from the "
                   "beginning")


class TaskProgress:
    """Checkpoints of one part of a task (``part``: e.g. ``probe-lr0.1``, ``grid-3``) under
    ``folder``; ``folder`` None turns checkpointing off (a task run from a notebook)."""

    def __init__(self, folder: Path | None, part: str, identity: Mapping[str, Any],
                 every_s: float = CHECKPOINT_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.path = Path(folder) / f"{part}.pt" if folder is not None else None
        self.identity = config_hash(dict(identity))
        self.every_s = every_s
        self.clock = clock
        self.last_save = clock()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none; a file written for another identity
        (other settings or encoder) is an error naming the file."""
        if self.path is None or not self.path.is_file():
            return None
        saved = load_weights_only(self.path, PROGRESS_REMEDY)
        if not isinstance(saved, dict) or saved.get("identity") != self.identity:
            raise ValueError(f"{self.path} holds the progress of another task configuration "
                             f"(identity {saved.get('identity') if isinstance(saved, dict) else '?'}, "
                             f"expected {self.identity}). {PROGRESS_REMEDY}")
        return saved["state"]

    def save(self, state: Mapping[str, Any]) -> None:
        """Write ``state`` atomically (a no-op when checkpointing is off, and on every rank but
        rank 0 of a distributed job: the ranks share one state)."""
        if self.path is not None and is_main_process():
            save_atomic({"identity": self.identity, "state": dict(state)}, self.path)
            self.last_save = self.clock()

    def discard(self) -> None:
        """Delete the saved state (the part is finished and its result saved elsewhere); rank 0
        only."""
        if self.path is not None and is_main_process():
            self.path.unlink(missing_ok=True)

    def step_done(self, state: Callable[[], Mapping[str, Any]], where: str) -> None:
        """Call at a step boundary: saves ``state()`` when ``every_s`` has passed since the last
        save; on a stop request saves it and raises Preempted (``where``: e.g. ``epoch 3 step
        120``, for the message)."""
        if self.path is None:
            return
        stop = stop_requested()
        if is_main_process() and (stop or self.clock() - self.last_save >= self.every_s):
            self.save(state())
        if stop:
            raise Preempted(f"stopped at {where}; progress saved in {self.path}")

    def step_done_together(self, state: Callable[[], Mapping[str, Any]], where: str,
                           device: torch.device | str) -> None:
        """:meth:`step_done` for a loop that every rank of a distributed job runs in step: a stop
        request seen by any rank stops every rank at the same step (one all-reduce on
        ``device``), rank 0 saves the state they share. Alone, just :meth:`step_done`."""
        if self.path is None:
            return
        if rank_and_world()[1] > 1:
            flag = torch.tensor([int(stop_requested())], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and not stop_requested():
                request_stop()
        self.step_done(state, where)
