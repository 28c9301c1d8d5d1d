"""Detection with one process per GPU (here 2 gloo ranks on the CPU, on a tiny mini_det):
two ranks sharing every batch train the one-process detector and score it the same; a stop
request seen by one rank stops both at the same iteration, and the resumed pair ends with the
uninterrupted pair's weights; sync BatchNorm on the CPU and a batch the ranks cannot share are
refused with the setting to change."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gloo_support import free_port, join_gloo
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

from benchmark.core.config import ConfigError, RunConfig
from benchmark.core.errors import Preempted
from benchmark.core.stop_request import clear_stop_request, request_stop
from benchmark.data.mini_det import MINI_SPEC, MiniDetParams, prepare_mini_det
from benchmark.models import build_backbone
from tasks.base import TaskContext
from tasks.detection import task as detection_task
from tasks.detection import train as detection_train
from tasks.detection.data import DetectionInput
from tasks.detection.evaluate import evaluate_detector
from tasks.detection.model import C4Config, build_c4_detector, split_c4
from tasks.detection.schedule import DetectionSchedule
from tasks.detection.task import DetectionTask
from tasks.detection.train import TrainStats, train_detector
from tasks.progress import TaskProgress

# frozen BN (gloo has no SyncBatchNorm); one input size: canvases of one size, so no image is
# padded differently when it shares its batch (one process) or is alone (its rank)
DETECTOR = {
    "min_size_train": [96], "min_size_test": 96, "max_size": 200, "pixel_mean": [0.286],
    "pixel_std": [0.353], "anchor_sizes": [16, 32], "rpn_pre_nms_train": 100, "rpn_post_nms_train": 30,
    "rpn_pre_nms_test": 100, "rpn_post_nms_test": 20, "roi_size": 7, "box_batch_per_image": 16,
    "norm": "frozen",
}
SCHEDULE = {"batch_size": 2, "lr": 0.01, "iterations": 4, "steps": [3], "warmup_iters": 1}
STOP_AT = 2  # the iteration after which rank 1 sees a stop request


class FirstFound(BalancedPositiveNegativeSampler):
    """torchvision's sampler taking the first positives and negatives instead of random ones,
    so that which anchors and proposals train does not depend on who draws them."""

    def __call__(self, matched_idxs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        positives, negatives = [], []
        for labels in matched_idxs:
            positive, negative = torch.where(labels >= 1)[0], torch.where(labels == 0)[0]
            n_positive = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
            n_negative = min(negative.numel(), self.batch_size_per_image - n_positive)
            for chosen, out in ((positive[:n_positive], positives), (negative[:n_negative], negatives)):
                mask = torch.zeros_like(labels, dtype=torch.uint8)
                mask[chosen] = 1
                out.append(mask)
        return positives, negatives


def _detector(deterministic: bool) -> torch.nn.Module:
    torch.manual_seed(1)
    backbone = build_backbone({"backbone": "mini_resnet", "width": 8, "depths": [1, 1, 1, 1],
                               "in_channels": 1, "init": "kaiming_xavier"})
    config = C4Config.from_settings(DETECTOR)
    model = build_c4_detector(split_c4(backbone), 10, config)
    if deterministic:
        model.rpn.fg_bg_sampler = FirstFound(config.rpn_batch_per_image, config.rpn_positive_fraction)
        model.roi_heads.fg_bg_sampler = FirstFound(config.box_batch_per_image, config.box_positive_fraction)
    return model


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _trained(root: Path, flip: bool,
             progress: TaskProgress | None = None) -> tuple[torch.nn.Module, TrainStats]:
    model = _detector(deterministic=not flip)
    train_set = MINI_SPEC.build(root, "trainval", DetectionInput(1, flip))
    stats = train_detector(model, train_set, DetectionSchedule.from_settings(SCHEDULE),
                           torch.device("cpu"), 0, progress=progress)
    return model, stats


def _metrics(model: torch.nn.Module, root: Path) -> dict:
    return evaluate_detector(model, MINI_SPEC.build(root, "test", DetectionInput(1, False)),
                             torch.device("cpu"), 2).metrics


def _stop_on_rank_1(original):
    def step_done_together(self, state, where, device):
        if dist.get_rank() == 1 and where.startswith(f"detection iteration {STOP_AT} "):
            request_stop()
        return original(self, state, where, device)
    return step_done_together


def _rank(rank: int, world: int, port: int, root: Path, out: Path) -> None:
    join_gloo(rank, world, port)
    try:
        alike, alike_stats = _trained(root, flip=False)
        uninterrupted, _ = _trained(root, flip=True)
        progress = lambda: TaskProgress(out / "progress", "train", {"test": 1}, every_s=1e9)  # noqa: E731
        original = TaskProgress.step_done_together
        TaskProgress.step_done_together = _stop_on_rank_1(original)
        try:
            _trained(root, flip=True, progress=progress())
            stopped = "not stopped"
        except Preempted as exc:
            stopped = str(exc).split(";")[0]
        finally:
            TaskProgress.step_done_together = original
            clear_stop_request()
        dist.barrier()  # rank 0 saves after it stops; then the checkpoint is there for both
        saved = torch.load(out / "progress" / "train.pt", weights_only=True)["state"]["iteration"]
        resumed, _ = _trained(root, flip=True, progress=progress())
        torch.save({"alike": _weights(alike), "alike_metrics": _metrics(alike, root),
                    "alike_losses": alike_stats.losses,
                    "uninterrupted": _weights(uninterrupted), "resumed": _weights(resumed),
                    "stopped": stopped, "saved_iteration": saved}, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def same_size_root(tmp_path_factory, data_root) -> Path:
    root = tmp_path_factory.mktemp("mini_det_same_size")
    (root / "FashionMNIST").symlink_to((data_root / "FashionMNIST").resolve())
    prepare_mini_det(root, MiniDetParams(seed=1, trainval_images=8, test_images=6, canvas_min=128,
                                         canvas_max=128))
    return root


@pytest.fixture(scope="module")
def two_ranks(same_size_root, tmp_path_factory) -> list[dict]:
    """What each of 2 gloo ranks ended with (one spawn for the tests below)."""
    out = tmp_path_factory.mktemp("detection_ddp")
    mp.spawn(_rank, args=(2, free_port(), same_size_root, out), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.slow
def test_two_gloo_ranks_train_and_score_the_one_process_detector(two_ranks, same_size_root):
    """Batch 2 over 2 ranks (1 image each) = batch 2 in one process, with the sampling of
    anchors and proposals and the flips taken out (the only draws that depend on the process):
    weights to 1e-5 (float sums in another order), the same AP and last losses (the whole
    batch's on every rank)."""
    single, stats = _trained(same_size_root, flip=False)
    assert torch.equal(two_ranks[0]["alike"], two_ranks[1]["alike"])  # DDP kept the ranks equal
    assert not torch.equal(two_ranks[0]["alike"], _weights(_detector(deterministic=True)))  # it trained
    torch.testing.assert_close(two_ranks[0]["alike"], _weights(single), atol=1e-5, rtol=0)
    expected = _metrics(single, same_size_root)
    for rank in two_ranks:
        for metric in ("AP", "AP50", "AP75"):
            assert rank["alike_metrics"][metric] == pytest.approx(expected[metric], abs=1e-3), metric
        assert rank["alike_losses"] == pytest.approx(stats.losses, abs=1e-5)


@pytest.mark.slow
def test_a_stop_seen_by_one_rank_stops_both_and_the_pair_resumes_exactly(two_ranks):
    iterations = SCHEDULE["iterations"]
    for rank in two_ranks:
        assert rank["stopped"] == f"stopped at detection iteration {STOP_AT} of {iterations}"
        assert rank["saved_iteration"] == STOP_AT  # rank 0's one checkpoint, read by both
        assert torch.equal(rank["resumed"], rank["uninterrupted"])
    assert torch.equal(two_ranks[0]["resumed"], two_ranks[1]["resumed"])


def _context(root: Path, settings: dict) -> TaskContext:
    config = RunConfig.from_dict({"profile": "test", "seed": 0, "tasks": {"detection": settings}})
    return TaskContext(config, None, root, torch.device("cpu"), 0, root / "cache", task_name="detection")


def test_sync_batchnorm_over_cpu_processes_is_refused_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(detection_task, "rank_and_world", lambda: (0, 2))

    class Trainable:
        kind = "pretrained"

    settings = {"dataset": "mini_det", "batch_size": 2, "schedule": SCHEDULE,
                "detector": {**DETECTOR, "norm": "sync"}}
    ctx = _context(tmp_path, settings)
    ctx.encoder = Trainable()
    with pytest.raises(ConfigError, match="tasks.detection.detector.norm=sync .* 2 processes.*norm: frozen"):
        DetectionTask().run(ctx)


def test_a_batch_the_ranks_cannot_share_is_refused_naming_the_setting(monkeypatch, same_size_root):
    monkeypatch.setattr(detection_train, "rank_and_world", lambda: (0, 4))
    train_set = MINI_SPEC.build(same_size_root, "trainval", DetectionInput(1, False))
    with pytest.raises(ConfigError, match="tasks.detection.batch_size=2 .* 4 processes .* multiple of 4"):
        train_detector(_detector(False), train_set, DetectionSchedule.from_settings(SCHEDULE),
                       torch.device("cpu"), 0)
