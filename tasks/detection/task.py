"""The registered ``detection`` task: fine-tune a Faster R-CNN C4 from the encoder, report AP.

Settings (``tasks.detection``, defaults in ``DEFAULTS``): ``dataset`` (``voc_detection`` or
``mini_det``), ``batch_size`` (global images per step), ``schedule`` (a schedule at its own
batch size, moved to ``batch_size`` by the linear rule; MoCo's VOC schedule when null), ``detector``
(:class:`~tasks.detection.model.C4Config` keys), ``precise_bn_iters`` (BN statistics recomputed
over that many training batches after training, MoCo's 200; 0 = off), ``eval_batch_size``,
``num_workers``, ``trials`` (independent fine-tunes, one job each, seeded seed + trial; the
report pools them with the seeds as mean ± std; MoCo averages 5) and ``trial`` (set by planning).
Training checkpoints every iteration (tasks/progress.py), so a requeued job resumes. A job runs
one process per GPU it is given (``launcher.task_kinds.detection``; MoCo's recipe: 8 GPUs, 2 of
the 16 images each): rank 0 writes the one progress checkpoint and the records.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from torch import nn

from benchmark.core.config import ConfigError
from benchmark.core.distributed import rank_and_world
from benchmark.core.fields import Int, Name, Nullable, Section
from benchmark.core.runtime import seed_everything
from benchmark.data import get_dataset
from tasks.base import EVERY_GPU, Measurement, Task, TaskContext, register
from tasks.common import task_settings
from tasks.detection.data import DetectionInput
from tasks.detection.evaluate import evaluate_detector
from tasks.detection.model import C4_FIELDS, C4Config, build_c4_detector, split_c4
from tasks.detection.schedule import MOCO_VOC, SCHEDULE_SETTINGS, DetectionSchedule
from tasks.detection.train import train_detector
from tasks.errors import TaskNotApplicable

log = logging.getLogger(__name__)

# MoCo's VOC recipe (docs/protocols.md §MoCo recipe); ``schedule: null`` means MoCo's 16-image schedule.
DEFAULTS = {
    "dataset": "voc_detection",
    "batch_size": 16,
    "schedule": None,
    "detector": {},
    "precise_bn_iters": 200,
    "eval_batch_size": 4,
    "num_workers": 0,
    "trials": 1,  # independent fine-tunes, each its own job seeded seed + trial (MoCo averages 5)
    "trial": 0,  # which trial a job is (set by planning, one per unit)
}


@register
class DetectionTask(Task):
    """Faster R-CNN R50-C4 fine-tuned on VOC07+12 trainval, evaluated on VOC07 test."""

    name = "detection"
    resource_kind = "detection"
    max_processes = EVERY_GPU  # train_detector shares every batch over the job's GPUs (DDP)
    fine_tunes = True
    summary = "Faster R-CNN C4 fine-tuned from the encoder; VOC07 AP, AP50, AP75 (detectron2 definitions)"
    paper_table = "Table 4"
    paper_column = "VOC07+12 detection"
    metrics = ("AP", "AP50", "AP75")
    metric_units = "percent"  # COCO-style AP as detectron2 prints it (tasks/detection/voc_eval.py)
    protocol = "docs/protocols.md §MoCo recipe (MoCo's detectron2 VOC recipe on torchvision's FasterRCNN)"
    defaults = DEFAULTS
    settings_fields = {
        "dataset": Name(),
        "batch_size": Int(ge=1),
        "schedule": Nullable(SCHEDULE_SETTINGS),
        "detector": Section(C4_FIELDS),
        "precise_bn_iters": Int(ge=0),
        "eval_batch_size": Int(ge=1),
        "num_workers": Int(ge=0),
        "trials": Int(ge=1),
        "trial": Int(ge=0),
    }

    @classmethod
    def units(cls, settings: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One job per trial (``detection#<trial>``); trial 0 is the job of a single trial."""
        return [(f"#{trial}", {"trial": trial} if trial else {}) for trial in range(int(settings["trials"]))]

    @classmethod
    def identity_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's id does not depend on how many trials there are, and trial 0's is the id of
        the detection job from before trials (its settings without ``trials`` and ``trial``)."""
        kept = {k: v for k, v in settings.items() if k not in ("trials", "trial")}
        return {**kept, "trial": settings["trial"]} if settings["trial"] else kept

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """The detector and schedule blocks' own checks (channel counts, increasing steps)."""
        C4Config.from_settings(settings["detector"])
        if settings["schedule"]:
            DetectionSchedule.from_settings(settings["schedule"])

    @classmethod
    def check_backbone(cls, backbone: nn.Module, settings: Mapping[str, Any]) -> None:
        """The C4 detector needs the backbone's stem + stages split (``split_c4``)."""
        try:
            split_c4(backbone)
        except TaskNotApplicable as exc:
            raise ConfigError(str(exc)) from None

    def run(self, ctx: TaskContext) -> list[Measurement]:
        """Fine-tune on the ``trainval`` split, evaluate on ``test``; values in percent."""
        if ctx.encoder.kind == "pixels":
            raise TaskNotApplicable("detection fine-tunes a backbone; the raw-pixels encoder has none")
        settings = task_settings(self, ctx)
        detector = C4Config.from_settings(settings["detector"])
        _, world = rank_and_world()
        if world > 1 and detector.norm == "sync" and ctx.device.type != "cuda":
            raise ConfigError(f"tasks.detection.detector.norm=sync trains BatchNorm across the {world} "
                              "processes, which needs CUDA (gloo has no SyncBatchNorm); on the CPU "
                              "run one process, or freeze BN (norm: frozen in the profile's "
                              "tasks.detection.detector block)")
        spec = get_dataset(settings["dataset"])
        trial = int(settings["trial"])
        seed = ctx.seed + trial
        seed_everything(seed)
        backbone = ctx.encoder.load(ctx.device).requires_grad_(True)
        parts = split_c4(backbone)
        model = build_c4_detector(parts, spec.num_classes, detector)
        base = DetectionSchedule.from_settings(settings["schedule"]) if settings["schedule"] else MOCO_VOC
        schedule = base.scaled_to(int(settings["batch_size"]))
        train_set = spec.build(ctx.data_root, "trainval", DetectionInput(parts.in_channels, flip=True))
        test_set = spec.build(ctx.data_root, "test", DetectionInput(parts.in_channels, flip=False))
        stats = train_detector(
            model, train_set, schedule, ctx.device, seed,
            num_workers=int(settings["num_workers"]),
            precise_bn_iters=int(settings["precise_bn_iters"]),
            progress=ctx.progress("train", {"settings": settings, "processes": world}),
        )
        result = evaluate_detector(model, test_set, ctx.device, int(settings["eval_batch_size"]))
        log.info(
            "detection on %s: AP %.2f AP50 %.2f AP75 %.2f (%.2f it/s train, %.1f images/s eval)",
            spec.name, result.metrics["AP"], result.metrics["AP50"], result.metrics["AP75"],
            stats.iterations_per_s, result.images_per_s,
        )
        extra = {
            "trial": trial,
            "trials": int(settings["trials"]),
            "trial_seed": seed,
            "iterations": stats.iterations,
            "batch_size": schedule.batch_size,
            "lr": schedule.lr,
            "train_iterations_per_s": stats.iterations_per_s,
            "eval_images_per_s": result.images_per_s,
            "final_losses": stats.losses,
            "skipped_degenerate_boxes": train_set.skipped_degenerate + test_set.skipped_degenerate,
            "per_class_AP50": {name: aps[0] for name, aps in result.metrics["per_class"].items()},
        }
        return [Measurement(metric, result.metrics[metric], spec.name, "test", extra) for metric in self.metrics]
