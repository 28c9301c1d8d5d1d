"""Representation diagnostics on the held-out split: what the accuracy numbers do not show
(the maths: tasks/diagnostic_measures.py, shared with the pretraining monitor).

On the L2-normalised features ``z`` of a class-balanced draw of the held-out (test) split:

* ``alignment`` (Wang & Isola, ICML 2020, alpha = 2): mean ||z(v1) - z(v2)||² over two views of
  each image drawn with the pretraining augmentation (``augment``, default ``data.augment``);
  0 = the views coincide, 4 = opposite;
* ``uniformity`` (same paper, t = 2): log of the mean of exp(-2 ||z_i - z_j||²) over pairs;
  -4 would be perfectly spread, 0 = every point at one place;
* ``rankme`` (Garrido et al., ICML 2023): exp of the entropy of the singular values of the
  (unnormalised) feature matrix, normalised to sum 1 (plus 1e-7): 1 = one direction only;
* ``mean_cosine``: mean cosine similarity over pairs i != j (1 = a single point);
* ``nn_same_class_sim`` / ``nn_diff_class_sim``: mean cosine to each image's ``neighbours``
  nearest same-class / different-class images (the InvP paper's §4.3, Fig. 2a);
* ``collapsed``: 1 when ``mean_cosine`` >= ``collapse_cosine`` (the features fill a narrow cone)
  or ``rankme`` <= ``collapse_rank`` (they span about that few directions), else 0; both
  thresholds are in the record's ``extra``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from benchmark.core.fields import Float, Int, Name, Nullable
from benchmark.data.augment import train_transform
from tasks.base import Measurement, Task, TaskContext, register
from tasks.common import limited_split, task_settings
from tasks.diagnostic_measures import DIAGNOSTIC_METRICS, diagnose
from tasks.features import (
    EMBEDDING,
    LAYER,
    context_features,
    feature_batches,
    gather_features,
    resolve_layers,
)


@register
class DiagnosticsTask(Task):
    """Alignment, uniformity, RankMe, mean cosine and nearest-neighbour similarities on the
    held-out split, with a collapse flag."""

    name = "diagnostics"
    resource_kind = "cached_features"
    summary = "representation diagnostics on the held-out split: alignment, uniformity, RankMe, cosines, collapse"
    metrics = DIAGNOSTIC_METRICS
    metric_units = "native"
    label_setting = "layer"
    protocol = ("Wang & Isola 2020 alignment (alpha 2) and uniformity (t 2); Garrido et al. 2023 RankMe; "
                "InvP §4.3 nearest same-/different-class similarity")
    defaults: ClassVar[dict[str, Any]] = {
        "dataset": None,
        "split": "test",
        "layer": EMBEDDING,
        "limit": 2000,  # class-balanced draw of the split (pairwise terms are N x N)
        "align_images": 500,  # images of the draw whose two augmented views give the alignment
        "augment": None,  # None: the pretraining recipe (data.augment)
        "neighbours": 5,
        "collapse_cosine": 0.9,
        "collapse_rank": 2.0,
    }
    settings_fields = {
        "dataset": Name(),
        "split": Name(),
        "layer": LAYER,
        "limit": Int(ge=2),
        "align_images": Int(ge=1),
        "augment": Nullable(Name()),
        "neighbours": Int(ge=1),
        "collapse_cosine": Float(gt=-1, le=1),
        "collapse_rank": Float(ge=0),
    }

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        dataset, split = s["dataset"], s["split"]
        backbone = ctx.encoder.load(ctx.device)
        (layer,) = resolve_layers(s["layer"], backbone, {}, ctx.encoder.kind)
        head = ctx.encoder.load_head(backbone, ctx.device) if layer.embedding else None
        feats, labels = context_features(ctx, s, dataset, split, [layer], backbone, int(s["limit"]), head)
        recipe = s["augment"] if s["augment"] is not None else ctx.config.data["augment"]
        draw = limited_split(ctx, dataset, split, train_transform(recipe), int(s["align_images"]))
        torch.manual_seed(ctx.seed)  # the two passes draw different, reproducible augmentations
        (view1,), _ = gather_features(feature_batches(backbone, draw, [layer], ctx.device, head=head))
        (view2,), _ = gather_features(feature_batches(backbone, draw, [layer], ctx.device, head=head))
        collapse = {"collapse_cosine": float(s["collapse_cosine"]), "collapse_rank": float(s["collapse_rank"])}
        values = diagnose(feats[layer.name].float(), labels, view1, view2, int(s["neighbours"]), **collapse)
        extra = {"layer": layer.name, "images": len(labels), "align_images": len(view1),
                 "augment": recipe, "neighbours": int(s["neighbours"]), **collapse}
        return [Measurement(metric, values[metric], dataset, split, extra) for metric in self.metrics]
