"""Transfer to small classification datasets (docs/protocols.md §Transfer fine-tuning, §Transfer linear probe).

``transfer``: SimCLR/Kornblith fine-tuning. For every (lr, wd) of the grid, fine-tune on the
training part and score the validation part (the creators' val split for VOC07 and Flowers,
otherwise a seeded 20 % of train); retrain on train+val with the best pair; test once. Each
dataset is its own job (``units``); its grid points are saved as they finish and every fine-tune
checkpoints its steps (tasks/progress.py), so a requeued job resumes where it stopped.
``transfer_linear``: L-BFGS multinomial logistic regression on frozen pooled features, C = 1/wd
over a log-spaced wd grid, same split and selection rules (VOC07: one binary logistic per
class). Metrics: top-1 (CIFAR, Cars, digits), mean per-class accuracy (Pets, Caltech101,
Flowers), 11-point mAP with difficult counted as negative (VOC07: the grid selects on the
devkit's ``voc11_map``; the test split records it and ``voc11_map_pr``, the variant on
scikit-learn's PR curve that SimCLR and ssl-transfer report).
"""
from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch.utils.data import ConcatDataset, Dataset, Subset

from benchmark.core.config import ConfigError
from benchmark.core.distributed import broadcast_from_main
from benchmark.core.fields import AnyOf, Choice, Float, Int, ListOf, Section, Tuple
from tasks.base import EVERY_GPU, Measurement, Task, TaskContext, register
from tasks.common import blas_threads, holdout_split, load_split, num_classes, task_settings
from tasks.feature_budget import WorkingCopy
from tasks.features import LAYER, context_features, resolve_layers
from tasks.finetune import RECIPE_FIELDS, FinetuneRecipe, fine_tune, predict, require_trainable
from tasks.metrics import mean_ap, mean_per_class_accuracy, pr_curve11_ap, topk_accuracy, voc11_ap
from tasks.transforms import eval_transform, train_transform

SELECTION_SPLIT = "holdout"  # split name of selection-only scores (never a reported number)


@dataclass(frozen=True)
class TransferSplits:
    """Which splits a dataset trains, validates and tests on, and its metric."""

    train: str
    val: str | None  # creators' validation split; None = hold out part of train
    test: str
    metric: str  # top1 | mean_per_class | voc11_map (selects; voc11_map_pr is reported beside it)


TRANSFER_SPLITS = {
    "cifar10": TransferSplits("train", None, "test", "top1"),
    "cifar100": TransferSplits("train", None, "test", "top1"),
    "voc07_cls": TransferSplits("train", "val", "test", "voc11_map"),
    "caltech101": TransferSplits("train", None, "test", "mean_per_class"),
    "stanford_cars": TransferSplits("train", None, "test", "top1"),
    "oxford_pets": TransferSplits("trainval", None, "test", "mean_per_class"),
    "flowers102": TransferSplits("train", "val", "test", "mean_per_class"),
    "digits": TransferSplits("train", None, "test", "top1"),
    "mini_voc_cls": TransferSplits("trainval", None, "test", "voc11_map"),
}


def transfer_splits(dataset: str) -> TransferSplits:
    """The split/metric rule of a transfer dataset."""
    if dataset not in TRANSFER_SPLITS:
        raise ConfigError(
            f"no transfer protocol for dataset {dataset!r} (tasks.transfer.datasets); known: "
            f"{', '.join(TRANSFER_SPLITS)}"
        )
    return TRANSFER_SPLITS[dataset]


def transfer_scores(
    metric: str, scores: torch.Tensor, targets: torch.Tensor, classes: int
) -> dict[str, float]:
    """The dataset's metric of ``scores`` against ``targets`` (first: the one the grid selects
    on), with its named variants: VOC07's devkit 11-point mAP ``voc11_map`` is followed by the
    11-point mAP on scikit-learn's PR curve ``voc11_map_pr`` that SimCLR/ssl-transfer report
    (docs/protocols.md §Metrics)."""
    if metric == "top1":
        return {metric: topk_accuracy(scores, targets, 1)}
    if metric == "mean_per_class":
        return {metric: mean_per_class_accuracy(scores, targets, classes)}
    if metric == "voc11_map":
        return {metric: mean_ap(scores, targets, voc11_ap, difficult="negative")[0],
                "voc11_map_pr": mean_ap(scores, targets, pr_curve11_ap, difficult="negative")[0]}
    raise ValueError(f"unknown transfer metric {metric!r}")


