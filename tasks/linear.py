"""Linear probes on frozen features: InvP's per-block probe and Goyal/VISSL's multi-layer heads
(docs/protocols.md §Linear probes, §Places205 linear), on ImageNet, Places205 and the mini profile's Fashion-MNIST.

Protocol as run here: ``features: online`` (the default) trains every head in one pass per
batch through the frozen trunk on the protocol's augmented images, as the anchors do;
``features: cached`` trains on features extracted once with the evaluation transform (cheap;
the mini profile's ``linear``, whose committed results are made so). A held-out part of train
selects (lr, head, epoch); the test split is reported at that selection. The anchors' "best on the val set"
(max over heads and epochs of the test number) is reported as ``top1_best_on_test``; with
``layers: blocks`` the official script's own view (its scores taken before each epoch, heads
14-17) as ``top1_official_view``. Both are labelled secondary numbers, never the selection.

The InvP heads train with their BatchNorm in eval mode (``head_bn: frozen_stats``, as
``linear_classification.py`` calls ``network.eval()`` in ``train()``); the VISSL/Goyal heads
normalise with batch statistics (``batch_stats``).

Online, a job runs one process per GPU of its request (tasks/probe.py shards every batch over
the ranks); cached, one process.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from benchmark.core.fields import AnyOf, Bool, Choice, Float, Int, ListOf, Name
from tasks.base import EVERY_GPU, Measurement, Task, TaskContext, register
from tasks.common import FEATURE_MODES, as_tuple, num_classes, task_settings
from tasks.features import GRIDS, LAYERS, resolve_layers
from tasks.probe import HEAD_BN_MODES, HEAD_INITS, PROBE_NORMS, ProbeSchedule, train_heads
from tasks.probe_inputs import HOLDOUT, TEST, probe_source

INVP_GRIDS = {"stem": 12, "layer1": 6, "layer2": 4, "layer3": 3, "layer4": 1}
INVP_DEFAULTS: dict[str, Any] = {
    "dataset": "imagenet",
    "layers": "blocks",
    "grids": INVP_GRIDS,
    "epochs": 120,
    "lr": 1.0,
    "batch_size": 256,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "nesterov": False,
    "milestones": [50, 80, 100],
    "gamma": 0.1,
    "norm": "bn",
    "head_bn": "frozen_stats",  # linear_classification.py trains in network.eval()
    "head_init": "normal_std_0.01",  # models/LinearModelMulti.py
    "holdout": 10000,
    "split_seed": 0,
    "train_split": "train",
    "train_limit": 0,  # > 0: class-balanced draw of that many train images (seed 0)
    "test_split": "val",
    "features": "online",  # online: the frozen trunk on augmented batches; cached: feature cache
}
PROBE_FIELDS = {
    "dataset": Name(),
    "layers": LAYERS,
    "grids": GRIDS,
    "epochs": Int(ge=1),
    "lr": AnyOf(Float(gt=0), ListOf(Float(gt=0), min_len=1)),  # a list: one probe run per lr
    "batch_size": Int(ge=1),
    "momentum": Float(ge=0, lt=1),
    "weight_decay": Float(ge=0),
    "nesterov": Bool(),
    "milestones": ListOf(Int(ge=1)),
    "gamma": Float(gt=0),
    "norm": Choice(PROBE_NORMS),
    "head_bn": Choice(HEAD_BN_MODES),
    "head_init": Choice(HEAD_INITS),
    "holdout": Int(ge=1),
    "split_seed": Int(ge=0),
    "train_split": Name(),
    "train_limit": Int(ge=0),
    "test_split": Name(),
    "features": Choice(FEATURE_MODES),
}
# conv1 of the table is the 112x112 map before max-pooling; the backbone contract exposes the
# stem after max-pooling (56x56), so conv1 is pooled adaptively to the table's 12x12 grid.
GOYAL_LAYERS = [
    "stem@12",
    "layer1.2@16/8/0",
    "layer2.3@13/5/0",
    "layer3.5@8/3/0",
    "layer4.2@6/1/0",
    "pooled",
]


class LinearProbeTask(Task):
    """Heads on several frozen layers; select (lr, head, epoch) on held-out train."""

    metrics = ("top1", "top5")
    resource_kind = "online_probe"  # the default features: online; cached_features when cached
    defaults: ClassVar[dict[str, Any]] = INVP_DEFAULTS
    settings_fields = PROBE_FIELDS

    @classmethod
    def resource_kind_for(cls, settings: Mapping[str, Any]) -> str:
        """``online_probe`` (the trunk runs every epoch: the node's GPUs) or ``cached_features``."""
        return "online_probe" if {**cls.defaults, **settings}["features"] == "online" else "cached_features"

    @classmethod
    def max_processes_for(cls, settings: Mapping[str, Any]) -> int:
        """Online: one process per GPU of the job (``train_heads`` shards every batch over the
        ranks); cached: one (the feature cache is extracted by one process)."""
        return EVERY_GPU if cls.resource_kind_for(settings) == "online_probe" else 1

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        dataset = s["dataset"]
        backbone = ctx.encoder.load(ctx.device)
        layers = resolve_layers(s["layers"], backbone, dict(s["grids"]), ctx.encoder.kind)
        names = [layer.name for layer in layers]
        lrs = as_tuple(s["lr"])
        source = probe_source(ctx, s, layers, backbone)
        progress = ctx.progress("probe", {"settings": s})
        run = train_heads(source, num_classes(dataset), self._schedule(s, float(lrs[0])),
                          [float(lr) for lr in lrs], ctx.device, ctx.seed, progress)
        # (lrs, epochs, heads, 2) after epochs 1..E; the test scores also before training
        holdout, test_scores = run.scores[HOLDOUT][:, 1:], run.scores[TEST]
        out = self._measurements(dataset, s, names, lrs, holdout, test_scores[:, 1:])
        if s["layers"] == "blocks":
            out.append(official_view(dataset, s["test_split"], names, lrs, test_scores))
        return out

    @staticmethod
    def _schedule(s: dict[str, Any], lr: float) -> ProbeSchedule:
        return ProbeSchedule(
            epochs=int(s["epochs"]),
            lr=lr,
            batch_size=int(s["batch_size"]),
            momentum=float(s["momentum"]),
            weight_decay=float(s["weight_decay"]),
            nesterov=bool(s["nesterov"]),
            milestones=tuple(int(m) for m in s["milestones"]),
            gamma=float(s["gamma"]),
            norm=str(s["norm"]),
            head_bn=str(s["head_bn"]),
            head_init=str(s["head_init"]),
        )

    def _measurements(
        self,
        dataset: str,
        s: dict[str, Any],
        names: list[str],
        lrs: tuple[Any, ...],
        holdout: torch.Tensor,
        test_acc: torch.Tensor,
    ) -> list[Measurement]:
        split = s["test_split"]
        lr_i, epoch, head = _argmax3(holdout[..., 0])
        chosen = {
            "layer": names[head],
            "epoch": epoch + 1,
            "lr": float(lrs[lr_i]),
            "holdout_top1": holdout[lr_i, epoch, head, 0].item(),
            "selection": f"(lr, layer, epoch) by top-1 on {int(s['holdout'])} held-out train images",
        }
        out = [
            Measurement("top1", test_acc[lr_i, epoch, head, 0].item(), dataset, split, chosen),
            Measurement("top5", test_acc[lr_i, epoch, head, 1].item(), dataset, split, chosen),
            Measurement("top1", chosen["holdout_top1"], dataset, "holdout", chosen),
        ]
        for h, name in enumerate(names):
            li, ep, _ = _argmax3(holdout[:, :, h : h + 1, 0])
            out.append(
                Measurement(
                    f"top1@{name}",
                    test_acc[li, ep, h, 0].item(),
                    dataset,
                    split,
                    {"epoch": ep + 1, "lr": float(lrs[li]), "selection": "held-out train"},
                )
            )
        best = _argmax3(test_acc[..., 0])
        out.append(
            Measurement(
                "top1_best_on_test",
                test_acc[best + (0,)].item(),
                dataset,
                split,
                {
                    "label": "best on val set: max over lr, layer and epoch of the test number, "
                    "as the anchors report it (test used for selection)",
                    "layer": names[best[2]],
                    "epoch": best[1] + 1,
                },
            )
        )
        return out


OFFICIAL_VIEW_HEADS = 4  # linear_classification.py scores and prints heads 14-17 of 17 only


def official_view(
    dataset: str, split: str, names: list[str], lrs: tuple[Any, ...], test_scores: torch.Tensor
) -> Measurement:
    """``top1_official_view``: the number linear_classification.py shows. It scores the test
    split *before* each epoch (after 0..E-1 epochs, so never after the last) and only its heads
    14-17 (here the last four heads); the best of those is read off (test used for selection).
    ``test_scores`` is (lrs, epochs + 1, heads, 2), row e after e epochs."""
    first = max(len(names) - OFFICIAL_VIEW_HEADS, 0)
    lr_i, epoch, head = _argmax3(test_scores[:, :-1, first:, 0])
    return Measurement(
        "top1_official_view",
        test_scores[lr_i, epoch, first + head, 0].item(),
        dataset,
        split,
        {
            "label": "official view: best top-1 on the test split over the scores taken before "
            f"each epoch and the last {OFFICIAL_VIEW_HEADS} heads (InvP's heads 14-17), as "
            "linear_classification.py prints them (test used for selection)",
            "layer": names[first + head],
            "head": first + head + 1,
            "epochs_trained": epoch,
            "lr": float(lrs[lr_i]),
        },
    )


def _argmax3(values: torch.Tensor) -> tuple[int, int, int]:
    """Index (i, j, k) of the first maximum of a 3-d tensor."""
    flat = int(values.flatten().argmax())
    i, rest = divmod(flat, values.shape[1] * values.shape[2])
    j, k = divmod(rest, values.shape[2])
    return i, j, k


@register
class LinearTask(LinearProbeTask):
    name = "linear"
    summary = "InvP per-block linear probe (BN + linear on every block), ImageNet top-1"
    paper_table = "Table 1"
    paper_column = "ImageNet"
    protocol = "InvP 17-block probe (docs/protocols.md §InvP 17-block probe): grid-pooled blocks, BN1d+linear, SGD lr 1.0, 120 ep"


@register
class LinearMultilayerTask(LinearProbeTask):
    name = "linear_multilayer"
    summary = "Goyal/VISSL multi-layer probe (conv1, res2-res5, res5avg), ImageNet top-1"
    paper_table = "Table 1"
    paper_column = "ImageNet"
    protocol = "Goyal/VISSL (docs/protocols.md §Goyal VISSL multi-layer probe): fixed AvgPool per layer, BN(no affine)+linear, 28 ep"
    defaults = {
        **INVP_DEFAULTS,
        "layers": GOYAL_LAYERS,
        "epochs": 28,
        "lr": 0.01,
        "weight_decay": 5e-4,
        "nesterov": True,
        "milestones": [8, 16, 24],
        "norm": "bn_noaffine",
        "head_bn": "batch_stats",
    }


@register
class Places205LinearTask(LinearProbeTask):
    name = "places205_linear"
    summary = "InvP per-block linear probe on Places205 (205 classes)"
    paper_table = "Table 1"
    paper_column = "Places205"
    protocol = "InvP 17-block probe (docs/protocols.md §Places205 linear) with the script's defaults (paper states none)"
    defaults = {**INVP_DEFAULTS, "dataset": "places205"}


@register
class Places205MultilayerTask(LinearProbeTask):
    name = "places205_linear_multilayer"
    summary = "VISSL multi-layer probe on Places205 (conv1, res2-res5)"
    paper_table = "Table 1"
    paper_column = "Places205"
    protocol = "VISSL Places205 (docs/protocols.md §Places205 linear): 5 heads, 14 ep, steps 4/8/12, lr 0.01, wd 5e-4, nesterov"
    defaults = {
        **LinearMultilayerTask.defaults,
        "dataset": "places205",
        "layers": GOYAL_LAYERS[:-1],
        "epochs": 14,
        "milestones": [4, 8, 12],
    }
