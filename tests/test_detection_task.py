"""The registered ``detection`` task end to end on a tiny mini_det set (a few iterations)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.core.config import ConfigError, RunConfig
from benchmark.data.mini_det import MiniDetParams, prepare_mini_det
from benchmark.models import build_backbone
from gloo_support import free_port, join_gloo
from tasks.base import TaskContext
from tasks.detection.task import DetectionTask
from tasks.errors import TaskNotApplicable

SETTINGS = {
    "dataset": "mini_det",
    "batch_size": 2,
    "schedule": {"batch_size": 4, "lr": 0.02, "iterations": 2, "steps": [1], "warmup_iters": 1},
    "detector": {
        "min_size_train": [64, 80], "min_size_test": 80, "max_size": 120, "pixel_mean": [0.286],
        "pixel_std": [0.353], "anchor_sizes": [16, 32], "rpn_pre_nms_train": 100, "rpn_post_nms_train": 30,
        "rpn_pre_nms_test": 100, "rpn_post_nms_test": 20, "roi_size": 7, "box_batch_per_image": 16,
    },
    "precise_bn_iters": 1,
    "eval_batch_size": 4,
}


class Handle:
    """EncoderHandle stand-in: a fresh mini backbone of the given kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self.checkpoint_hash = "standin" if kind == "pretrained" else None

    def load(self, device="cpu"):
        torch.manual_seed(1)
        return build_backbone({"backbone": "mini_resnet", "width": 8, "depths": [1, 1, 1, 1], "in_channels": 1,
                               "init": "kaiming_xavier"}).to(device).eval()


@pytest.fixture(scope="module")
def mini_root(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("mini_task")
    (root / "FashionMNIST").symlink_to((data_root / "FashionMNIST").resolve())
    prepare_mini_det(root, MiniDetParams(seed=1, trainval_images=8, test_images=6))
    return root


def context(root, settings, kind="pretrained") -> TaskContext:
    config = RunConfig.from_dict({"profile": "test", "seed": 0, "tasks": {"detection": settings}})
    return TaskContext(config, Handle(kind), root, torch.device("cpu"), 0, root / "cache", task_name="detection")


def test_task_trains_and_reports_ap_ap50_ap75(mini_root):
    measurements = DetectionTask().run(context(mini_root, SETTINGS))
    assert [m.metric for m in measurements] == ["AP", "AP50", "AP75"]
    for m in measurements:
        assert m.dataset == "mini_det" and m.split == "test"
        assert 0.0 <= m.value <= 100.0
    extra = measurements[0].extra
    # the schedule given at batch 4 is moved to batch 2 by the linear rule
    assert extra["iterations"] == 4 and extra["lr"] == pytest.approx(0.01)
    assert set(extra["per_class_AP50"]) == {"tshirt", "trouser", "pullover", "dress", "coat", "sandal",
                                            "shirt", "sneaker", "bag", "ankleboot"}
    assert extra["train_iterations_per_s"] > 0 and extra["eval_images_per_s"] > 0


def test_task_refuses_pixels_and_bad_settings(mini_root):
    with pytest.raises(TaskNotApplicable, match="raw-pixels"):
        DetectionTask().run(context(mini_root, SETTINGS, kind="pixels"))
    with pytest.raises(ConfigError, match="unknown setting\\(s\\) \\['iters'\\]"):
        DetectionTask().run(context(mini_root, {**SETTINGS, "iters": 3}))
    with pytest.raises(ConfigError, match="detector: unknown setting\\(s\\) \\['anchors'\\]"):
        DetectionTask().run(context(mini_root, {**SETTINGS, "detector": {"anchors": [8]}}))


def test_task_is_registered_with_its_paper_table():
    assert DetectionTask.name == "detection" and DetectionTask.paper_table == "Table 4"
    assert DetectionTask.datasets({"dataset": "mini_det"}) == ("mini_det",)
    assert DetectionTask.datasets({}) == ("voc_detection",)


def _distributed_worker(rank: int, world: int, root: str, port: int, out: str) -> None:
    import torch.distributed as dist

    from benchmark.data.mini_det import MINI_SPEC
    from tasks.detection.data import DetectionInput
    from tasks.detection.evaluate import evaluate_detector
    from tasks.detection.model import C4Config, build_c4_detector, split_c4
    from tasks.detection.schedule import DetectionSchedule
    from tasks.detection.train import train_detector

    join_gloo(rank, world, port)
    # frozen BN: SyncBatchNorm needs GPUs once a process group exists
    config = C4Config.from_settings({**SETTINGS["detector"], "norm": "frozen"})
    model = build_c4_detector(split_c4(Handle("pretrained").load()), 10, config)
    schedule = DetectionSchedule.from_settings({**SETTINGS["schedule"], "batch_size": 2})
    train_detector(model, MINI_SPEC.build(root, "trainval", DetectionInput(1, True)), schedule, torch.device("cpu"), 0)
    result = evaluate_detector(model, MINI_SPEC.build(root, "test", DetectionInput(1, False)), torch.device("cpu"), 2)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.save({"metrics": result.metrics, "weights": weights}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_train_in_step_and_share_the_evaluation(mini_root, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(mini_root), free_port(), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.testing.assert_close(ranks[0]["weights"], ranks[1]["weights"])  # DDP kept them equal
    np.testing.assert_equal(ranks[0]["metrics"], ranks[1]["metrics"])  # both scored every test image
    initial = torch.cat([p.detach().flatten() for p in Handle("pretrained").load().parameters()])
    assert not torch.equal(ranks[0]["weights"][: initial.numel()], initial)


def test_a_stopped_fine_tune_resumes_to_the_same_metrics(mini_root, tmp_path, monkeypatch):
    """A stop request at iteration 2 of 4 saves the training state; the re-run resumes there
    (sampler position, RNG, optimizer) and ends with the uninterrupted run's AP and losses."""
    from dataclasses import replace

    from benchmark.core.errors import Preempted
    from benchmark.core.stop_request import clear_stop_request, request_stop
    from tasks.progress import TaskProgress

    uninterrupted = DetectionTask().run(context(mini_root, SETTINGS))
    ctx = replace(context(mini_root, SETTINGS), progress_dir=tmp_path, progress_every_s=1e9)
    original = TaskProgress.step_done

    def stop_at_iteration_2(self, state, where):
        if where.startswith("detection iteration 2 "):
            request_stop()
        return original(self, state, where)

    monkeypatch.setattr(TaskProgress, "step_done", stop_at_iteration_2)
    try:
        with pytest.raises(Preempted, match="detection iteration 2 of 4"):
            DetectionTask().run(ctx)
    finally:
        clear_stop_request()
    resumed = DetectionTask().run(ctx)
    assert [(m.metric, m.value) for m in resumed] == [(m.metric, m.value) for m in uninterrupted]
    assert resumed[0].extra["final_losses"] == uninterrupted[0].extra["final_losses"]
    assert uninterrupted[0].extra["trial"] == 0 and uninterrupted[0].extra["trial_seed"] == 0
