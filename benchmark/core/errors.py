"""Which failures are the user's to fix and how they are told.

A user error (bad option, config or file; an output folder that cannot be written) prints one
line, ``error: <what, where, the fix>``, and exits with :data:`USAGE_ERROR`; a preempted run
exits with its own code; anything else is a bug and keeps its traceback. ``--debug`` or
``BENCHMARK_DEBUG=1`` shows the traceback of user errors too.
"""
from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

from benchmark.core.config import ConfigError

USAGE_ERROR = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: a checkpoint was saved, run again to resume
EXIT_STDOUT_CLOSED = 1  # the reader of stdout went away (``... | head``)
DEBUG_ENV = "BENCHMARK_DEBUG"
PROBE_BYTES = 4096  # written (and fsynced) by the writability probe, so a full disk shows

# errno of an OSError the user can fix -> what to do about it
OS_ERROR_FIXES = {
    errno.ENOSPC: "disk full? free some space or pass a folder on another disk",
    errno.EDQUOT: "disk quota exceeded? free some space or pass a folder on another disk",
    errno.EROFS: "the file system is read-only; pass a folder on a writable disk",
    errno.EACCES: "permission denied; pass a folder you can write to or fix its permissions",
    errno.EPERM: "operation not permitted; pass a folder you can write to or fix its permissions",
    errno.ENOTDIR: "part of the path is a file, not a folder; pass another path",
    errno.EEXIST: "a file is in the way of a folder; remove it or pass another path",
    errno.EISDIR: "it is a folder; pass a file path",
    errno.ENOENT: "check the path",
}


class Preempted(RuntimeError):
    """A stop was requested (SIGTERM, SIGUSR1 or the engine's ``request_stop``); a checkpoint was
    saved, so the same command resumes."""


class UsageError(Exception):
    """Bad input from the command line: printed and turned into exit code 2."""


class BadFileError(ValueError):
    """A file the suite reads (e.g. a result record) is truncated or malformed; the message
    names the file and how to fix it."""


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``BENCHMARK_DEBUG`` set to anything but empty or ``0``."""
    return flag or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def os_error_message(exc: OSError, with_path: bool = True) -> str:
    """``PATH: strerror (the fix)`` for a system error; the suite's own messages unchanged."""
    fix = OS_ERROR_FIXES.get(exc.errno)
    if exc.strerror is None or fix is None:
        return str(exc)
    where = f"{exc.filename}: " if with_path and exc.filename is not None else ""
    return f"{where}{exc.strerror} ({fix})"


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of a failure the user can fix, or None when ``exc`` is a bug."""
    if isinstance(exc, (UsageError, ConfigError, BadFileError)):
        return str(exc)
    if isinstance(exc, FileNotFoundError) or (isinstance(exc, OSError) and exc.errno in OS_ERROR_FIXES):
        return os_error_message(exc)
    return None


def explain_failure(exc: Exception, debug: bool) -> int | None:
    """Print the message of a user error (unless ``debug``) or of a preemption and return the
    exit code; None for a bug (or a user error under ``debug``), which the caller re-raises."""
    message = user_error_message(exc)
    if message is not None and not debug:
        print(f"error: {message}", file=sys.stderr)
        return USAGE_ERROR
    if isinstance(exc, Preempted):
        print(f"preempted: {exc}. Run the same command again to resume.", file=sys.stderr)
        return EXIT_PREEMPTED
    return None


def stdout_closed() -> int:
    """The reader of stdout closed it (``python -m benchmark data check | head``): point stdout
    at /dev/null, so the interpreter's last flush stays quiet, and return the exit code."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a file descriptor (an in-process capture)
        pass
    return EXIT_STDOUT_CLOSED


def require_writable_folder(path: Path, option: str) -> None:
    """Create ``path`` if missing and write a probe file in it, so an output folder that cannot
    be written fails before any computing: a UsageError names ``option``, the path and why."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as probe:
            probe.write(b"\0" * PROBE_BYTES)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise UsageError(f"{option} {path} is not writable: "
                         f"{os_error_message(exc, with_path=False)}") from exc
