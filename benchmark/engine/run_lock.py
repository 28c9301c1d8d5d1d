"""The run folder's lock handshake: one process pretrains into a run folder at a time, and
every rank of a distributed run waits with rank 0 while another process holds it."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from benchmark.core.distributed import DistContext, broadcast_from_main
from benchmark.core.errors import Preempted
from benchmark.core.folder_lock import FolderLock
from benchmark.core.stop_request import stop_requested

LOCK_POLL_SECONDS = 1.0
# What rank 0 tells every rank about the run folder's lock.
LOCK_WAITING, LOCK_HELD, LOCK_STOPPED = 0, 1, 2


@contextmanager
def run_dir_lock(run_dir: Path, dist: DistContext, poll_seconds: float = LOCK_POLL_SECONDS) -> Iterator[None]:
    """Hold ``run_dir``'s :class:`~benchmark.core.folder_lock.FolderLock` for the block. Rank 0 takes
    it; while another process holds it, every rank waits, polling rank 0 through a broadcast (so
    no collective blocks long enough to time out). A stop request while waiting raises
    :class:`~benchmark.core.errors.Preempted`."""
    lock = FolderLock(run_dir)
    told = False
    while True:
        state = LOCK_WAITING
        if dist.is_main:
            state = LOCK_HELD if lock.try_acquire() else LOCK_STOPPED if stop_requested() else LOCK_WAITING
        state = broadcast_from_main(state, dist.device)
        if state == LOCK_HELD:
            break
        if state == LOCK_STOPPED:
            raise Preempted(f"stopped while waiting for {lock.path}; nothing was trained")
        if dist.is_main and not told:
            print(f"waiting for {lock.path}: another process is pretraining into {run_dir}",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(poll_seconds)
    try:
        yield
    finally:
        lock.release()
