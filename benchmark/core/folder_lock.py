"""An exclusive lock on a folder: ``fcntl.flock`` on ``<folder>/.lock``.

Processes that share a folder (two ``run`` commands that need the same pretraining) take turns.
The kernel drops the lock when its holder exits, killed or not, so a stale lock file is harmless.
On NFS, Linux emulates ``flock`` with byte-range locks, which the server arbitrates.
"""
from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

LOCK_NAME = ".lock"


class FolderLock:
    """The lock of one folder, taken with :meth:`try_acquire` and given up with :meth:`release`."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._handle: IO[str] | None = None

    def try_acquire(self) -> bool:
        """Take the lock if no other process holds it (never blocks); True when this one holds it."""
        if self._handle is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        """Give the lock up (no-op when not held)."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
