"""The registered ``detection`` task end to end on a tiny mini_det set (a few iterations)."""
from __future__ import annotations

import pytest
import torch

from benchmark.core.config import ConfigError, RunConfig
from benchmark.data.mini_det import MiniDetParams, prepare_mini_det
from benchmark.models import build_backbone
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
