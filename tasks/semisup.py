"""Semi-supervised fine-tuning on 1 % / 10 % of the labels (docs/protocols.md §Semi-supervised fine-tuning).

The whole network is fine-tuned on a labelled subset of train and scored on the test split
after the last epoch (top-1 and top-5). Subsets come from SimCLR's list files (one train
filename per line, e.g. ``n04235860_14959.JPEG``) given in ``subset_files``; without a file the
task makes a deterministic class-balanced draw with SimCLR's per-class counts and records so.
Recipe: the official InvP script (backbone lr 0.0012, classifier 50x, wd 1e-5, batch 128,
30 epochs, no drop_last). Its ``--lr_decay_steps 15,20,25`` are applied after each epoch from
that epoch's index, so the decayed lr first trains 0-based epochs 16, 21 and 26 (``milestones``
here name the first epoch at the new lr), and the classifier's lr is never decayed
(``decay_head_lr: false``; true decays it with the backbone's). Unlike the script, which keeps
its best even epoch on val, the last epoch is the one evaluated. Every fine-tune checkpoints
its steps and every finished fraction its scores (tasks/progress.py): a requeued job resumes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch.utils.data import Dataset, Subset

from benchmark.core.config import ConfigError
from benchmark.core.fields import AnyOf, Float, Int, ListOf, MapOf, Name, Spec, Text
from benchmark.data import get_dataset
from benchmark.data.imagenet import SUBSET_FIX
from tasks.base import EVERY_GPU, Measurement, Task, TaskContext, register
from tasks.common import class_balanced_subset, dataset_targets, load_split, num_classes, task_settings
from tasks.finetune import RECIPE_FIELDS, FinetuneRecipe, fine_tune, predict, require_trainable
from tasks.metrics import topk_accuracy
from tasks.progress import TaskProgress
from tasks.transforms import eval_transform, train_transform


def read_subset_list(path: Path, dataset: Dataset) -> torch.Tensor:
    """Indices of ``dataset`` (which must expose ``samples`` of (path, label)) named in the
    list file ``path``; names absent from the train set are an error listing the first few."""
    if not path.is_file():
        raise FileNotFoundError(f"subset list {path} not found (set tasks.semisup.subset_files)")
    wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise TypeError(f"{type(dataset).__name__} has no `samples`; subset lists need file paths")
    index = {Path(p).name: i for i, (p, _) in enumerate(samples)}
    absent = [name for name in wanted if Path(name).name not in index]
    if absent:
        raise ValueError(
            f"subset list {path}: {len(absent)} of {len(wanted)} files are not in the train set, "
            f"e.g. {', '.join(absent[:5])}"
        )
    return torch.tensor(sorted(index[Path(name).name] for name in wanted))


def subset_path(data_root: Path, name: str) -> Path:
    """Where a ``subset_files`` entry points: an absolute path, or one under the data root."""
    path = Path(name)
    return path if path.is_absolute() else Path(data_root) / path


def per_fraction(value: Any, fraction: float) -> Any:
    """A setting given once, or per label fraction as ``{0.01: ..., 0.1: ...}`` (SimCLR trains
    60 epochs on 1 % and 30 on 10 %)."""
    if not isinstance(value, Mapping):
        return value
    table = {float(k): v for k, v in value.items()}
    if float(fraction) not in table:
        raise ConfigError(f"tasks.semisup: setting {dict(value)} has no entry for fraction {fraction} "
                          "(one of tasks.semisup.fractions); add one")
    return table[float(fraction)]


FRACTION = Float(gt=0, le=1)


def per_fraction_field(spec: Spec) -> AnyOf:
    """The spec of a setting given once or per label fraction (see :func:`per_fraction`)."""
    return AnyOf(spec, MapOf(FRACTION, spec))


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


@register
class SemiSupervisedTask(Task):
    name = "semisup"
    resource_kind = "finetune"
    max_processes = EVERY_GPU  # fine_tune shards every batch over the job's GPUs (DDP)
    fine_tunes = True
    summary = "fine-tune the whole network on 1 % / 10 % of the labels, top-1/top-5"
    paper_table = "Table 2"
    paper_column = "1% / 10% labels (top-5)"
    metrics = ("top1_1pct", "top5_1pct", "top1_10pct", "top5_10pct")
    protocol = "InvP semi_supervised.py: backbone x0.1 from epochs 16/21/26, classifier lr never decayed, last epoch evaluated (docs/protocols.md §Semi-supervised fine-tuning)"
    defaults: ClassVar[dict[str, Any]] = {
        "dataset": "imagenet",
        "fractions": [0.01, 0.1],
        "subset_files": {},
        "subset_seed": 0,
        "train_split": "train",
        "test_split": "val",
        "lr": 0.0012,
        "head_lr_mult": 50.0,
        "weight_decay": 1e-5,
        "batch_size": 128,
        "epochs": 30,
        "milestones": [16, 21, 26],  # the script's 15,20,25 set after each epoch: one epoch late
        "gamma": 0.1,
        "decay_head_lr": False,  # semi_supervised.py decays only the backbone's optimiser
        "drop_last": False,  # its DataLoader keeps the last partial batch
    }
    settings_fields = {
        **RECIPE_FIELDS,
        "dataset": Name(),
        "fractions": ListOf(FRACTION, min_len=1),
        "subset_files": MapOf(FRACTION, Text()),
        "subset_seed": Int(ge=0),
        "train_split": Name(),
        "test_split": Name(),
        "epochs": per_fraction_field(Int(ge=1)),
        "milestones": per_fraction_field(ListOf(Int(ge=1))),
    }


    @classmethod
    def missing_inputs(cls, settings: Mapping[str, Any], data_root: Path) -> list[str]:
        """The dataset and every subset list file: a job without them fails at planning."""
        spec = get_dataset(settings["dataset"])
        problems = [f"tasks.semisup.dataset {spec.name}: {problem} "
                    f"(get it: {spec.how_to_get})" for problem in spec.check(data_root)]
        for fraction, name in dict(settings["subset_files"]).items():
            path = subset_path(data_root, name)
            if not path.is_file():
                problems.append(f"tasks.semisup.subset_files {fraction}: {path} not found; {SUBSET_FIX}")
        return problems

    def run(self, ctx: TaskContext) -> list[Measurement]:
        s = task_settings(self, ctx)
        dataset = s["dataset"]
        require_trainable(ctx.encoder.load("cpu"), ctx.encoder.kind)
        train = load_split(ctx, dataset, s["train_split"], train_transform(dataset, s))
        test = load_split(ctx, dataset, s["test_split"], eval_transform(dataset, s))
        # each finished fraction's scores, saved as it finishes: a resumed job skips it
        finished = ctx.progress("fractions", {"settings": s})
        scores_of: dict[str, dict[str, float]] = finished.load() or {}
        out = []
        for fraction in s["fractions"]:
            indices, how = self._subset(ctx, s, float(fraction), train)
            percent = _percent(float(fraction))
            if percent not in scores_of:
                fit = ctx.progress(f"fit-{percent}", {"settings": s, "fraction": float(fraction)})
                scores_of[percent] = self._fine_tune_and_score(
                    ctx, s, float(fraction), Subset(train, indices.tolist()), test, fit)
                finished.save(scores_of)
                fit.discard()
            extra = {"fraction": float(fraction), "labelled_images": len(indices), "subset": how,
                     "evaluated": "after the last epoch"}
            out.extend(Measurement(metric, value, dataset, s["test_split"], extra)
                       for metric, value in scores_of[percent].items())
        return out

    @staticmethod
    def _fine_tune_and_score(ctx: TaskContext, s: dict[str, Any], fraction: float,
                             labelled: Dataset, test: Dataset, fit: TaskProgress) -> dict[str, float]:
        """Top-1 and top-5 on ``test`` after fine-tuning on ``labelled`` (checkpointed in ``fit``)."""
        recipe = FinetuneRecipe.from_settings(
            s,
            lr=float(s["lr"]),
            epochs=int(per_fraction(s["epochs"], fraction)),
            milestones=per_fraction(s["milestones"], fraction),
        )
        percent = _percent(fraction)
        model = fine_tune(
            ctx.encoder.load(ctx.device),
            num_classes(s["dataset"]),
            labelled,
            recipe,
            ctx.device,
            ctx.seed,
            num_workers=int(ctx.config.data["num_workers"]),
            progress=fit,
        )
        scores, targets = predict(model, test, ctx.device,
                                  num_workers=int(ctx.config.data["num_workers"]))
        return {f"top{k}_{percent}": topk_accuracy(scores, targets, k) for k in (1, 5)}

    @staticmethod
    def _subset(
        ctx: TaskContext, s: dict[str, Any], fraction: float, train: Dataset
    ) -> tuple[torch.Tensor, str]:
        files = {float(k): v for k, v in dict(s["subset_files"]).items()}
        if fraction in files:
            path = subset_path(ctx.data_root, files[fraction])
            return read_subset_list(path, train), f"list file {path}"
        indices = class_balanced_subset(dataset_targets(train), fraction, int(s["subset_seed"]))
        return indices, (
            f"deterministic class-balanced draw (seed {int(s['subset_seed'])}, no list file given)"
        )