def reported_measurements(rule: TransferSplits, scores: Mapping[str, float], dataset: str,
                      extra: dict[str, Any]) -> list[Measurement]:
    """The test split's measurements (every variant) and the selected validation score."""
    return [
        *(Measurement(name, value, dataset, rule.test, extra) for name, value in scores.items()),
        Measurement(rule.metric, extra["val"], dataset, SELECTION_SPLIT, extra),
    ]


def _split_parts(ctx: TaskContext, s: dict[str, Any], dataset: str, transform: Any):
    """(fit, val, train+val) datasets under ``transform``."""
    rule = transfer_splits(dataset)
    train = load_split(ctx, dataset, rule.train, transform)
    if rule.val is not None:
        val = load_split(ctx, dataset, rule.val, transform)
        return train, val, ConcatDataset([train, val])
    held = max(1, round(float(s["val_fraction"]) * len(train)))
    fit_idx, val_idx = holdout_split(len(train), held, int(s["split_seed"]))
    return Subset(train, fit_idx.tolist()), Subset(train, val_idx.tolist()), train


def _common_defaults() -> dict[str, Any]:
    return {
        "datasets": list(TRANSFER_SPLITS)[:7],
        "val_fraction": 0.2,
        "split_seed": 0,
    }


COMMON_TRANSFER_FIELDS = {
    "datasets": ListOf(Choice(tuple(TRANSFER_SPLITS)), min_len=1),
    "val_fraction": Float(gt=0, lt=1),
    "split_seed": Int(ge=0),
}


class TransferTaskBase(Task):
    """Shared settings handling of both transfer variants."""

    paper_table = "Table 3"
    paper_column = "CIFAR10 / CIFAR100 / VOC07 / Caltech101 / Cars / Pets / Flowers"
    metrics = ("top1", "mean_per_class", "voc11_map", "voc11_map_pr")
    defaults: ClassVar[dict[str, Any]] = _common_defaults()
    settings_fields = COMMON_TRANSFER_FIELDS

    @classmethod
    def datasets(cls, settings: Mapping[str, Any]) -> tuple[str, ...]:
        return tuple({**cls.defaults, **dict(settings)}["datasets"])

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        return [m for dataset in s["datasets"] for m in self.run_dataset(ctx, s, dataset)]

    @abstractmethod
    def run_dataset(self, ctx: TaskContext, s: dict[str, Any], dataset: str) -> list[Measurement]:
        """Measurements of one transfer dataset."""


