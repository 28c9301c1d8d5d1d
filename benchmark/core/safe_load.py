"""Reading torch files without running code.

Every ``.pt`` file the benchmark reads (training checkpoints, ``encoder.pt``, export inputs)
goes through :func:`load_weights_only`: ``torch.load(weights_only=True)``, which rebuilds
tensors, containers and plain values only (the feature cache is raw arrays + JSON, no pickle). A pickle that names any other callable (a
crafted ``__reduce__`` that runs a command, or simply a numpy array) is refused, never executed.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from benchmark.core.errors import BadFileError

REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")


class LoadError(BadFileError):
    """A torch file was not loaded; ``path``, ``reason`` and the message's fix say why and what to do."""

    def __init__(self, path: str | Path, reason: str, remedy: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} {reason}. {remedy}".strip())


class UnsafeFile(LoadError):
    """The file holds objects that only full unpickling could rebuild, and full unpickling can
    run arbitrary code."""


class CorruptFile(LoadError):
    """The file is truncated, empty or not a torch file at all."""


def _refusal(message: str) -> str:
    found = REFUSED_GLOBAL.search(message)
    what = f"it refers to {found.group(1).rstrip('.')}" if found else \
        "it uses pickle instructions beyond those of tensors and plain values"
    return (f"was not loaded: {what}, which only full unpickling could rebuild, and full unpickling "
            "can run arbitrary code (a crafted file may have been planted there)")


def load_weights_only(path: str | Path, remedy: str = "") -> Any:
    """The contents of the torch file ``path`` (on the CPU), loaded with ``weights_only=True``.

    Raises :class:`UnsafeFile` when the file needs full unpickling, :class:`CorruptFile` when it
    cannot be read; both messages name the file and end with ``remedy`` (what the user can do).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeFile(path, _refusal(str(exc)), remedy) from None
    except Exception as exc:  # noqa: BLE001  (truncated zip, empty file, foreign format: all "unreadable")
        first = str(exc).strip().split(". ")[0].split("\n")[0]  # torch's first sentence
        kind = type(exc).__name__
        raise CorruptFile(path, f"is unreadable ({kind}: {first})" if first else f"is unreadable ({kind})",
                          remedy) from None
