"""Cluster resources of a job: read from the profile's ``launcher:`` section and CLI flags.

``launcher:`` holds the resources shared by every job, plus optional ``pretrain:`` and ``task:``
blocks that override them for one job kind. A task job is sized on its own: its task's resource
kind (``tasks.base.RESOURCE_KINDS``) has a ``task_kinds.<kind>:`` block that sets every
:data:`TASK_SIZE_KEYS` (so no task job takes the pretraining's GPU count or time), optionally
overridden for one task by ``tasks.<task>:``; a task job runs on one node. Flags given on the
command line override the profile: every flag for pretraining jobs, the placing ones
(partition, account, ...; not :data:`SIZE_FLAGS`) for task jobs too.

Every text that reaches the generated batch script (partition, account, qos, constraint, extra
sbatch options) is checked here, where resources are built, to be one line: a line break in a value
would end its ``#SBATCH`` line and put the rest into the script as a shell command.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields
from typing import Any, Mapping

from benchmark.core.config import ConfigError
from benchmark.core.fields import Anything, Float, Int, MapOf, Nullable, Text
from benchmark.core.settings import setting, settings_section

JOB_KINDS = ("pretrain", "task")
TASK_BLOCKS = ("task_kinds", "tasks")  # launcher.task_kinds.<kind>, launcher.tasks.<task>
NON_RESOURCE_KEYS = ("name",) + JOB_KINDS + TASK_BLOCKS
# what every launcher.task_kinds.<kind> block sets: the size of a task job of that kind
TASK_SIZE_KEYS = ("gpus_per_node", "cpus_per_task", "mem_gb", "time_min")
# flags that size pretraining jobs only (a task job's size is its kind's block)
SIZE_FLAGS = ("nodes", "gpus_per_node", "cpus_per_task", "mem_gb", "time_min")
PRETRAIN_ONLY = " of pretraining jobs (task jobs: launcher.task_kinds)"
RESOURCE_FLAGS = {  # flag -> (type, help); keys are fields of Resources
    "partition": (str, "Slurm partition"),
    "nodes": (int, "nodes per pretraining job (task jobs run on one node)"),
    "gpus_per_node": (int, "GPUs per node" + PRETRAIN_ONLY + "; one process per GPU"),
    "cpus_per_task": (int, "CPUs per process" + PRETRAIN_ONLY),
    "mem_gb": (float, "memory per node in GB" + PRETRAIN_ONLY),
    "time_min": (int, "time limit in minutes" + PRETRAIN_ONLY + "; jobs requeue at the limit"),
    "account": (str, "Slurm account"),
    "qos": (str, "Slurm QOS"),
    "constraint": (str, "Slurm node constraint"),
    "array_parallelism": (int, "task-array jobs running at once"),
}
SCRIPT_TEXT_FIELDS = ("partition", "account", "qos", "constraint")
SBATCH_OPTION_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# control characters (newline, carriage return, NUL, ...) and Unicode line/paragraph separators
LINE_BREAKING_CATEGORIES = ("Cc", "Zl", "Zp")


def script_text(value: Any, where: str) -> str:
    """``str(value)`` if it is one line of text a batch script can hold; else a ConfigError
    naming ``where`` (the key or flag it came from)."""
    text = str(value)
    bad = sorted({c for c in text if unicodedata.category(c) in LINE_BREAKING_CATEGORIES})
    if bad:
        raise ConfigError(f"{where} must be one line of text without control characters, got "
                          f"{text!r} (contains {', '.join(repr(c) for c in bad)}); remove them")
    return text


def _check_sbatch_option(key: Any, value: Any) -> None:
    """An extra sbatch option: a lowercase option name and one line of scalar value."""
    if not isinstance(key, str) or not SBATCH_OPTION_NAME.fullmatch(key):
        raise ConfigError(f"sbatch option name {key!r} (launcher.sbatch / --sbatch) is not valid: "
                          "use lowercase letters, digits, '-' and '_', starting with a letter, "
                          "e.g. --sbatch mail-type=END")
    if not isinstance(value, (str, int, float)):
        raise ConfigError(f"sbatch option {key} (launcher.sbatch / --sbatch) must be a string, "
                          f"number or true, got {value!r}")
    if value is False:  # it would become the line `--<key>=False`, which sbatch does not read as off
        raise ConfigError(f"sbatch option {key} (launcher.sbatch / --sbatch) is false: sbatch has "
                          f"no off value for a flag; remove {key} to leave it off")
    script_text(value, f"sbatch option {key} (launcher.sbatch / --sbatch {key}=...)")


@dataclass(frozen=True)
class Resources:
    """What one job asks the scheduler for (one task per GPU; at least one task per node). Every
    value comes from the profile's ``launcher`` block (no defaults here)."""

    partition: str | None = setting(spec=Nullable(Text()))
    nodes: int = setting(spec=Int(ge=1))
    gpus_per_node: int = setting(spec=Int(ge=0))
    # processes per node of a pretraining; 0 = one per GPU (at least 1)
    tasks_per_node: int = setting(spec=Int(ge=0))
    cpus_per_task: int = setting(spec=Int(ge=1))
    mem_gb: float | None = setting(spec=Nullable(Float(gt=0)))
    time_min: int = setting(spec=Int(ge=1))
    account: str | None = setting(spec=Nullable(Text()))
    qos: str | None = setting(spec=Nullable(Text()))
    constraint: str | None = setting(spec=Nullable(Text()))
    array_parallelism: int = setting(spec=Int(ge=1))
    signal_delay_s: int = setting(spec=Int(ge=0))
    max_requeues: int = setting(spec=Int(ge=0))
    sbatch: Mapping[str, Any] = setting(spec=MapOf(Text(), Anything()), factory=dict)

    def __post_init__(self) -> None:
        RESOURCES.check({f.name: getattr(self, f.name) for f in fields(self)}, "launcher")
        if not isinstance(self.sbatch, Mapping):
            raise ConfigError("launcher.sbatch must be a mapping of extra sbatch options, "
                              "e.g. {exclusive: true, comment: paper}")
        for name in SCRIPT_TEXT_FIELDS:
            if getattr(self, name) is not None:
                script_text(getattr(self, name), f"launcher.{name} (--{name})")
        for key, value in self.sbatch.items():
            _check_sbatch_option(key, value)

    @property
    def processes_per_node(self) -> int:
        """``tasks_per_node``, else one process per GPU (torch.distributed world = nodes x
        GPUs), else one."""
        return self.tasks_per_node or max(self.gpus_per_node, 1)

    def executor_parameters(self) -> dict[str, Any]:
        """Keyword arguments for submitit's ``AutoExecutor.update_parameters``."""
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "nodes": self.nodes,
            "tasks_per_node": self.processes_per_node,
            "cpus_per_task": self.cpus_per_task,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_additional_parameters": {"kill_on_invalid_dep": "yes", **self.sbatch},
            # one rank failing ends the others (instead of leaving them waiting in a collective)
            "slurm_srun_args": ["--kill-on-bad-exit=1"],
        }
        if self.gpus_per_node:
            params["gpus_per_node"] = self.gpus_per_node
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                params[f"slurm_{name}"] = getattr(self, name)
        return params

    def sbatch_args(self, tasks_per_node: int | None = None) -> list[str]:
        """The sbatch options these resources become (for ``sbatch --test-only`` and display);
        ``tasks_per_node`` defaults to one per GPU."""
        args = [f"--nodes={self.nodes}", f"--ntasks-per-node={tasks_per_node or self.processes_per_node}",
                f"--cpus-per-task={self.cpus_per_task}", f"--time={self.time_min}"]
        if self.gpus_per_node:
            args.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.mem_gb is not None:
            args.append(f"--mem={int(self.mem_gb * 1024)}M")
        for name in ("partition", "account", "qos", "constraint"):
            if getattr(self, name):
                args.append(f"--{name}={getattr(self, name)}")
        for key, value in self.sbatch.items():
            option = "--" + key.replace("_", "-")
            args.append(option if value is True else f"{option}={value}")
        return args

    def describe(self) -> str:
        """One line for humans: ``partition=gpu nodes=1 gpus=8 cpus/task=10 mem=64G time=4320m``."""
        text = (f"partition={self.partition or '(default)'} nodes={self.nodes} "
                f"gpus={self.gpus_per_node} cpus/task={self.cpus_per_task} "
                f"mem={f'{self.mem_gb:g}G' if self.mem_gb else '(default)'} time={self.time_min}m")
        extras = [f"{k}={getattr(self, k)}" for k in ("account", "qos", "constraint") if getattr(self, k)]
        extras += [f"{k}={v}" for k, v in self.sbatch.items()]
        return " ".join([text, *extras])


