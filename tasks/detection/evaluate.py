"""Run a detector over a VOC-layout test set and score it with the VOC07 evaluator."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmark.core.distributed import rank_and_world
from tasks.detection.data import collate_detection
from tasks.detection.voc_eval import evaluate_voc07


@dataclass(frozen=True)
class EvalResult:
    """VOC07 metrics (percent, see ``evaluate_voc07``) and the inference speed."""

    metrics: dict
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


@torch.no_grad()
def predict(model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device, batch_size: int = 4) -> list[dict]:
    """Detections (boxes, scores, labels on the CPU) for every image of ``dataset``, in order."""
    model.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_detection)
    detections: list[dict] = []
    for images, _ in loader:
        outputs = model([image.to(device) for image in images])
        detections += [{k: v.cpu() for k, v in out.items()} for out in outputs]
    return detections


def evaluate_detector(
    model: nn.Module, dataset: torch.utils.data.Dataset, device: torch.device, batch_size: int = 4
) -> EvalResult:
    """Predict on ``dataset`` (a VOCDetectionSet; shared over ranks when distributed) and score."""
    rank, world = rank_and_world()
    start = time.perf_counter()
    mine = list(range(rank, len(dataset), world))
    detections = predict(model, Subset(dataset, mine), device, batch_size)
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, list(zip(mine, detections)))
        detections = [d for _, d in sorted((pair for part in gathered for pair in part), key=lambda p: p[0])]
    seconds = time.perf_counter() - start
    truths = [dataset.target(i) for i in range(len(dataset))]
    return EvalResult(evaluate_voc07(detections, truths, dataset.classes), len(dataset), seconds)
