"""Helpers shared by the task families: settings, data splits, labels, seeding."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.utils.data import Dataset, Subset

from benchmark.core.config import ConfigError
from benchmark.core.fields import Choice, Float, Int, Name, Section, Spec, Tuple
from benchmark.core.identity import sanity_id
from benchmark.data import get_dataset
from benchmark.data.sampling import sample_per_class
from tasks.base import Task, TaskContext
from tasks.transforms import EVAL_RESIZES, RECIPE_AUGMENTS, TRANSFORM

FEATURE_DTYPES = ("float32", "float16", "bfloat16")  # the feature_dtype setting: cache precision
# the features setting of the tasks that train on frozen features: the trunk on every augmented
# batch (online) or features of the evaluation transform extracted once (cached)
FEATURE_MODES = ("online", "cached")

# Settings every task accepts: the transform (tasks/transforms.py) and feature extraction.
COMMON_FIELDS: dict[str, Spec] = {
    "transform": TRANSFORM,
    "resize": Int(ge=1),
    "crop": Int(ge=1),
    "crop_scale": Tuple(Float(gt=0, le=1), Float(gt=0, le=1)),
    "eval_resize": Choice(EVAL_RESIZES),
    "recipe_augment": Choice(RECIPE_AUGMENTS),
    "extract_batch_size": Int(ge=1),
    "feature_dtype": Choice(FEATURE_DTYPES),
}
# a task that reads one dataset's train and test splits
SPLIT_FIELDS: dict[str, Spec] = {"dataset": Name(), "train_split": Name(), "test_split": Name()}
# the extraction settings a task does not set
EXTRACTION_DEFAULTS = {"extract_batch_size": 256, "feature_dtype": "float32"}
TASK_FIX = "fix it in the profile's tasks section or with --set {key}=..."


def setting_fields(task: type[Task] | Task) -> dict[str, Any]:
    """Every setting ``task`` accepts, with its field: those every task accepts and its own."""
    return {**COMMON_FIELDS, **task.settings_fields}


def checked_settings(task: Task, given: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``task``'s defaults overlaid with ``given`` (the run config's ``tasks.<name>`` block),
    every value checked against the task's fields (then ``task.check_settings``): an unknown key,
    a missing ``dataset`` or a value out of range is a ConfigError naming the dotted key."""
    merged = {**task.defaults, **given}
    if "dataset" in merged and not merged["dataset"]:
        raise ConfigError(f"tasks.{name}.dataset is missing (a registered dataset name)")
    Section(setting_fields(task)).check(merged, f"tasks.{name}", TASK_FIX)
    task.check_settings(merged)
    return merged


def task_settings(task: Task, ctx: TaskContext) -> dict[str, Any]:
    """:func:`checked_settings` of the task ``ctx`` runs."""
    return checked_settings(task, ctx.settings, ctx.task_name)


def encoder_key(encoder: Any) -> str:
    """Cache key of an encoder: its checkpoint hash; for the sanity encoders (random, pixels)
    the kind + the hash of what builds them (``identity.sanity_id``), so that every task and every
    method's run share their cached features."""
    if encoder.checkpoint_hash:
        return str(encoder.checkpoint_hash)
    return f"{encoder.kind}-{sanity_id(encoder.config)}"


def load_split(ctx: TaskContext, dataset: str, split: str, transform: Any = None) -> Dataset:
    """``split`` of registered ``dataset`` under the run's data root."""
    return get_dataset(dataset).build(ctx.data_root, split, transform)


def limited_split(ctx: TaskContext, dataset: str, split: str, transform: Any, limit: int = 0) -> Dataset:
    """``load_split``; ``limit`` > 0 keeps a deterministic class-balanced draw of that many items
    (seed 0)."""
    data = load_split(ctx, dataset, split, transform)
    if limit <= 0 or limit >= len(data):
        return data
    keep = class_balanced_subset(dataset_targets(data), limit / len(data), seed=0)
    return Subset(data, keep.tolist())


def num_classes(dataset: str) -> int:
    """Class count of a registered dataset."""
    return get_dataset(dataset).num_classes


def dataset_targets(dataset: Dataset) -> torch.Tensor:
    """Labels of every item, read from the dataset's ``targets`` without decoding images."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise TypeError(
            f"{type(dataset).__name__} exposes no `targets`; wrap it so that it does "
            "(see benchmark/data/*.py)"
        )
    return torch.as_tensor(targets)


def holdout_split(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-blind random split of ``range(n)`` into (train, held-out) index tensors."""
    if not 0 < holdout < n:
        raise ValueError(f"holdout must be between 1 and {n - 1} (the train size), got {holdout}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[holdout:].sort().values, perm[:holdout].sort().values


def class_balanced_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Deterministic class-balanced draw of ``fraction`` of the items (sorted indices).

    Every class gets floor(fraction * N / C) items; the remainder goes one each to the classes
    with the lowest index, as SimCLR's subsets do (e.g. 1 %: 811 classes x 13 + 189 x 12)."""
    labels = labels.long()
    classes, sizes = torch.unique(labels, return_counts=True)
    base, extra = divmod(round(fraction * len(labels)), len(classes))
    counts = [base + (1 if rank < extra else 0) for rank in range(len(classes))]
    for c, size, want in zip(classes.tolist(), sizes.tolist(), counts):
        if want > size:
            raise ValueError(f"class {c} has {size} items, fewer than the {want} asked for")
    return sample_per_class(labels, counts, seed)


def blas_threads(ctx: TaskContext) -> int | None:
    """The run's ``threads`` setting for BLAS-backed fits (scikit-learn), None = library default.
    Small L-BFGS/SVM fits slow down badly when BLAS oversubscribes a busy machine."""
    threads = int(ctx.config.threads)
    return threads if threads > 0 else None


def as_tuple(value: Any) -> tuple[Any, ...]:
    """A setting that may be one value or a list, as a tuple."""
    return tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
