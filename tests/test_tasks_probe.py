"""The probe loop (tasks/probe.py) and its feature sources (tasks/probe_sources.py): the cached
path keeps the numbers of the loop it replaced, the online path (the frozen trunk on every
batch) trains the same heads when augmentation is off, two gloo ranks train the heads of one
process, and a killed or stopped probe resumes to the heads of an uninterrupted one."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from gloo_support import free_port, join_gloo
from probe_support import LRS, SCHEDULE, SlowSource, digits_trunk, run_probe
from tasks_support import make_context

from benchmark.core.config import load_profile, resolve
from benchmark.core.errors import Preempted
from benchmark.core.stop_request import clear_stop_request, request_stop
from benchmark.data import get_dataset
from benchmark.data.augment import CIFAR_MEAN, CIFAR_STD
from benchmark.models import build_backbone
from tasks.base import available_tasks, get_task
from tasks.features import feature_batches, gather_features, resolve_layers
from tasks.probe import ProbeSchedule, make_head, train_heads, train_probe
from tasks.probe_sources import CachedFeatures, FeatureRows, FrozenTrunk
from tasks.progress import TaskProgress
from tasks.transforms import eval_transform, train_transform

REPO = Path(__file__).resolve().parent.parent
PROBE_TASKS = ("linear", "linear_multilayer", "places205_linear", "places205_linear_multilayer")


# The probe loop as it was before the shared loop (tasks/probe.py at 9905c89), one run per lr.
@torch.no_grad()
def _old_score_heads(heads, features, labels, device, batch):
    heads.eval()
    hits = torch.zeros(len(heads), 2)
    labels = labels.to(device)
    for start in range(0, len(labels), batch):
        y = labels[start : start + batch]
        for h, (head, feats) in enumerate(zip(heads, features)):
            logits = head(feats[start : start + batch].to(device).float())
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
            hits[h, 0] += top[:, 0].sum().item()
            hits[h, 1] += top.any(dim=1).sum().item()
    return hits / max(len(labels), 1)


def _old_train_probe(train_features, train_labels, eval_sets, num_classes, schedule, device, seed):
    batch_stats = schedule.head_bn == "batch_stats"
    torch.manual_seed(seed)
    heads = nn.ModuleList(make_head(f.shape[1], num_classes, schedule.norm, schedule.head_init)
                          for f in train_features).to(device)
    optimizer = torch.optim.SGD(heads.parameters(), lr=schedule.lr, momentum=schedule.momentum,
                                weight_decay=schedule.weight_decay, nesterov=schedule.nesterov)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(schedule.milestones), schedule.gamma)
    train_on_device = [f.to(device) for f in train_features]
    labels = train_labels.to(device).long()
    generator = torch.Generator().manual_seed(seed)
    history = {name: [] for name in eval_sets}

    def score():
        for name, (feats, y) in eval_sets.items():
            history[name].append(_old_score_heads(heads, feats, y, device, 4 * schedule.batch_size))

    score()
    for _ in range(schedule.epochs):
        heads.train(batch_stats)
        order = torch.randperm(len(labels), generator=generator).to(device)
        for start in range(0, len(order), schedule.batch_size):
            idx = order[start : start + schedule.batch_size]
            if batch_stats and len(idx) < 2:
                continue
            loss = sum(F.cross_entropy(head(feats[idx].float()), labels[idx])
                       for head, feats in zip(heads, train_on_device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
        score()
    return {name: torch.stack(rows) for name, rows in history.items()}, heads


def _random_features(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    features = [torch.randn(n, d, generator=generator) + labels[:, None] for d in (6, 3)]
    return features, labels


@pytest.mark.parametrize("schedule", [
    ProbeSchedule(epochs=4, lr=0.0, batch_size=16, milestones=(2,), weight_decay=1e-3),
    ProbeSchedule(epochs=3, lr=0.0, batch_size=16, nesterov=True, norm="bn_noaffine",
                  head_bn="batch_stats", milestones=(1, 2)),
])
def test_the_cached_path_keeps_the_old_loops_numbers_bit_for_bit(schedule):
    """97 = 6 x 16 + 1 train rows: the last batch of one row (batch_stats skips it)."""
    train, train_y = _random_features(97, 0)
    test, test_y = _random_features(41, 1)
    lrs = (0.05, 0.5)
    source = CachedFeatures(FeatureRows(train, train_y, torch.arange(97)),
                            {"holdout": FeatureRows(train, train_y, torch.arange(20)),
                             "test": FeatureRows(test, test_y)}, "cpu")
    run = train_heads(source, 4, schedule, lrs, "cpu", 3)
    for g, lr in enumerate(lrs):
        evals = {"holdout": ([f[:20] for f in train], train_y[:20]), "test": (test, test_y)}
        old, old_heads = _old_train_probe(train, train_y, evals, 4, _with_lr(schedule, lr), "cpu", 3)
        for name in evals:
            assert torch.equal(run.scores[name][g], old[name])
        for new, before in zip(run.heads[g].state_dict().values(), old_heads.state_dict().values()):
            # bit-identical on one thread; with several BLAS threads the batched multi-lr
            # backward may round differently (CI saw last-ulp differences)
            assert torch.allclose(new, before, rtol=1e-4, atol=1e-5)


def _with_lr(schedule: ProbeSchedule, lr: float) -> ProbeSchedule:
    return ProbeSchedule(**{**schedule.__dict__, "lr": lr})


def test_train_probe_is_the_shared_loop_at_one_lr():
    train, train_y = _random_features(50, 0)
    schedule = ProbeSchedule(epochs=2, lr=0.2, batch_size=16)
    scores = train_probe(train, train_y, {"test": (train, train_y)}, 4, schedule, "cpu", 0)
    old, _ = _old_train_probe(train, train_y, {"test": (train, train_y)}, 4, schedule, "cpu", 0)
    assert torch.equal(scores["test"], old["test"])


def _assert_heads_close(a: nn.Module, b: nn.Module, atol: float) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=atol, rtol=0), name


def test_online_probe_without_augmentation_trains_the_cached_heads():
    """The mini profile's backbone and block layers on digits, the training set under the
    evaluation transform: the same order and init give the same heads to 1e-5."""
    config = resolve("mini", "invp")
    torch.manual_seed(0)
    backbone = build_backbone(config.model).eval()
    settings = config.tasks["linear"]
    layers = resolve_layers(settings["layers"], backbone, dict(settings["grids"]))
    data = get_dataset("digits")
    train = torch.utils.data.Subset(data.build(REPO, "train", eval_transform("digits")), range(200))
    test = torch.utils.data.Subset(data.build(REPO, "test", eval_transform("digits")), range(100))
    train_f, train_y = gather_features(feature_batches(backbone, train, layers, "cpu", batch_size=64))
    test_f, test_y = gather_features(feature_batches(backbone, test, layers, "cpu", batch_size=64))
    cached = CachedFeatures(FeatureRows(train_f, train_y), {"test": FeatureRows(test_f, test_y)}, "cpu")
    online = FrozenTrunk(backbone, layers, train, {"test": test}, "cpu", seed=0)
    schedule = ProbeSchedule(epochs=2, lr=0.0, batch_size=32, milestones=(1,))
    expected = train_heads(cached, 10, schedule, (0.1, 1.0), "cpu", 0)
    got = train_heads(online, 10, schedule, (0.1, 1.0), "cpu", 0)
    _assert_heads_close(got.heads, expected.heads, 1e-5)
    assert torch.allclose(got.scores["test"], expected.scores["test"], atol=0.011)  # <= 1 image


def test_online_training_augmentation_is_seeded_per_epoch_and_item():
    source = digits_trunk(train_size=8)
    first = [f for f, _ in source.batches("train", [torch.arange(8)], 0)][0]
    again = [f for f, _ in source.batches("train", [torch.arange(8)], 0)][0]
    other = [f for f, _ in source.batches("train", [torch.arange(8)], 1)][0]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])  # another epoch, other crops


@pytest.fixture(scope="module")
def uninterrupted() -> dict:
    run = run_probe(digits_trunk())
    return {"scores": run.scores, "heads": run.heads.state_dict()}


def _assert_same_run(saved: dict, reference: dict) -> None:
    for name, scores in reference["scores"].items():
        assert torch.equal(saved["scores"][name], scores)
    for key, value in reference["heads"].items():
        assert torch.equal(saved["heads"][key], value), key


def test_a_probe_killed_mid_run_resumes_to_the_uninterrupted_heads(tmp_path, uninterrupted):
    script = [sys.executable, str(REPO / "tests" / "probe_support.py"), str(tmp_path / "progress")]
    killed = subprocess.Popen([*script, str(tmp_path / "killed.pt"), "0.2"])
    progress_file = tmp_path / "progress" / "probe.pt"
    deadline = time.monotonic() + 120
    while not progress_file.exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more steps
    killed.kill()
    assert killed.wait() == -9 and not (tmp_path / "killed.pt").exists()
    saved = torch.load(progress_file, weights_only=True)["state"]
    assert (saved["epoch"], saved["step"]) < (2, 5)  # the run was not over
    subprocess.run([*script, str(tmp_path / "resumed.pt")], check=True, timeout=300)
    _assert_same_run(torch.load(tmp_path / "resumed.pt", weights_only=True), uninterrupted)


class StopAtBatch(SlowSource):
    """Requests a stop (as the Slurm signal handler does) when training batch ``at`` is read."""

    def __init__(self, source, at: int):
        super().__init__(source, 0.0)
        self.at, self.seen = at, 0

    def batches(self, part, index_batches, epoch):
        for batch in super().batches(part, index_batches, epoch):
            self.seen += part == "train"
            if self.seen == self.at:
                request_stop()
            yield batch


def test_a_stop_request_mid_probe_preempts_and_the_rerun_resumes(tmp_path, uninterrupted):
    progress = TaskProgress(tmp_path, "probe", {"test": 1}, every_s=1e9)
    try:
        with pytest.raises(Preempted, match="stopped at epoch 2 step 2"):
            run_probe(StopAtBatch(digits_trunk(), at=7), progress)  # 5 steps per epoch
    finally:
        clear_stop_request()
    resumed = run_probe(digits_trunk(), TaskProgress(tmp_path, "probe", {"test": 1}, every_s=1e9))
    _assert_same_run({"scores": resumed.scores, "heads": resumed.heads.state_dict()}, uninterrupted)


def _ddp_worker(rank: int, world: int, port: int, out: Path) -> None:
    join_gloo(rank, world, port)
    try:
        run = run_probe(digits_trunk())
        if rank == 0:
            torch.save({"scores": run.scores, "heads": run.heads.state_dict()}, out)
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_train_the_heads_of_one_process(tmp_path, uninterrupted):
    """frozen_stats heads, 120 items in batches of 24: each rank takes 12 of every batch; the
    heads agree to 1e-5 (float summation order), the summed score counts exactly."""
    mp.spawn(_ddp_worker, args=(2, free_port(), tmp_path / "ddp.pt"), nprocs=2, join=True)
    saved = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for key, value in uninterrupted["heads"].items():
        assert torch.allclose(saved["heads"][key], value, atol=1e-5, rtol=0), key
    for name, scores in uninterrupted["scores"].items():
        assert torch.allclose(saved["scores"][name], scores, atol=1 / 60 + 1e-6)


def _batch_stats_worker(rank: int, world: int, port: int, out: Path) -> None:
    join_gloo(rank, world, port)
    try:
        schedule = replace(SCHEDULE, norm="bn_noaffine", head_bn="batch_stats")
        run = train_heads(digits_trunk(), 10, schedule, LRS, "cpu", 0)
        torch.save(run.heads.state_dict(), out / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_two_gloo_ranks_with_batch_statistics_end_with_the_same_heads(tmp_path):
    """Each rank normalises its half of every batch, so its BN running statistics are its own;
    averaged over the ranks after every step, both ranks hold (score, save) the same heads."""
    mp.spawn(_batch_stats_worker, args=(2, free_port(), tmp_path), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert any(key.endswith("running_mean") for key in rank0)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key


def test_probe_tasks_default_to_online_and_mini_linear_stays_cached():
    tasks = available_tasks()
    for name in PROBE_TASKS:
        assert tasks[name].defaults["features"] == "online"
        assert tasks[name].resource_kind_for({}) == "online_probe"
        assert tasks[name].resource_kind_for({"features": "cached"}) == "cached_features"
    mini = load_profile("mini")["tasks"]
    assert mini["linear"]["features"] == "cached"
    assert all(mini[name]["features"] == "online" for name in PROBE_TASKS[1:])
    for profile in ("imagenet", "imagenet-mlp", "cifar"):
        for name, settings in load_profile(profile)["tasks"].items():
            if name in PROBE_TASKS:
                assert {**tasks[name].defaults, **settings}["features"] == "online", (profile, name)


def test_the_probe_task_checkpoints_in_its_progress_folder_and_resumes(tmp_path):
    """An online ``linear`` task stopped at its first step leaves its progress in the job's
    folder; the rerun resumes from it and reports what an uninterrupted run reports."""
    settings = {"dataset": "digits", "epochs": 2, "lr": [0.1, 1.0], "holdout": 200,
                "train_limit": 400, "test_split": "test", "grids": {"": 2}}
    plain = get_task("linear").run(make_context(tmp_path / "plain", "linear", settings))
    ctx = make_context(tmp_path / "stopped", "linear", settings)
    ctx.progress_dir = tmp_path / "progress"
    request_stop()
    try:
        with pytest.raises(Preempted, match="stopped at epoch 1 step 1"):
            get_task("linear").run(ctx)
    finally:
        clear_stop_request()
    assert (tmp_path / "progress" / "probe.pt").is_file()
    resumed = get_task("linear").run(ctx)
    assert [(m.metric, m.split, m.value) for m in resumed] == [(m.metric, m.split, m.value) for m in plain]


def test_the_cifar_probe_trains_on_flips_only_as_the_official_script():
    """InvP's datasets/cifar.py get_linear_dataloader: flip, ToTensor, Normalize (no crop); the
    small-image recipes' default (the mini's probes) keeps RandomCrop with padding."""
    settings = {**get_task("linear").defaults, **load_profile("cifar")["tasks"]["linear"]}
    augment = train_transform("cifar10", settings).transforms
    assert [type(t).__name__ for t in augment] == ["RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert (tuple(augment[-1].mean), tuple(augment[-1].std)) == (CIFAR_MEAN, CIFAR_STD)
    assert type(train_transform("digits").transforms[0]).__name__ == "RandomCrop"
