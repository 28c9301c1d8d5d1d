"""Expand a run into jobs: one pretraining job, then one job per (task unit, encoder).

Every job's id is a hash of the resolved configuration it depends on, so a re-run (or a
re-submitted sweep) recognises finished jobs by id and skips them. The sanity encoders (random
init, raw pixels) do not depend on the method: their jobs are shared by every method's run.
External weights (``run --weights``) are planned without a pretraining: their task jobs' ids hash
the file's sha256 and format, not its path or name, so the same bytes are evaluated once.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from benchmark.core.config import ConfigError, RunConfig, config_hash
from benchmark.core.identity import SANITY_SECTIONS, pretrain_hash, pretrain_run_dir
from benchmark.models import build_backbone
from benchmark.models.external_encoder import EXTERNAL, ExternalWeights
from methods.base import method_class
from tasks.base import available_tasks, get_task
from tasks.common import checked_settings
from tasks.features import check_backbone_fit

RUN_ENCODERS = ("pretrained", "random", "pixels")  # the encoders a method's run evaluates


@dataclass(frozen=True)
class Job:
    """One unit of work: pretraining, or one task on one encoder."""

    job_id: str
    kind: str  # "pretrain" | "task"
    label: str
    config: Mapping[str, Any]  # the resolved run config tree (plain dict: picklable)
    pretrain_dir: str  # the pretraining run folder (encoder.pt, log, checkpoints)
    task: str | None = None
    encoder: str = "pretrained"
    depends_on: tuple[str, ...] = field(default_factory=tuple)
    weights: ExternalWeights | None = None  # the file an ``external`` encoder reads

    @property
    def run_config(self) -> RunConfig:
        return RunConfig.from_dict(self.config)


def pretrain_id(cfg: RunConfig) -> str:
    """Id of the pretraining a run needs: hash of what changes the trained weights (the same
    identity that pretraining checkpoints carry)."""
    return pretrain_hash(cfg.tree)


def task_job_id(cfg: RunConfig, task: str, encoder: str,
                unit: Mapping[str, Any] | None = None, weights: ExternalWeights | None = None) -> str:
    """Id of one task (one of its units: ``unit`` holds the unit's settings overrides) on one
    encoder kind: a hash of the unit's settings as it runs them (the task's defaults overlaid
    with the profile's block and the unit's overrides, so a changed default is another job;
    ``Task.identity_settings`` of them) and of the encoder's identity (``external``: the weights'
    sha256 and format, the model section they load onto and the seed the task runs with)."""
    if encoder == "pretrained":
        basis: dict[str, Any] = {"pretrain": pretrain_id(cfg)}
    elif encoder == EXTERNAL:
        if weights is None:
            raise ValueError("an external encoder's job id needs its weights")
        basis = {"weights": {"sha256": weights.sha256, "format": weights.format},
                 **{k: cfg.tree[k] for k in SANITY_SECTIONS}}
    else:
        basis = {k: cfg.tree[k] for k in SANITY_SECTIONS if k in cfg.tree}
    runner = get_task(task)
    settings = checked_settings(runner, {**cfg.tasks[task], **(unit or {})}, task)
    return config_hash({"task": task, "settings": runner.identity_settings(settings),
                        "encoder": encoder, **basis})


def task_units(cfg: RunConfig, task: str) -> list[tuple[str, dict[str, Any]]]:
    """``task``'s units under ``cfg`` (``Task.units``): (name, settings overrides) per job."""
    runner = get_task(task)
    return runner.units(checked_settings(runner, cfg.tasks[task], task))


def unit_tree(tree: Mapping[str, Any], task: str, unit: Mapping[str, Any]) -> dict[str, Any]:
    """The run config tree of one unit's job: ``tree`` with the unit's overrides in
    ``tasks.<task>`` (``tree`` itself when there are none)."""
    if not unit:
        return dict(tree)
    tasks = dict(tree["tasks"])
    tasks[task] = {**tasks[task], **unit}
    return {**tree, "tasks": tasks}


def excluded_tasks(tree: Mapping[str, Any]) -> dict[str, str]:
    """The tasks a run config's profile excludes (``tasks_excluded``), each with its reason."""
    return dict(tree["tasks_excluded"]) if "tasks_excluded" in tree else {}


def model_json(model: Mapping[str, Any]) -> str:
    """A model section as the canonical JSON :func:`model_structure` takes."""
    plain = model.to_dict() if hasattr(model, "to_dict") else dict(model)
    return json.dumps(plain, sort_keys=True)


