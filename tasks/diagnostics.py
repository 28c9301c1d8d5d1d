"""Representation diagnostics on the held-out split: what the accuracy numbers do not show.

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

import math
from typing import Any, ClassVar

import torch

from benchmark.core.fields import Float, Int, Name, Nullable
from benchmark.data.augment import train_transform
from tasks.base import Measurement, Task, TaskContext, register
from tasks.common import limited_split, task_settings
from tasks.features import EMBEDDING, LAYER, context_features, extract_features, resolve_layers

RANKME_EPS = 1e-7  # Garrido et al.'s epsilon added to the normalised singular values


def alignment(z1: torch.Tensor, z2: torch.Tensor) -> float:
    """Mean squared distance between the normalised views ``z1[i]`` and ``z2[i]`` (alpha = 2)."""
    return float((z1 - z2).pow(2).sum(dim=1).mean())


def uniformity(z: torch.Tensor, t: float = 2.0) -> float:
    """log mean over pairs i < j of exp(-t ||z_i - z_j||²) of normalised rows ``z``."""
    return float(torch.pdist(z.double()).pow(2).mul(-t).exp().mean().log())


def effective_rank(features: torch.Tensor) -> float:
    """RankMe: exp of the entropy of the singular values of ``features`` (N, D), normalised."""
    singular = torch.linalg.svdvals(features.double())
    p = singular / singular.sum() + RANKME_EPS
    return float(torch.exp(-(p * p.log()).sum()))


def _off_diagonal_cosines(z: torch.Tensor) -> torch.Tensor:
    """(N, N) cosine similarities of normalised rows, the diagonal set to NaN."""
    cos = z.double() @ z.double().T
    return cos.fill_diagonal_(math.nan)


def mean_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity over ordered pairs i != j of normalised rows ``z``."""
    return float(_off_diagonal_cosines(z).nanmean())


def neighbour_similarities(z: torch.Tensor, labels: torch.Tensor, neighbours: int) -> tuple[float, float]:
    """Mean cosine of each row to its ``neighbours`` nearest same-class rows and to its nearest
    different-class rows (rows without enough of either are left out of that mean)."""
    cos = _off_diagonal_cosines(z)
    same = labels.view(-1, 1) == labels.view(1, -1)
    out = []
    for mask in (same, ~same):
        masked = torch.where(mask & ~cos.isnan(), cos, -math.inf)
        top = masked.topk(min(neighbours, len(z) - 1), dim=1).values
        full = torch.isfinite(top).all(dim=1)
        out.append(float(top[full].mean()) if full.any() else math.nan)
    return out[0], out[1]


def is_collapsed(cosine: float, rank: float, collapse_cosine: float, collapse_rank: float) -> bool:
    """The collapse rule: a narrow cone (mean cosine at or above ``collapse_cosine``) or about
    ``collapse_rank`` directions or fewer (RankMe)."""
    return cosine >= collapse_cosine or rank <= collapse_rank


def diagnose(features: torch.Tensor, labels: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor,
             neighbours: int) -> dict[str, float]:
    """Every diagnostic but the collapse flag, from eval ``features`` (N, D) with ``labels`` and
    two augmented views (M, D) of M images."""
    z = torch.nn.functional.normalize(features.double(), dim=1)
    same, different = neighbour_similarities(z, labels, neighbours)
    return {
        "alignment": alignment(torch.nn.functional.normalize(view1.double(), dim=1),
                               torch.nn.functional.normalize(view2.double(), dim=1)),
        "uniformity": uniformity(z),
        "rankme": effective_rank(features),
        "mean_cosine": mean_cosine(z),
        "nn_same_class_sim": same,
        "nn_diff_class_sim": different,
    }


@register
class DiagnosticsTask(Task):
    """Alignment, uniformity, RankMe, mean cosine and nearest-neighbour similarities on the
    held-out split, with a collapse flag."""

    name = "diagnostics"
    resource_kind = "cached_features"
    summary = "representation diagnostics on the held-out split: alignment, uniformity, RankMe, cosines, collapse"
    metrics = ("alignment", "uniformity", "rankme", "mean_cosine", "nn_same_class_sim",
               "nn_diff_class_sim", "collapsed")
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
        (view1,), _ = extract_features(backbone, draw, [layer], ctx.device, head=head)
        (view2,), _ = extract_features(backbone, draw, [layer], ctx.device, head=head)
        values = diagnose(feats[layer.name].float(), labels, view1, view2, int(s["neighbours"]))
        collapse = {"collapse_cosine": float(s["collapse_cosine"]), "collapse_rank": float(s["collapse_rank"])}
        values["collapsed"] = float(is_collapsed(values["mean_cosine"], values["rankme"], **collapse))
        extra = {"layer": layer.name, "images": len(labels), "align_images": len(view1),
                 "augment": recipe, "neighbours": int(s["neighbours"]), **collapse}
        return [Measurement(metric, values[metric], dataset, split, extra) for metric in self.metrics]
