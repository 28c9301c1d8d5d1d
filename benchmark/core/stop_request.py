"""Stop requests: SIGTERM/SIGUSR1, or a launcher's own signal hook, ask the running job (a
pretraining, or a task that checkpoints its progress) to checkpoint after the current step and
raise :class:`~benchmark.core.errors.Preempted`.

One flag per process: set by :func:`request_stop`, read by the training loop and the run-folder
lock's wait, cleared when the job that saw it ends.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_STOP = threading.Event()


def request_stop() -> None:
    """Ask the running pretraining to checkpoint after the current step and raise
    :class:`~benchmark.core.errors.Preempted` (what a SLURM/submitit launcher calls from its own
    signal hook)."""
    _STOP.set()


def stop_requested() -> bool:
    """Whether a stop was requested since the last :func:`clear_stop_request`."""
    return _STOP.is_set()


def clear_stop_request() -> None:
    """Forget a stop request (it belongs to the pretraining call that saw it)."""
    _STOP.clear()


@contextmanager
def preemption_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGUSR1)) -> Iterator[None]:
    """While active, the given signals call :func:`request_stop` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: request_stop()) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
