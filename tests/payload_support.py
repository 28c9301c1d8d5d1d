"""A pickle that runs code when it is loaded: the attacker's file of the safe-loading tests."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class Payload:
    """Unpickling this opens (creates) ``marker``: code run by the loader."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))
