"""detectron2's VOC07 detection metric, written from its definition (docs/protocols.md §detectron2 defaults, §Metrics).

Per class and IoU threshold t in 0.50, 0.55, ..., 0.95: detections of all images are ranked by
score; each one is compared with the ground-truth box of its image it overlaps most. Overlap
> t with a difficult box: ignored (neither TP nor FP). Overlap > t with a box not yet taken:
TP (the box is taken). Otherwise FP. Difficult boxes do not count in the number of positives.
AP of a class is the VOC07 11-point AP (mean over r in {0, 0.1, ..., 1} of the highest precision
at recall >= r). Reported (in percent, as detectron2): AP = mean over thresholds of the
class-mean AP, AP50 and AP75 = class-mean AP at 0.50 and 0.75.

Boxes are in the 0-based continuous frame of the VOC loader (``xmin - 1, ymin - 1, xmax, ymax``)
and IoU is the plain continuous one; detectron2's "+1" pixel IoU on (prediction + 1, XML box)
is algebraically the same number. A class with no non-difficult ground truth has no defined AP:
it is reported as NaN and left out of the means.

The greedy matching needs no loop over detections: a detection's best-overlap box does not
depend on the others, and "not yet taken" means "first in rank order among the detections
above the threshold on that box".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

IOU_THRESHOLDS = tuple(t / 100.0 for t in range(50, 100, 5))
RECALL_POINTS = np.arange(0.0, 1.1, 0.1)  # the 11 points, computed as detectron2 does


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """11-point AP: mean over r in {0, 0.1, ..., 1} of max precision at recall >= r (0 if none)."""
    reached = recall[None, :] >= RECALL_POINTS[:, None]  # (11, D)
    best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
    return float(best.sum() / len(RECALL_POINTS))


def paired_iou(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of ``boxes`` (D, 4) with each of ``others`` (D, G, 4), row by row -> (D, G)."""
    a, b = boxes[:, None, :], others
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _as_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


@dataclass(frozen=True)
class _RankedClass:
    """One class's detections in rank order with their best-overlap ground-truth box."""

    overlap: np.ndarray  # (D,) IoU with the best box of the same image (-1 when none)
    box_key: np.ndarray  # (D,) id of that box, unique across images
    box_difficult: np.ndarray  # (D,) whether that box is difficult
    npos: int  # non-difficult ground-truth boxes of the class


def _rank_class(detections: Sequence[Mapping], ground_truths: Sequence[Mapping], label: int) -> _RankedClass:
    det_image, det_score, det_boxes, gt_boxes, gt_hard = [], [], [], [], []
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        keep = _as_numpy(det["labels"]) == label
        det_boxes.append(_as_numpy(det["boxes"]).reshape(-1, 4)[keep])
        det_score.append(_as_numpy(det["scores"])[keep])
        det_image.append(np.full(int(keep.sum()), i, dtype=np.int64))
        mine = _as_numpy(gt["labels"]) == label
        gt_boxes.append(_as_numpy(gt["boxes"]).reshape(-1, 4)[mine])
        gt_hard.append(_as_numpy(gt["difficult"]).astype(bool)[mine])
    order = np.argsort(-np.concatenate(det_score), kind="stable")
    image = np.concatenate(det_image)[order]
    boxes = np.concatenate(det_boxes).astype(np.float64)[order]

    width = max(1, max(len(b) for b in gt_boxes))
    padded = np.zeros((len(gt_boxes), width, 4))
    present = np.zeros((len(gt_boxes), width), dtype=bool)
    hard = np.zeros_like(present)
    for i, (b, d) in enumerate(zip(gt_boxes, gt_hard)):
        padded[i, : len(b)], present[i, : len(b)], hard[i, : len(b)] = b, True, d

    iou = np.where(present[image], paired_iou(boxes, padded[image]), -1.0)  # (D, width)
    best = iou.argmax(axis=1)
    return _RankedClass(
        overlap=iou.max(axis=1, initial=-1.0),
        box_key=image * width + best,
        box_difficult=hard[image, best],
        npos=int((present & ~hard).sum()),
    )


def class_ap(ranked: _RankedClass, threshold: float) -> float:
    """11-point AP of one ranked class at one IoU threshold (NaN when it has no positives)."""
    if ranked.npos == 0:
        return float("nan")
    hit = ranked.overlap > threshold
    first = np.zeros_like(hit)
    _, first_index = np.unique(ranked.box_key[hit], return_index=True)
    first[np.flatnonzero(hit)[first_index]] = True
    tp = (hit & ~ranked.box_difficult & first).astype(np.float64)
    fp = (~hit | (~ranked.box_difficult & ~first)).astype(np.float64)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    recall = tp / ranked.npos
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return voc07_ap(recall, precision)


def evaluate_voc07(
    detections: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    class_names: Sequence[str],
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict:
    """AP, AP50, AP75 (percent), and per class the AP at each threshold, as detectron2's VOC07.

    ``detections[i]``: ``boxes`` (N, 4), ``scores`` (N,), ``labels`` (N,) in 1..K for image i;
    ``ground_truths[i]``: ``boxes``, ``labels`` (1..K), ``difficult``. Same image order.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"got detections for {len(detections)} images but ground truth for {len(ground_truths)}"
        )
    per_class = np.full((len(class_names), len(iou_thresholds)), np.nan)
    for c in range(len(class_names)):
        ranked = _rank_class(detections, ground_truths, c + 1)
        per_class[c] = [class_ap(ranked, t) for t in iou_thresholds]
    if np.isnan(per_class).all():
        raise ValueError("the ground truth holds no non-difficult box of any class; AP is undefined")
    per_class *= 100.0
    by_threshold = np.nanmean(per_class, axis=0)
    result = {
        "AP": float(np.mean(by_threshold)),
        "per_threshold": {f"{t:.2f}": float(v) for t, v in zip(iou_thresholds, by_threshold)},
        "per_class": {name: row.tolist() for name, row in zip(class_names, per_class)},
    }
    for name, t in (("AP50", 0.5), ("AP75", 0.75)):
        if t in iou_thresholds:
            result[name] = float(by_threshold[list(iou_thresholds).index(t)])
    return result
