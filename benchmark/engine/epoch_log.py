"""What a run reports per epoch: the meter of the epoch's scalars, ``<run_dir>/log.jsonl`` (one
JSON record per epoch, trimmed to the resume point) and TensorBoard scalars when installed."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch

from benchmark.core.atomic import atomic_open
from benchmark.core.distributed import all_reduce_mean


class EpochMeter:
    """Sums of the logged scalars, steps, images and seconds of the current epoch."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.images = 0
        self.seconds = 0.0

    def add(self, logs: Mapping[str, float], images: int, seconds: float) -> None:
        """Count one step: its scalars, its images and the seconds it took."""
        for key, value in logs.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.steps += 1
        self.images += images
        self.seconds += seconds

    def summary(self, device: torch.device) -> dict[str, float]:
        """Epoch means of every scalar (averaged over ranks) and global images/s."""
        keys = sorted(self.sums)
        local = torch.tensor([self.sums[k] / max(self.steps, 1) for k in keys] + [self.images, self.seconds],
                             dtype=torch.float64, device=device)
        world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        mean = all_reduce_mean(local).tolist()
        out = dict(zip(keys, mean[: len(keys)]))
        out["images_per_s"] = mean[-2] * world / mean[-1] if mean[-1] > 0 else 0.0
        return out

    def state_dict(self) -> dict[str, Any]:
        """The sums and counts (for a mid-epoch checkpoint)."""
        return {"sums": dict(self.sums), "steps": self.steps, "images": self.images, "seconds": self.seconds}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.sums = dict(state["sums"])
        self.steps, self.images, self.seconds = state["steps"], state["images"], state["seconds"]


def logged_epoch(line: str) -> int | None:
    """The epoch of one ``log.jsonl`` line; None when the line is no log record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) else None


def log_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(line, record) for every log record of a ``log.jsonl`` (none when the file is absent); a
    line that is no log record (half-written when a run was killed) is skipped with a warning
    naming the file and line."""
    found = []
    lines = Path(path).read_text().splitlines() if Path(path).is_file() else []
    for number, line in enumerate(lines, 1):
        if logged_epoch(line) is not None:
            found.append((line, json.loads(line)))
        elif line.strip():
            warnings.warn(f"{path}, line {number}: dropping {line[:60]!r}, which is no log record "
                          "(half-written when the run was killed?)", stacklevel=2)
    return found


def tensorboard_writer(folder: Path) -> Any:
    """A SummaryWriter into ``folder`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(folder))


class EpochLog:
    """The run's epoch records: appended to ``path`` (JSON lines), echoed on stderr and, while
    TensorBoard is open, written as ``pretrain/<key>`` scalars into ``tensorboard_dir``. Only
    rank 0 uses it."""

    def __init__(self, path: Path, tensorboard_dir: Path):
        self.path, self.tensorboard_dir = Path(path), Path(tensorboard_dir)
        self.tensorboard: Any = None

    def trim(self, next_epoch: int) -> None:
        """Rewrite the log (atomically) with the lines of the epochs before ``next_epoch``; a line
        that is no log record (half-written when a run was killed) is dropped with a warning."""
        kept = [line for line, record in log_lines(self.path) if record["epoch"] < next_epoch]
        with atomic_open(self.path, "w") as fh:
            fh.writelines(line + "\n" for line in kept)

    def open_tensorboard(self) -> None:
        """Start writing TensorBoard scalars (nothing happens when tensorboard is not installed)."""
        self.tensorboard = tensorboard_writer(self.tensorboard_dir)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if one is open."""
        if self.tensorboard is not None:
            self.tensorboard.close()

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` (its ``epoch`` key is the TensorBoard step) and echo it on stderr."""
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"pretrain/{key}", value, record["epoch"])
        print(json.dumps(record), file=sys.stderr)
