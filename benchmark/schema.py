"""The schema of a resolved run config: every key of the shared sections with its type and
constraint (the values live in the profiles). ``check_config`` runs once in ``config.resolve``,
so every entry point (``run``, ``sweep``, ``pretrain``, the Python API) refuses a bad value
before anything runs. The ``method`` block is checked by the method's typed settings
(methods/settings.py) and each ``tasks.<name>`` block by its task at planning time
(tasks/common.py), with the same field machinery (benchmark/fields.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from benchmark.fields import (AnyOf, Anything, Bool, Choice, Float, Int, ListOf, MapOf, Name,
                              Nullable, Pattern, Section, Text)


def _datasets() -> list[str]:
    from benchmark.datasets import available_datasets

    return list(available_datasets())


def _recipes() -> list[str]:
    from benchmark.augment import RECIPES

    return sorted(RECIPES)


def _backbones() -> list[str]:
    from benchmark.models import available_backbones

    return [name for name in available_backbones() if name != "timm"]  # timm: see the Pattern


def _heads() -> tuple[str, ...]:
    from benchmark.models.heads import HEADS

    return HEADS


def _optimizers() -> tuple[str, ...]:
    from benchmark.pretrain import OPTIMIZERS

    return OPTIMIZERS


def _amp_dtypes() -> list[str]:
    from benchmark.pretrain import AMP_DTYPES

    return list(AMP_DTYPES)


def _schedules() -> tuple[str, ...]:
    from benchmark.schedule import SCHEDULES

    return SCHEDULES


def _launchers() -> list[str]:
    from benchmark.launch import LAUNCHERS

    return list(LAUNCHERS)


# What a job asks the scheduler for (benchmark/resources.py); also the launcher.pretrain and
# launcher.task override blocks.
RESOURCE_FIELDS = {
    "partition": Nullable(Text()),
    "nodes": Int(ge=1),
    "gpus_per_node": Int(ge=0),
    "tasks_per_node": Int(ge=0),
    "cpus_per_task": Int(ge=1),
    "mem_gb": Nullable(Float(gt=0)),
    "time_min": Int(ge=1),
    "account": Nullable(Text()),
    "qos": Nullable(Text()),
    "constraint": Nullable(Text()),
    "array_parallelism": Int(ge=1),
    "signal_delay_s": Int(ge=0),
    "max_requeues": Int(ge=0),
    "sbatch": MapOf(Text(), Anything()),
}

RUN_CONFIG = Section({
    "profile": Name(),
    "seed": Int(ge=0),
    "device": Pattern(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:<index>"),
    "threads": Int(ge=0),
    "data": Section({
        "dataset": Choice(_datasets),
        "train_subset": Int(ge=0),
        "num_workers": Int(ge=0),
        "augment": Choice(_recipes),
    }),
    "model": Section({
        "backbone": AnyOf(Choice(_backbones), Pattern(r"timm:[A-Za-z0-9_.-]+", "timm:<model name>")),
        "width": Int(ge=1),
        "depths": ListOf(Int(ge=1), min_len=1),
        "in_channels": Int(ge=1),
        "head": Choice(_heads),
        "embed_dim": Int(ge=1),
    }),
    "pretrain": Section({
        "epochs": Int(ge=1),
        "batch_size": Int(ge=1),
        "optimizer": Section({
            "name": Choice(_optimizers),
            "lr": Float(gt=0),
            "momentum": Float(ge=0, lt=1),
            "weight_decay": Float(ge=0),
            "nesterov": Bool(),
        }),
        "schedule": Section({
            "name": Choice(_schedules),
            "warmup_epochs": Int(ge=0),
            "milestones": ListOf(Int(ge=1)),
            "gamma": Float(gt=0),
        }),
        "amp": Bool(),
        "amp_dtype": Choice(_amp_dtypes),
        "channels_last": Bool(),
        "compile": Bool(),
        "progress": Bool(),
        "checkpoint_every_steps": Int(ge=0),
        "keep_checkpoints": Int(ge=1),
        "monitor": Section({
            "every": Int(ge=0),
            "k": Int(ge=1),
            "sigma": Float(gt=0),
            "holdout": Int(ge=0),
        }),
    }),
    "method": Section({"name": Name()}, closed=False),  # the rest: the method's settings
    "tasks": MapOf(Name(), Section({}, closed=False)),  # each: its task's settings
    "launcher": Section({
        "name": Choice(_launchers),
        **RESOURCE_FIELDS,
        "pretrain": Section(RESOURCE_FIELDS),
        "task": Section(RESOURCE_FIELDS),
    }),
})


def check_config(tree: Mapping[str, Any], source: str) -> None:
    """Raise a ConfigError naming the dotted key of the first value ``RUN_CONFIG`` refuses;
    ``source`` names where the values come from (the profile file) for the fix."""
    RUN_CONFIG.check(tree, "", fix=f"fix it in {source} or with --set {{key}}=...")
