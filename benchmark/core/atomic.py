"""Atomic file writes: write to a temp file in the target's folder, fsync it, rename it onto the
target, fsync the folder. A crash leaves either the old file or the new one, never half of one,
and the rename itself survives a power cut.

Temp files and folders are created with mode ``0o666`` / ``0o777`` handed to the kernel, which
takes the process umask off as for any ``open()``: the result has the permissions of a plain write
(``0o666 & ~umask``, default ACLs honoured), not the ``0o600`` / ``0o700`` of
``tempfile.mkstemp`` / ``mkdtemp``. The umask is never read: reading it takes two ``os.umask``
calls, and a thread creating a file between them would get umask 0.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, TypeVar

import torch

NAME_ATTEMPTS = 100  # random temp names tried before giving up (a clash is ~1e-14 per try)
T = TypeVar("T")


def _create_unique(parent: Path, prefix: str, create: Callable[[Path], T]) -> tuple[Path, T]:
    """``create(path)`` for a fresh random ``path`` in ``parent`` (retried while it exists)."""
    for _ in range(NAME_ATTEMPTS):
        candidate = parent / f"{prefix}{secrets.token_hex(6)}.tmp"
        try:
            return candidate, create(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name {prefix}*.tmp in {parent} after "
                          f"{NAME_ATTEMPTS} tries")


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """A new, uniquely named folder in ``parent`` with the permissions of a plain ``mkdir``
    (``0o777 & ~umask``), for building a tree that is then renamed into place."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    path, _ = _create_unique(parent, prefix, lambda p: os.mkdir(p, 0o777))
    return path


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush the entries of folder ``path`` (a file just renamed into it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file for writing (``mode`` ``w`` or ``wb``); on a clean exit it replaces
    ``path`` (mode ``0o666 & ~umask``), on an exception it is removed and ``path`` is untouched.
    A system error that names no file (a full disk shows up in ``write``/``fsync``) is re-raised
    naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    tmp, fd = _create_unique(path.parent, f".{path.name}.", lambda p: os.open(p, flags, 0o666))
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    fsync_directory(path.parent)


def save_atomic(obj: Any, path: Path) -> Path:
    """``torch.save`` atomically (temp file beside ``path``, fsync, rename)."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)
