"""Long tasks resume where a stop request or a kill -9 left them (tasks/progress.py): transfer
skips the grid points it finished, fine-tuning and semi-supervised fine-tuning resume mid-run
exactly."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from tasks_support import TinyBackbone, make_context
from torch.utils.data import DataLoader, TensorDataset

import tasks.transfer as transfer_module
from benchmark.core.errors import Preempted
from benchmark.core.stop_request import clear_stop_request, request_stop
from tasks.base import get_task
from tasks.finetune import FinetuneRecipe, epoch_batches, fine_tune
from tasks.progress import TaskProgress

REPO = Path(__file__).resolve().parent.parent

TRANSFER = {"datasets": ["digits"], "lrs": [0.01, 0.1], "weight_decays": [0.0, 1e-4],
            "steps": 12, "batch_size": 32}
SEMISUP = {"dataset": "digits", "fractions": [0.2, 0.5], "test_split": "test", "epochs": 2,
           "milestones": [1], "lr": 0.05, "batch_size": 64}


@pytest.fixture(autouse=True)
def _no_stop_left():
    yield
    clear_stop_request()


def _values(measurements) -> list[tuple]:
    return [(m.metric, m.split, m.dataset, m.value, dict(m.extra)) for m in measurements]


def _stop_at_step(monkeypatch, call: int) -> None:
    """Request a stop at the ``call``-th step boundary of any checkpointed loop."""
    calls = {"n": 0}
    original = TaskProgress.step_done

    def counting(self, state, where):
        calls["n"] += 1
        if calls["n"] == call:
            request_stop()
        return original(self, state, where)

    monkeypatch.setattr(TaskProgress, "step_done", counting)


def test_epoch_batches_are_the_shuffling_loaders():
    """fine_tune rebuilds each epoch's batches from the generator: the same batches, epoch after
    epoch, as DataLoader(shuffle=True) with that generator (the order before resumable runs)."""
    for drop_last in (True, False):
        loader = DataLoader(TensorDataset(torch.arange(70)), batch_size=16, shuffle=True,
                            drop_last=drop_last, generator=torch.Generator().manual_seed(3))
        generator = torch.Generator().manual_seed(3)
        for _ in range(3):
            assert [b[0].tolist() for b in loader] == epoch_batches(70, 16, drop_last, generator)


class NoisyImages(TensorDataset):
    """Random images whose every read adds noise from torch's global RNG (as augmentation does)."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image + 0.1 * torch.randn_like(image), label


def test_fine_tune_resumed_mid_epoch_is_exact(tmp_path, monkeypatch):
    data = NoisyImages(torch.randn(70, 1, 8, 8), torch.randint(0, 3, (70,)))
    recipe = FinetuneRecipe(lr=0.1, epochs=3, batch_size=16, milestones=(2,))
    torch.manual_seed(0)
    backbone = TinyBackbone()  # fine_tune trains it in place: each run gets a copy
    uninterrupted = fine_tune(copy.deepcopy(backbone), 3, data, recipe, "cpu", 0)
    _stop_at_step(monkeypatch, 6)  # epoch 2 (4 batches an epoch), its second batch
    progress = TaskProgress(tmp_path, "fit", {"run": 1}, every_s=1e9)
    with pytest.raises(Preempted, match="fine-tune step 6 of 12"):
        fine_tune(copy.deepcopy(backbone), 3, data, recipe, "cpu", 0, progress=progress)
    clear_stop_request()
    assert progress.load()["position"] == 2
    torch.manual_seed(7)  # a restarted process: another global RNG state, restored from the file
    resumed = fine_tune(copy.deepcopy(backbone), 3, data, recipe, "cpu", 0, progress=progress)
    for (name, a), b in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_transfer_stopped_after_two_grid_points_resumes_at_the_third(tmp_path, monkeypatch):
    uninterrupted = get_task("transfer").run(make_context(tmp_path / "a", "transfer", TRANSFER))
    ctx = replace(make_context(tmp_path / "b", "transfer", TRANSFER),
                  progress_dir=tmp_path / "progress", progress_every_s=1e9)
    scored, original_score = [], transfer_module.transfer_scores

    def score_then_stop(*args):
        scored.append(1)
        if len(scored) == 2:
            request_stop()  # the stop arrives as point 2 is scored: point 3's first step stops
        return original_score(*args)

    monkeypatch.setattr(transfer_module, "transfer_scores", score_then_stop)
    with pytest.raises(Preempted, match="fine-tune step 1 of 12"):
        get_task("transfer").run(ctx)
    clear_stop_request()
    saved = {p.name for p in (tmp_path / "progress").iterdir()}
    assert saved == {"digits-grid.pt", "digits-point2.pt"}  # points 0 and 1 done, 2 at step 1
    fitted = []
    monkeypatch.setattr(transfer_module, "fine_tune",
                        lambda *args, progress, **kw: fitted.append(progress.path.stem)
                        or fine_tune(*args, progress=progress, **kw))
    resumed = get_task("transfer").run(ctx)
    assert fitted == ["digits-point2", "digits-point3", "digits-test"]
    assert _values(resumed) == _values(uninterrupted)


def _finished_points(grid_file: Path) -> int:
    """Grid points a transfer job's grid checkpoint holds as done (0 while it is absent)."""
    if not grid_file.is_file():
        return 0
    try:
        return len(torch.load(grid_file, weights_only=True)["state"]["val_scores"])
    except (EOFError, RuntimeError):  # never half-written (atomic), but be safe while polling
        return 0


def test_a_transfer_job_killed_after_two_grid_points_resumes_at_the_third(tmp_path):
    """SIGKILL (no chance to save anything) once the grid checkpoint holds 2 finished points, in
    the third point's fine-tune; the rerun fits points 3 and 4 and the retrain only, and ends
    with the records of an uninterrupted run."""
    script = [sys.executable, str(REPO / "tests" / "transfer_support.py")]
    progress = tmp_path / "progress"
    killed = subprocess.Popen([*script, str(tmp_path / "killed.json"), str(progress), "0.25"])
    deadline = time.monotonic() + 300
    while _finished_points(progress / "digits-grid.pt") < 2 and killed.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.kill()
    assert killed.wait() == -9 and not (tmp_path / "killed.json").exists()
    assert _finished_points(progress / "digits-grid.pt") == 2
    subprocess.run([*script, str(tmp_path / "resumed.json"), str(progress)], check=True, timeout=600)
    subprocess.run([*script, str(tmp_path / "plain.json")], check=True, timeout=600)
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert resumed["fitted"] == ["digits-point2", "digits-point3", "digits-test"]
    assert plain["fitted"] == [""] * 5  # no progress folder: checkpointing off
    assert resumed["values"] == plain["values"]


def test_semisup_stopped_mid_run_ends_with_the_same_scores(tmp_path, monkeypatch):
    uninterrupted = get_task("semisup").run(make_context(tmp_path / "a", "semisup", SEMISUP))
    ctx = replace(make_context(tmp_path / "b", "semisup", SEMISUP),
                  progress_dir=tmp_path / "progress", progress_every_s=1e9)
    _stop_at_step(monkeypatch, 12)  # 0.2: 8 steps (2 epochs of 4); then 0.5: its 4th of 16
    with pytest.raises(Preempted, match="fine-tune step 4 of 16"):
        get_task("semisup").run(ctx)
    clear_stop_request()
    assert {p.name for p in (tmp_path / "progress").iterdir()} == {"fractions.pt", "fit-50pct.pt"}
    assert _values(get_task("semisup").run(ctx)) == _values(uninterrupted)