# What a job asks the scheduler for (the launcher section's keys; also the launcher.pretrain and
# launcher.task override blocks)
RESOURCES = settings_section(Resources, required=False)  # checks a block, a partial one too
RESOURCE_FIELDS = RESOURCES.fields
COMPLETE_RESOURCES = settings_section(Resources)  # ... and every key present (sbatch aside)


def _checked(block: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``block`` as a dict, once ``RESOURCES`` accepts it (``key``: its dotted place, e.g.
    ``launcher.pretrain``): an unknown key or a bad value is a ConfigError naming it."""
    RESOURCES.check(block, key)
    return dict(block)


def _optional_block(section: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``section[key]``, an optional override block ({} when absent), once it is a mapping."""
    block = section[key] if key in section and section[key] is not None else {}
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where} must be a mapping of resource overrides")
    return block


def task_layers(section: Mapping[str, Any], task: str, task_kind: str) -> list[tuple[str, Mapping[str, Any]]]:
    """The override blocks of one task job, in order: ``launcher.task``, its kind's
    ``launcher.task_kinds.<kind>`` (which must set every :data:`TASK_SIZE_KEYS`) and
    ``launcher.tasks.<task>``; none may ask for more than one node."""
    kinds = _optional_block(section, "task_kinds", "launcher.task_kinds")
    where = f"launcher.task_kinds.{task_kind}"
    if task_kind not in kinds:
        raise ConfigError(f"launcher.task_kinds has no {task_kind} block (the resource kind of task "
                          f"{task!r}); add {where}: {{{', '.join(k + ': ...' for k in TASK_SIZE_KEYS)}}} "
                          "to the profile's launcher section")
    sized = _optional_block(kinds, task_kind, where)
    missing = [key for key in TASK_SIZE_KEYS if key not in sized]
    if missing:
        raise ConfigError(f"{where} is missing {', '.join(missing)}; set it there (a task job takes "
                          "no size from the pretraining's launcher keys)")
    layers = [("launcher.task", _optional_block(section, "task", "launcher.task")), (where, sized),
              (f"launcher.tasks.{task}", _optional_block(
                  _optional_block(section, "tasks", "launcher.tasks"), task, f"launcher.tasks.{task}"))]
    for name, block in layers:
        if "nodes" in block and block["nodes"] != 1:
            raise ConfigError(f"{name}.nodes is {block['nodes']!r}: a task job runs on one node; "
                              "set 1 or remove it")
    return [(name, _checked(block, name)) for name, block in layers]


