"""Weighted kNN classification on frozen features (InsDis/InvP monitor protocol, docs/protocols.md §kNN classification).

By default on the L2-normalised embedding (the projection head's output) with k = 200 and
sigma = 0.07, as InvP's ``main.py::kNN`` does; ``layer: pooled`` (or a block) classifies the
backbone's features instead. The layer is in each record's ``extra`` and in the report's column.
"""
from __future__ import annotations

from typing import Any, ClassVar

from benchmark.core.fields import Float, Int, Name
from tasks.base import Measurement, Task, TaskContext, register
from tasks.common import num_classes, task_settings
from tasks.features import EMBEDDING, LAYER, context_features, resolve_layers
from tasks.knn_classifier import weighted_knn_scores
from tasks.metrics import topk_accuracy


@register
class KNNTask(Task):
    """Train features = clean (eval-transform) features of the train split; vote on test."""

    name = "knn"
    resource_kind = "cached_features"  # frozen features of train and test, cached
    summary = "weighted kNN (k=200, sigma=0.07) on the frozen embedding (or backbone features), top-1/top-5"
    metrics = ("top1", "top5")
    label_setting = "layer"
    protocol = "InsDis weighted kNN: cosine similarity, k nearest vote with exp(s/sigma)"
    defaults: ClassVar[dict[str, Any]] = {
        "dataset": None,
        "k": 200,
        "sigma": 0.07,
        "layer": EMBEDDING,
        "train_split": "train",
        "train_limit": 0,  # > 0: class-balanced draw of that many train images (seed 0)
        "test_split": "test",
    }
    settings_fields = {
        "dataset": Name(),
        "k": Int(ge=1),
        "sigma": Float(gt=0),
        "layer": LAYER,
        "train_split": Name(),
        "train_limit": Int(ge=0),
        "test_split": Name(),
    }

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        dataset = s["dataset"]
        backbone = ctx.encoder.load(ctx.device)
        (layer,) = resolve_layers(s["layer"], backbone, {}, ctx.encoder.kind)
        head = ctx.encoder.load_head(backbone, ctx.device) if layer.embedding else None
        train, train_y = context_features(
            ctx, s, dataset, s["train_split"], [layer], backbone, int(s["train_limit"]), head
        )
        test, test_y = context_features(ctx, s, dataset, s["test_split"], [layer], backbone, head=head)
        scores = weighted_knn_scores(
            train[layer.name].to(ctx.device),
            train_y.to(ctx.device),
            test[layer.name].to(ctx.device),
            num_classes(dataset),
            k=int(s["k"]),
            sigma=float(s["sigma"]),
        )
        extra = {"k": int(s["k"]), "sigma": float(s["sigma"]), "layer": layer.name}
        return [
            Measurement(metric, topk_accuracy(scores, test_y, k), dataset, s["test_split"], extra)
            for metric, k in (("top1", 1), ("top5", 5))
        ]
