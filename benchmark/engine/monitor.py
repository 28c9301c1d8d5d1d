"""The pretraining monitor: weighted kNN top-1 on a held-out part of the train split, with clean
features (test transform) recomputed every time, never the memory bank (docs/protocols.md §kNN classification, §Model selection)."""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tasks.knn_classifier import topk_accuracy, weighted_knn_scores


def monitor_due(monitor_cfg: Mapping[str, Any], epoch: int, epochs: int) -> bool:
    """Whether the monitor runs after ``epoch`` of ``epochs``: every ``pretrain.monitor.every``
    epochs and after the last one (``every`` 0: never)."""
    every = int(monitor_cfg["every"])
    return every > 0 and (epoch % every == 0 or epoch == epochs)


@contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode; restore each one's mode afterwards."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


@torch.no_grad()
def extract(backbone: nn.Module, head: nn.Module, dataset: Dataset, device: torch.device,
            autocast: Callable[[], AbstractContextManager], batch_size: int = 256,
            channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features and head embeddings (both float32, on ``device``) of ``dataset``."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    features, embeddings = [], []
    for images, _ in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            feat = backbone(images)
            emb = head(feat)
        features.append(feat.float())
        embeddings.append(emb.float())
    return torch.cat(features), torch.cat(embeddings)


def knn_monitor(backbone: nn.Module, head: nn.Module, train: Dataset, train_labels: torch.Tensor,
                holdout: Dataset, holdout_labels: torch.Tensor, num_classes: int,
                k: int, sigma: float, device: torch.device, autocast: Callable[[], AbstractContextManager],
                channels_last: bool = False) -> dict[str, float]:
    """kNN top-1 of the held-out images against the pretraining images, on the normalised head
    embedding (``knn_top1``, the InsDis/InvP protocol) and on backbone features
    (``knn_top1_backbone``). The modules are put in eval mode and restored afterwards."""
    with evaluating(backbone, head):
        train_feat, train_emb = extract(backbone, head, train, device, autocast, channels_last=channels_last)
        test_feat, test_emb = extract(backbone, head, holdout, device, autocast, channels_last=channels_last)
    results = {}
    for name, tr, te in (("knn_top1", train_emb, test_emb), ("knn_top1_backbone", train_feat, test_feat)):
        scores = weighted_knn_scores(F.normalize(tr), train_labels.to(device), F.normalize(te),
                                     num_classes, k=k, sigma=sigma)
        results[name] = topk_accuracy(scores, holdout_labels.to(device))
    return results