@functools.lru_cache(maxsize=16)
def model_structure(model_section_json: str) -> nn.Module:
    """The backbone of a model section (:func:`model_json`) built on the meta device: its modules
    and block names, no values; built once per section."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build_backbone(json.loads(model_section_json))


def planning_backbone(cfg: RunConfig) -> nn.Module:
    """``cfg``'s backbone (:func:`model_structure`), on which planning checks that each task can
    run."""
    return model_structure(model_json(cfg.tree["model"]))


def unfit_tasks(cfg: RunConfig, names: list[str], backbone: nn.Module | None = None) -> dict[str, str]:
    """The tasks of ``names`` that cannot run on ``backbone`` (default: ``cfg``'s planning
    backbone) under their ``cfg`` settings, each with the reason (``check_backbone_fit``)."""
    if not names:
        return {}
    backbone = planning_backbone(cfg) if backbone is None else backbone
    unfit = {}
    for name in names:
        runner = get_task(name)
        settings = checked_settings(runner, cfg.tasks[name], name)  # a bad value: its own error
        try:
            check_backbone_fit(runner, backbone, settings)
        except ConfigError as exc:
            unfit[name] = str(exc)
    return unfit


def select_tasks(cfg: RunConfig, spec: str, backbone: nn.Module | None = None) -> list[str]:
    """``all`` -> every registered task, in the profile's order: the profile configures each one
    or excludes it with a reason (``tasks_excluded``), and those that cannot run on the backbone
    (:func:`unfit_tasks` on ``backbone``, default the profile's) are left out; ``none`` -> [];
    else a checked list. A task the profile neither configures nor excludes, under ``all``, is an
    error naming it and the fix; so is a task asked for by name that is excluded or cannot run on
    the backbone (with the reason), and a configured one that is not registered (a typo, not a
    skip)."""

    registered = available_tasks()
    unregistered = [name for name in cfg.tasks if name not in registered]
    if unregistered:
        raise ConfigError(f"tasks.{unregistered[0]} in profile {cfg.profile!r} is not a task; "
                          f"valid tasks: {', '.join(registered)}")
    excluded = excluded_tasks(cfg.tree)
    both = [name for name in excluded if name in cfg.tasks]
    if both:
        raise ConfigError(f"profile {cfg.profile!r} both configures and excludes task {both[0]!r}; "
                          f"remove tasks.{both[0]} or tasks_excluded.{both[0]}")
    configured = list(cfg.tasks)
    if spec == "all":
        missing = [name for name in registered if name not in cfg.tasks and name not in excluded]
        if missing:
            raise ConfigError(
                f"--tasks all: task {missing[0]!r} has no settings in profile {cfg.profile!r}"
                + (f" (nor has {', '.join(missing[1:])})" if missing[1:] else "")
                + f"; add tasks.{missing[0]}: {{}} (its defaults) or settings to the profile, or "
                f"exclude it with the reason: tasks_excluded: {{{missing[0]}: \"why\"}}")
        unfit = unfit_tasks(cfg, configured, backbone)
        return [name for name in configured if name not in unfit]
    if spec in ("", "none"):
        return []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for name in names:
        if name not in registered:
            raise ConfigError(f"unknown task {name!r}; valid tasks: {', '.join(registered)}")
        if name in excluded:
            raise ConfigError(f"task {name!r} is excluded by profile {cfg.profile!r}: "
                              f"{excluded[name]} (tasks_excluded.{name}); to run it anyway, "
                              f"replace tasks_excluded.{name} with tasks.{name} settings")
        if name not in cfg.tasks:
            raise ConfigError(
                f"task {name!r} has no settings in profile {cfg.profile!r} (tasks.{name}); "
                f"tasks it configures: {', '.join(configured) or 'none'}"
            )
    unfit = unfit_tasks(cfg, names, backbone)
    if unfit:
        name, reason = next(iter(unfit.items()))
        if backbone is None:
            raise ConfigError(f"task {name!r} cannot run on model.backbone={cfg.model['backbone']}: "
                              f"{reason}; choose another backbone (--set model.backbone=...) or "
                              f"leave {name} out of --tasks")
        raise ConfigError(f"task {name!r} cannot run on this encoder ({type(backbone).__name__}): "
                          f"{reason}")
    return names


def plan_run(
    cfg: RunConfig, task_names: list[str], runs_root: Path, sanity: bool = True
) -> list[Job]:
    """The jobs of one run, dependencies first. The method's and every task's settings are
    checked here, before any job runs; ``profile`` and ``method.name`` must be safe names (they
    name folders)."""

    method_class(cfg.method.name).check_settings(cfg.method)
    for task in task_names:
        checked_settings(get_task(task), cfg.tasks[task], task)
    pid = pretrain_id(cfg)
    pretrain_dir = str(pretrain_run_dir(cfg, runs_root))
    tree = cfg.to_dict()
    jobs = [
        Job(pid, "pretrain", f"pretrain {cfg.method.name} seed={cfg.seed}", tree, pretrain_dir)
    ]
    encoders = RUN_ENCODERS if sanity else ("pretrained",)
    for task in task_names:
        for encoder in encoders:
            shown = cfg.method.name if encoder == "pretrained" else encoder
            jobs += _task_jobs(cfg, task, tree, encoder, shown, pretrain_dir,
                               (pid,) if encoder == "pretrained" else ())
    return jobs


def _task_jobs(cfg: RunConfig, task: str, tree: dict[str, Any], encoder: str, shown: str,
               pretrain_dir: str, depends_on: tuple[str, ...] = (),
               weights: ExternalWeights | None = None) -> list[Job]:
    """One job per unit of ``task`` on ``encoder``, labelled ``<task><unit> [<shown>]``."""
    units = task_units(cfg, task)
    return [Job(job_id=task_job_id(cfg, task, encoder, unit, weights), kind="task",
                label=f"{task}{name if len(units) > 1 else ''} [{shown}]",
                config=unit_tree(tree, task, unit), pretrain_dir=pretrain_dir, task=task,
                encoder=encoder, depends_on=depends_on, weights=weights)
            for name, unit in units]


def plan_external(cfg: RunConfig, task_names: list[str], weights: ExternalWeights) -> list[Job]:
    """The task jobs of ``weights`` evaluated under ``cfg`` (its model section builds the
    backbone): no pretraining, no sanity rows; each task's settings are checked here."""
    for task in task_names:
        checked_settings(get_task(task), cfg.tasks[task], task)
    tree = cfg.to_dict()
    return [job for task in task_names
            for job in _task_jobs(cfg, task, tree, EXTERNAL, weights.name, "", weights=weights)]


def missing_inputs(job: Job, data_root: Path) -> list[str]:
    """What a task job needs under ``data_root`` and lacks (``Task.missing_inputs`` of its
    settings); [] for a pretraining."""
    if job.kind != "task" or job.task is None:
        return []
    runner = get_task(job.task)
    settings = checked_settings(runner, job.config["tasks"][job.task], job.task)
    return runner.missing_inputs(settings, data_root)