@register
class TransferFinetuneTask(TransferTaskBase):
    name = "transfer"
    resource_kind = "finetune"
    max_processes = EVERY_GPU  # fine_tune shards every batch over the job's GPUs (DDP)
    fine_tunes = True
    summary = "fine-tune to 7 datasets with the (lr, wd) grid, select on val, retrain, test once"
    protocol = "SimCLR/Kornblith fine-tune (docs/protocols.md §Transfer fine-tuning): lr x wd grid, wd/lr, retrain on train+val"
    defaults = {
        **_common_defaults(),
        "lrs": [1e-4, 1e-3, 1e-2, 1e-1],
        "weight_decays": [0.0, 1e-6, 1e-5, 1e-4, 1e-3],
        "weight_decay_over_lr": True,
        "steps": 5000,
        "batch_size": 64,
        "nesterov": True,
        "schedule": "cosine",
    }
    settings_fields = {
        **RECIPE_FIELDS,
        **COMMON_TRANSFER_FIELDS,
        "lrs": ListOf(Float(gt=0), min_len=1),
        "weight_decays": ListOf(Float(ge=0), min_len=1),
    }

    @classmethod
    def units(cls, settings: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One job per dataset (``transfer:<dataset>``): a dataset's grid is a day's work."""
        return [(f":{name}", {"datasets": [name]}) for name in settings["datasets"]]

    def run_dataset(self, ctx: TaskContext, s: dict[str, Any], dataset: str) -> list[Measurement]:
        require_trainable(ctx.encoder.load("cpu"), ctx.encoder.kind)
        rule, classes = transfer_splits(dataset), num_classes(dataset)
        loss = "bce" if rule.metric == "voc11_map" else "ce"
        fit_aug, _, all_aug = _split_parts(ctx, s, dataset, train_transform(dataset, s))
        _, val_eval, _ = _split_parts(ctx, s, dataset, eval_transform(dataset, s))
        test = load_split(ctx, dataset, rule.test, eval_transform(dataset, s))

        grid = [(float(lr), float(wd)) for lr in s["lrs"] for wd in s["weight_decays"]]
        workers = int(ctx.config.data["num_workers"])  # the job's CPUs less one (job_request)
        # the finished grid points' validation scores and the retrained model's test scores (every
        # variant of the metric), saved as each finishes: a resumed job skips what is done
        grid_state = ctx.progress(f"{dataset}-grid", {"settings": s, "dataset": dataset,
                                                      "test_scores": "variants"})
        done = grid_state.load() or {"val_scores": [], "test": None}

        def train_and_score(train_set: Dataset, eval_set: Dataset, lr: float, wd: float,
                            part: str, record: Callable[[dict[str, float]], None]) -> None:
            """Fine-tune at (lr, wd), checkpointed as ``part``; ``record`` its metric's variants
            on ``eval_set`` and save the grid's state."""
            recipe = FinetuneRecipe.from_settings(s, lr=lr, weight_decay=wd, loss=loss)
            fit = ctx.progress(f"{dataset}-{part}", {"settings": s, "dataset": dataset,
                                                      "lr": lr, "weight_decay": wd})
            model = fine_tune(ctx.encoder.load(ctx.device), classes, train_set, recipe,
                              ctx.device, ctx.seed, num_workers=workers, progress=fit)
            scores = transfer_scores(rule.metric, *predict(model, eval_set, ctx.device,
                                                           num_workers=workers), classes)
            # every rank chooses alike: rank 0's scores
            record({name: float(broadcast_from_main(float(value), ctx.device))
                    for name, value in scores.items()})
            grid_state.save(done)
            fit.discard()

        val_scores: list[float] = done["val_scores"]
        for index in range(len(val_scores), len(grid)):
            train_and_score(fit_aug, val_eval, *grid[index], f"point{index}",
                            lambda scores: val_scores.append(scores[rule.metric]))
        best = int(np.argmax(val_scores))
        lr, wd = grid[best]
        if done["test"] is None:
            train_and_score(all_aug, test, lr, wd, "test", lambda scores: done.update(test=scores))
        extra = {"lr": lr, "weight_decay": wd, "val": val_scores[best], "grid_size": len(grid),
                 "val_split": rule.val or f"{float(s['val_fraction']):g} of {rule.train}",
                 "selection": "best val score; retrained on train+val; test scored once"}
        return reported_measurements(rule, done["test"], dataset, extra)


# C = 1/wd: positive weight decays, or {logspace: [start exponent, stop exponent, count]}
WEIGHT_DECAY_GRID = AnyOf(ListOf(Float(gt=0), min_len=1),
                          Section({"logspace": Tuple(Float(), Float(), Int(ge=1))},
                                  required=("logspace",)))


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int) -> LogisticRegression:
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)
    return model.fit(x, y)


