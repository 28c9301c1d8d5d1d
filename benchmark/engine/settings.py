"""The ``pretrain`` section of a run config: its keys with their types and constraints (the
values live in the profiles); the harness composes it into the run-config schema."""
from __future__ import annotations

from benchmark.core.fields import Bool, Choice, Float, Int, ListOf, Section
from benchmark.engine.schedule import SCHEDULES
from benchmark.engine.wiring import AMP_DTYPES, OPTIMIZERS

PRETRAIN_FIELDS = Section({
    "epochs": Int(ge=1),
    "batch_size": Int(ge=1),
    "bn_batch": Int(ge=1),
    "optimizer": Section({
        "name": Choice(OPTIMIZERS),
        "lr": Float(gt=0),
        "momentum": Float(ge=0, lt=1),
        "weight_decay": Float(ge=0),
        "nesterov": Bool(),
    }, required=("name", "lr", "momentum", "weight_decay", "nesterov")),
    "schedule": Section({
        "name": Choice(SCHEDULES),
        "warmup_epochs": Int(ge=0),
        "milestones": ListOf(Int(ge=1)),
        "gamma": Float(gt=0),
    }, required=("name", "warmup_epochs", "milestones", "gamma")),
    "amp": Bool(),
    "amp_dtype": Choice(sorted(AMP_DTYPES)),
    "channels_last": Bool(),
    "compile": Bool(),
    "cudnn_benchmark": Bool(),
    "progress": Bool(),
    "checkpoint_every_steps": Int(ge=0),
    "keep_checkpoints": Int(ge=1),
    "monitor": Section({
        "every": Int(ge=0),
        "k": Int(ge=1),
        "sigma": Float(gt=0),
        "holdout": Int(ge=0),
    }, required=("every", "k", "sigma", "holdout")),
}, required=("epochs", "batch_size", "bn_batch", "optimizer", "schedule", "amp", "amp_dtype", "channels_last",
             "compile", "cudnn_benchmark", "progress", "checkpoint_every_steps", "keep_checkpoints", "monitor"))
