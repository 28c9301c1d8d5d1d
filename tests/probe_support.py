"""A small online probe for the resume and DDP tests (tests/test_tasks_probe.py): a seeded
TinyBackbone on scikit-learn's digits, trained with augmentation. Run as a script it trains
the probe with a progress checkpoint after every step and saves the result:

    python tests/probe_support.py PROGRESS_DIR OUT.pt [SECONDS_PER_BATCH]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tasks_support import TinyBackbone
from torch.utils.data import Subset

from benchmark.data import get_dataset
from tasks.features import FeatureLayer
from tasks.probe import ProbeRun, ProbeSchedule, train_heads
from tasks.probe_sources import Batch, FrozenTrunk
from tasks.progress import TaskProgress
from tasks.transforms import eval_transform, train_transform

SCHEDULE = ProbeSchedule(epochs=3, lr=0.1, batch_size=24, milestones=(2,))
LRS = (0.1, 0.5)
LAYERS = ("stem@2", "layer1.0@2", "pooled")


class SlowSource:
    """``source`` with a pause after every training batch (so that a test can kill it mid-run)."""

    def __init__(self, source: FrozenTrunk, pause_s: float):
        self.source, self.pause_s = source, pause_s
        self.train_size, self.eval_sizes = source.train_size, source.eval_sizes

    def dims(self) -> list[int]:
        return self.source.dims()

    def batches(self, part: str, index_batches: Sequence[torch.Tensor], epoch: int) -> Iterator[Batch]:
        for batch in self.source.batches(part, index_batches, epoch):
            yield batch
            if part == "train":
                time.sleep(self.pause_s)


def digits_trunk(train_size: int = 120, augment: bool = True) -> FrozenTrunk:
    """The online source: ``train_size`` digits (augmented), 60 held-out ones (eval transform)."""
    digits = get_dataset("digits")
    evaluation = eval_transform("digits")
    train = digits.build(Path("."), "train", train_transform("digits") if augment else evaluation)
    held_out = digits.build(Path("."), "test", evaluation)
    torch.manual_seed(0)
    return FrozenTrunk(TinyBackbone(), [FeatureLayer.parse(t) for t in LAYERS],
                       Subset(train, range(train_size)), {"holdout": Subset(held_out, range(60))},
                       "cpu", seed=0)


def run_probe(source, progress: TaskProgress | None = None) -> ProbeRun:
    """The probe of these tests on ``source``."""
    return train_heads(source, 10, SCHEDULE, LRS, "cpu", 0, progress)


def main(progress_dir: str, out: str, pause_s: str = "0") -> None:
    torch.set_num_threads(1)
    progress = TaskProgress(Path(progress_dir), "probe", {"test": 1}, every_s=0.0)
    run = run_probe(SlowSource(digits_trunk(), float(pause_s)), progress)
    torch.save({"scores": run.scores, "heads": run.heads.state_dict()}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
