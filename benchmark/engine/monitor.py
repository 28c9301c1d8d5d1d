"""The pretraining monitor: weighted kNN top-1 on a held-out part of the train split, with clean
features (test transform) recomputed every time, never the memory bank (docs/protocols.md §kNN
classification, §Model selection), and the representation diagnostics of the held-out embeddings
(docs/protocols.md §Representation diagnostics) with the ``diagnostics`` task's default settings.

The diagnostics draw nothing from the global RNG (their augmented views are seeded per image by
:class:`SeededAugmentation`, their loader has its own generator), so they leave the training
unchanged; the kNN passes keep their loaders' usual draws, as the committed encoders were trained."""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.engine.data import SeededAugmentation
from tasks.diagnostic_measures import diagnose
from tasks.diagnostics import DiagnosticsTask
from tasks.knn_classifier import topk_accuracy, weighted_knn_scores

DIAGNOSTIC_DEFAULTS = DiagnosticsTask.defaults  # limit, align_images, neighbours, collapse thresholds


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
            channels_last: bool = False, generator: torch.Generator | None = None,
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features and head embeddings (both float32, on ``device``) of ``dataset``;
    ``generator``: the loader's (None: it draws its seeds from the global RNG)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, generator=generator)
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
                channels_last: bool = False, augmented: SeededAugmentation | None = None) -> dict[str, float]:
    """kNN top-1 of the held-out images against the pretraining images, on the normalised head
    embedding (``knn_top1``, the InsDis/InvP protocol) and on backbone features
    (``knn_top1_backbone``); with ``augmented`` (the held-out images with the pretraining
    augmentation) also the diagnostics of the held-out embeddings (:func:`embedding_diagnostics`).
    The modules are put in eval mode and restored afterwards."""
    with evaluating(backbone, head):
        train_feat, train_emb = extract(backbone, head, train, device, autocast, channels_last=channels_last)
        test_feat, test_emb = extract(backbone, head, holdout, device, autocast, channels_last=channels_last)
        results = ({} if augmented is None else
                   embedding_diagnostics(backbone, head, test_emb, holdout_labels, augmented, device, autocast,
                                         channels_last))
    for name, tr, te in (("knn_top1", train_emb, test_emb), ("knn_top1_backbone", train_feat, test_feat)):
        scores = weighted_knn_scores(F.normalize(tr), train_labels.to(device), F.normalize(te),
                                     num_classes, k=k, sigma=sigma)
        results[name] = topk_accuracy(scores, holdout_labels.to(device))
    return results


def embedding_diagnostics(backbone: nn.Module, head: nn.Module, embeddings: torch.Tensor, labels: torch.Tensor,
                          augmented: SeededAugmentation, device: torch.device,
                          autocast: Callable[[], AbstractContextManager], channels_last: bool = False,
                          ) -> dict[str, float]:
    """The ``diagnostics`` task's metrics (tasks/diagnostic_measures.py) of the first ``limit``
    held-out head ``embeddings`` (the held-out draw is random and class-blind); alignment from two
    augmented views (view seeds 0 and 1: the same draws at every monitor epoch) of the first
    ``align_images`` held-out images."""
    draw = Subset(augmented, range(min(int(DIAGNOSTIC_DEFAULTS["align_images"]), len(augmented))))
    views = []
    for view in (0, 1):
        augmented.epoch = view
        views.append(extract(backbone, head, draw, device, autocast, channels_last=channels_last,
                             generator=torch.Generator())[1].cpu())
    limit = int(DIAGNOSTIC_DEFAULTS["limit"])
    return diagnose(embeddings[:limit].cpu(), labels[:limit].cpu(), views[0], views[1],
                    int(DIAGNOSTIC_DEFAULTS["neighbours"]), float(DIAGNOSTIC_DEFAULTS["collapse_cosine"]),
                    float(DIAGNOSTIC_DEFAULTS["collapse_rank"]))
