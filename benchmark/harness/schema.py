"""The schema of a resolved run config, composed from the sections each layer declares (data,
model, pretrain, launcher), with their types and constraints (the values live in the profiles).
:func:`resolve_run` resolves a config and checks it, so every entry point (``run``, ``sweep``,
``python -m benchmark.pretrain``, the Python API) refuses a bad value before anything runs. The
``method`` block is checked by the method's typed settings (benchmark/core/settings.py) and each
``tasks.<name>`` block by its task at planning time (tasks/common.py), with the same field
machinery (benchmark/core/fields.py).
"""
from __future__ import annotations

from typing import Any, Mapping

from benchmark.core.config import RunConfig, profile_path, resolve
from benchmark.core.fields import Choice, Int, MapOf, Name, Pattern, Section, Text
from benchmark.data.settings import DATA_FIELDS
from benchmark.engine.settings import PRETRAIN_FIELDS
from benchmark.harness.launch import LAUNCHERS
from benchmark.harness.resources import RESOURCE_FIELDS
from benchmark.models.settings import MODEL_FIELDS
from tasks.base import RESOURCE_KINDS, available_tasks
from tasks.common import setting_fields

TASK_NAME = Choice(lambda: list(available_tasks()))

RUN_CONFIG = Section({
    "profile": Name(),
    "seed": Int(ge=0),
    "device": Pattern(r"auto|cpu|cuda(:\d+)?", "auto, cpu, cuda or cuda:<index>"),
    "threads": Int(ge=0),
    "data": DATA_FIELDS,
    "model": MODEL_FIELDS,
    "pretrain": PRETRAIN_FIELDS,
    "method": Section({"name": Name()}, closed=False),  # the rest: the method's settings
    "tasks": MapOf(Name(), Section({}, closed=False)),  # each: its task's settings
    # tasks the profile does not run, each with the reason (`--tasks all` prints them)
    "tasks_excluded": MapOf(TASK_NAME, Text()),
    "launcher": Section({
        "name": Choice(LAUNCHERS.names),
        **RESOURCE_FIELDS,
        "pretrain": Section(RESOURCE_FIELDS),
        "task": Section(RESOURCE_FIELDS),
        "task_kinds": MapOf(Choice(RESOURCE_KINDS), Section(RESOURCE_FIELDS)),
        "tasks": MapOf(TASK_NAME, Section(RESOURCE_FIELDS)),
    }, required=("name",)),
}, required=("profile", "seed", "device", "threads", "data", "model", "pretrain", "launcher"))


def task_setting_key(key: str) -> bool:
    """Whether dotted ``key`` is ``tasks.<task>.<setting>`` for a registered task and one of its
    settings (its fields or those every task accepts)."""
    parts = key.split(".")
    if len(parts) != 3 or parts[0] != "tasks" or parts[1] not in available_tasks():
        return False
    return parts[2] in setting_fields(available_tasks()[parts[1]])


def check_config(tree: Mapping[str, Any], source: str) -> None:
    """Raise a ConfigError naming the dotted key of the first value ``RUN_CONFIG`` refuses;
    ``source`` names where the values come from (the profile file) for the fix."""
    RUN_CONFIG.check(tree, "", fix=f"fix it in {source} or with --set {{key}}=...")


def resolve_run(
    profile: str,
    method: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
) -> RunConfig:
    """:func:`benchmark.core.config.resolve`, then :func:`check_config`: the config every entry
    point runs. ``--set tasks.<task>.<setting>`` may name a setting of the task that the profile
    leaves at its default (``task_setting_key``)."""
    cfg = resolve(profile, method, overrides, seed, may_add=task_setting_key)
    check_config(cfg.tree, str(profile_path(profile)))
    return cfg
