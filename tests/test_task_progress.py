"""A task's progress checkpoints (tasks/progress.py): saved on time and on a stop request,
resumed only by the same identity, and off when no folder is given."""
from __future__ import annotations

import pytest
import torch

from benchmark.core.errors import Preempted
from benchmark.core.stop_request import clear_stop_request, request_stop
from tasks.progress import TaskProgress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_state_round_trips_and_saves_only_when_due(tmp_path):
    clock = FakeClock()
    progress = TaskProgress(tmp_path, "probe", {"lr": 0.1}, every_s=10.0, clock=clock)
    assert progress.load() is None
    progress.step_done(lambda: {"step": 1}, "step 1")
    assert progress.load() is None  # not due yet
    clock.now = 10.0
    progress.step_done(lambda: {"step": 2, "w": torch.ones(3)}, "step 2")
    state = TaskProgress(tmp_path, "probe", {"lr": 0.1}).load()
    assert state["step"] == 2 and torch.equal(state["w"], torch.ones(3))


def test_a_stop_request_saves_then_raises_preempted(tmp_path):
    progress = TaskProgress(tmp_path, "probe", {"lr": 0.1}, every_s=1e9)
    request_stop()
    try:
        with pytest.raises(Preempted, match="stopped at epoch 2 step 5; progress saved"):
            progress.step_done(lambda: {"step": 5}, "epoch 2 step 5")
    finally:
        clear_stop_request()
    assert TaskProgress(tmp_path, "probe", {"lr": 0.1}).load() == {"step": 5}


def test_progress_of_another_identity_is_refused(tmp_path):
    TaskProgress(tmp_path, "probe", {"lr": 0.1}).save({"step": 3})
    with pytest.raises(ValueError, match="progress of another task configuration"):
        TaskProgress(tmp_path, "probe", {"lr": 1.0}).load()


def test_no_folder_means_no_checkpoints_and_no_stop(tmp_path):
    progress = TaskProgress(None, "probe", {}, every_s=0.0)
    request_stop()
    try:
        progress.step_done(lambda: {"step": 1}, "step 1")  # neither saves nor raises
    finally:
        clear_stop_request()
    assert progress.load() is None and not list(tmp_path.iterdir())
