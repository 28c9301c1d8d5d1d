"""Classification metrics of docs/protocols.md §Metrics, implemented exactly as the anchors define them.

top-1/top-5 come from ``tasks.knn_classifier.topk_accuracy`` (one implementation for the
whole suite). Multi-label targets use the raw VOC values: +1 present, -1 absent, 0 difficult.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve

from tasks.knn_classifier import topk_accuracy

__all__ = [
    "topk_accuracy",
    "mean_per_class_accuracy",
    "voc11_ap",
    "pr_curve11_ap",
    "voc_area_ap",
    "sklearn_ap",
    "mean_ap",
]


def mean_per_class_accuracy(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """Mean over classes present in ``labels`` of (correct in class / images in class)."""
    labels = labels.to(scores.device).long()
    correct = (scores.argmax(dim=1) == labels).float()
    per_class_hits = torch.zeros(num_classes, device=scores.device).scatter_add_(0, labels, correct)
    per_class_count = torch.bincount(labels, minlength=num_classes).float()
    present = per_class_count > 0
    return (per_class_hits[present] / per_class_count[present]).mean().item()


def _precision_recall(scores: np.ndarray, positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    tp = np.cumsum(hits)
    fp = np.cumsum(1.0 - hits)
    recall = tp / max(positives.sum(), 1)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return precision, recall


def _eleven_point(precision: np.ndarray, recall: np.ndarray) -> float:
    """Mean over t in {0, 0.1, ..., 1} of the highest precision at recall >= t (0 if none)."""
    thresholds = np.linspace(0.0, 1.0, 11)
    reached = recall[None, :] >= thresholds[:, None]
    return float(np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0).mean())


def voc11_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """VOC2007 devkit 11-point AP over the ranks (ties in stable order): the t = 0 term is the
    best precision at any rank, below 1 when the top-scored image is a negative."""
    return _eleven_point(*_precision_recall(np.asarray(scores), np.asarray(positives, dtype=bool)))


def pr_curve11_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """11-point AP on scikit-learn's ``precision_recall_curve`` (the transfer protocol of
    Kornblith et al., SimCLR, ssl-transfer): one point per distinct score (tied scores are one
    point) plus (recall 0, precision 1), so the t = 0 term is always 1."""
    precision, recall, _ = precision_recall_curve(np.asarray(positives, dtype=int), np.asarray(scores))
    return _eleven_point(precision, recall)


def voc_area_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """VOC2010+ AP: area under the precision envelope made monotone from the right."""
    precision, recall = _precision_recall(np.asarray(scores), np.asarray(positives, dtype=bool))
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]).sum())


def sklearn_ap(scores: np.ndarray, positives: np.ndarray) -> float:
    """sklearn's step-wise ``average_precision_score`` (InvP ``voc_linear.py``, CV scoring)."""
    return float(average_precision_score(np.asarray(positives, dtype=int), np.asarray(scores)))


def mean_ap(
    scores: np.ndarray | torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    ap: Callable[[np.ndarray, np.ndarray], float],
    difficult: str = "exclude",
) -> tuple[float, list[float]]:
    """Mean over classes of ``ap`` and the per-class values.

    ``targets`` (N, C) holds VOC values (+1 present, -1 absent, 0 difficult); ``difficult`` is
    ``exclude`` (drop those images for that class: VISSL, InvP) or ``negative`` (count them as
    absent: SimCLR/ssl-transfer).
    """
    if difficult not in ("exclude", "negative"):
        raise ValueError(f"difficult must be 'exclude' or 'negative', not {difficult!r}")
    scores = np.asarray(torch.as_tensor(scores).double())
    targets = np.asarray(torch.as_tensor(targets))
    per_class = []
    for c in range(targets.shape[1]):
        keep = targets[:, c] != 0 if difficult == "exclude" else np.ones(len(targets), bool)
        per_class.append(ap(scores[keep, c], targets[keep, c] == 1))
    return float(np.mean(per_class)), per_class