def resources_for(section: Mapping[str, Any] | None, kind: str,
                  flags: Mapping[str, Any] | None = None, task: str | None = None,
                  task_kind: str | None = None) -> Resources:
    """Resources of a ``kind`` job: profile ``launcher:`` keys, then its ``launcher.<kind>:``
    block, then non-None ``flags`` (from the command line). A task job (``task`` and its
    ``task_kind`` given) takes :func:`task_layers` instead, runs on one node and takes only the
    placing flags (not :data:`SIZE_FLAGS`)."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind {kind!r}; valid kinds: {', '.join(JOB_KINDS)}")
    section = dict(section or {})
    common = _checked({k: v for k, v in section.items() if k not in NON_RESOURCE_KEYS}, "launcher")
    flags = {k: v for k, v in (flags or {}).items() if v is not None}  # typed by argparse
    if kind == "task":
        if task is None or task_kind is None:
            raise ValueError("a task job's resources need its task and resource kind")
        layers = [("launcher", common), *task_layers(section, task, task_kind)]
        flags = {k: v for k, v in flags.items() if k not in SIZE_FLAGS}
    else:
        layers = [("launcher", common),
                  (f"launcher.{kind}", _checked(_optional_block(section, kind, f"launcher.{kind}"),
                                                f"launcher.{kind}"))]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        merged.update(layer)
    merged.update(flags)
    if kind == "task":
        merged["nodes"] = 1
    merged["sbatch"] = {}
    for where, layer in (*((f"{name}.sbatch", block) for name, block in layers), ("--sbatch", flags)):
        options = layer.get("sbatch") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where} must be a mapping of extra sbatch options, e.g. "
                              "{exclusive: true, comment: paper}")
        merged["sbatch"].update(options)
    COMPLETE_RESOURCES.check(merged, "launcher", "add it to the profile's launcher block")
    return Resources(**merged)