def logistic_scores(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, c: float, multilabel: bool,
    max_iter: int,
) -> torch.Tensor:
    """Decision scores (N_test, classes) of L-BFGS logistic regression; multi-label targets (VOC
    values) get one binary model per class with difficult counted as negative."""
    if not multilabel:
        model = _fit_logistic(train_x, train_y, c, max_iter)
        full = np.full((len(test_x), int(train_y.max()) + 1), -np.inf)
        full[:, model.classes_] = model.decision_function(test_x).reshape(len(test_x), -1)
        return torch.from_numpy(full)
    columns = [
        _fit_logistic(train_x, train_y[:, k] == 1, c, max_iter).decision_function(test_x)
        for k in range(train_y.shape[1])
    ]
    return torch.from_numpy(np.stack(columns, axis=1))


@register
class TransferLinearTask(TransferTaskBase):
    name = "transfer_linear"
    resource_kind = "cached_features"
    paper_table = None  # SimCLR's Table B.5 protocol; the InvP paper prints no linear transfer
    paper_column = None
    summary = "L-BFGS logistic regression on frozen features of the 7 transfer datasets"
    protocol = "SimCLR B.8.1 / ssl-transfer linear.py (docs/protocols.md §Transfer linear probe): C = 1/wd, 45 wd in [1e-6, 1e5]"
    defaults = {
        **_common_defaults(),
        "weight_decays": {"logspace": [-6, 5, 45]},
        "layer": "pooled",
        "max_iter": 1000,
    }
    settings_fields = {
        **COMMON_TRANSFER_FIELDS,
        "weight_decays": WEIGHT_DECAY_GRID,
        "layer": LAYER,
        "max_iter": Int(ge=1),
    }

    def run_dataset(self, ctx: TaskContext, s: dict[str, Any], dataset: str) -> list[Measurement]:
        rule, classes = transfer_splits(dataset), num_classes(dataset)
        backbone = ctx.encoder.load(ctx.device)
        (layer,) = resolve_layers(s["layer"], backbone, {}, ctx.encoder.kind)

        def features(split: str) -> tuple[np.ndarray, np.ndarray]:
            feats, labels = context_features(ctx, s, dataset, split, [layer], backbone,
                                             working=WorkingCopy("float64"))
            return feats[layer.name].double().numpy(), labels.numpy()  # scikit-learn's L-BFGS

        train_x, train_y = features(rule.train)
        if rule.val is not None:
            val_x, val_y = features(rule.val)
            all_x, all_y = np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y])
        else:
            held = max(1, round(float(s["val_fraction"]) * len(train_y)))
            fit_idx, val_idx = holdout_split(len(train_y), held, int(s["split_seed"]))
            all_x, all_y = train_x, train_y
            train_x, train_y, val_x, val_y = (
                all_x[fit_idx], all_y[fit_idx], all_x[val_idx], all_y[val_idx]
            )
        test_x, test_y = features(rule.test)
        multilabel = train_y.ndim == 2

        def score(x, y, eval_x, eval_y, wd: float) -> dict[str, float]:
            scores = logistic_scores(x, y, eval_x, 1.0 / wd, multilabel, int(s["max_iter"]))
            return transfer_scores(rule.metric, scores, torch.from_numpy(eval_y), classes)

        wds = _grid(s["weight_decays"])
        with threadpool_limits(limits=blas_threads(ctx)):
            val_scores = [score(train_x, train_y, val_x, val_y, wd)[rule.metric] for wd in wds]
            best = int(np.argmax(val_scores))
            test_scores = score(all_x, all_y, test_x, test_y, wds[best])
        extra = {"weight_decay": wds[best], "C": 1.0 / wds[best], "val": val_scores[best],
                 "val_split": rule.val or f"{float(s['val_fraction']):g} of {rule.train}",
                 "grid_size": len(wds), "layer": layer.name,
                 "selection": "best val score; refit on train+val; test scored once"}
        return reported_measurements(rule, test_scores, dataset, extra)


def _grid(spec: Any) -> list[float]:
    """A list of values, or ``{logspace: [start_exp, stop_exp, count]}``."""
    if isinstance(spec, Mapping):
        start, stop, count = spec["logspace"]
        return [float(v) for v in np.logspace(float(start), float(stop), int(count))]
    values = [float(v) for v in spec]
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ValueError(f"weight_decays must be positive numbers, got {spec!r}")
    return values
