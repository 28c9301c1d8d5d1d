"""The suite's Python API: load any checkpoint as an encoder, and run one task on any encoder,
without the command line (e.g. from a notebook).

``load_encoder(path)`` reads a published checkpoint in any format the suite knows
(``benchmark.models.external_weights``) onto the suite's backbone: ``encoder(images)`` gives the
trunk's pooled features and ``encoder.forward_blocks(images)`` every block's output, named by
``encoder.block_names``. ``evaluate(encoder, task=..., profile=...)`` runs one task's protocol
(the profile's settings for it, overridden by keyword) on an ``nn.Module`` and returns the
records the CLI would store. The minimum a plain module needs: ``forward(images)`` returning
(N, D) features, which every task using the ``pooled`` layer reads; probes of named blocks also
need ``forward_blocks`` and ``block_names``, fine-tuning tasks ``feature_dim`` and trainable
parameters. The module is never changed: each task works on a copy.
"""
from __future__ import annotations

import copy
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.core.config import ConfigError, RunConfig, available_profiles, load_profile
from benchmark.core.fields import safe_name
from benchmark.core.runtime import resolve_device
from benchmark.core.store import ResultRecord
from benchmark.data import dataset_problems, resolve_data_root
from benchmark.harness.jobs import measure_task
from benchmark.harness.plan import plan_external, select_tasks
from benchmark.harness.schema import resolve_run
from benchmark.models.external_encoder import EXTERNAL, ExternalWeights
from benchmark.models.external_weights import AUTO, load_weights
from benchmark.models.settings import MODEL_FIELDS
from tasks.base import EncoderHandle, TaskContext, get_task
from tasks.common import checked_settings

MODULE_FORMAT = "module"  # the records' weights format of an encoder given as an nn.Module
MODEL_PROFILE = "imagenet"  # whose model section a backbone no shipped profile uses starts from


def model_section(backbone: str, profile: str | None = None) -> dict[str, Any]:
    """The model section ``backbone`` is built from: ``profile``'s (its backbone replaced), else
    that of the first shipped profile using ``backbone``, else imagenet's with ``backbone``."""
    if profile is None:
        using = [name for name in available_profiles()
                 if load_profile(name)["model"]["backbone"] == backbone]
        profile = using[0] if using else MODEL_PROFILE
    section = {**load_profile(profile)["model"], "backbone": backbone}
    MODEL_FIELDS.check(section, "model", f"pass backbone= one of the suite's backbones or "
                       f"timm:<name> (profile {profile!r} gives the rest)")
    return section


def load_encoder(path: str | Path, backbone: str = "resnet50", format: str = AUTO, *,
                 profile: str | None = None, allow_missing_keys: bool = False) -> nn.Module:
    """The trunk of the checkpoint at ``path`` (``format``: one of
    ``external_weights.WEIGHT_FORMATS``, or ``auto`` to tell it by its keys) on the suite's
    ``backbone`` (its model section: :func:`model_section`), in eval mode on the CPU. Raises a
    WeightsError naming the file and the fix when it cannot be loaded strictly (see
    ``load_weights`` for ``allow_missing_keys``)."""
    return load_weights(path, model_section(backbone, profile), format,
                        allow_missing_keys=allow_missing_keys).backbone


def module_sha256(module: nn.Module) -> str:
    """A fingerprint of ``module``: its class and every state tensor's name, dtype, shape and
    values (the feature caches and job ids of :func:`evaluate` key on it)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for key, tensor in module.state_dict().items():
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class ModuleEncoder(EncoderHandle):
    """An encoder given as an ``nn.Module``: ``load`` hands each task a copy in eval mode."""

    module: nn.Module | None = None

    def load(self, device: torch.device | str = "cpu") -> nn.Module:
        """A copy of the module on ``device``, in eval mode."""
        return copy.deepcopy(self.module).to(device).eval()


def evaluate(encoder: nn.Module, task: str = "knn", profile: str = "mini", *,
             name: str = "module", seed: int | None = None, data_root: str | Path | None = None,
             cache_dir: str | Path | None = None, device: str | None = None,
             **settings: Any) -> list[ResultRecord]:
    """Run ``task`` under ``profile``'s settings for it (each keyword in ``settings`` overrides
    one, e.g. ``layer="pooled"``) on ``encoder`` and return the records (``encoder="external"``,
    ``method="external"``, ``extra["weights"]["name"] = name``); nothing is written but the
    feature cache (``cache_dir``; default a temporary folder). A task the profile does not
    configure, a bad setting, a setting the encoder cannot serve (a feature layer it lacks, no C4
    split for detection) or a missing dataset is a ConfigError naming it and the fix; a task that
    cannot evaluate this encoder otherwise (the ``embedding`` layer: no projection head) raises
    ``tasks.errors.TaskNotApplicable`` with the reason."""
    tree = resolve_run(profile, None, (), seed).to_dict()
    if task in tree["tasks"]:
        tree["tasks"][task] = {**tree["tasks"][task], **settings}
    if device is not None:
        tree["device"] = device
    cfg = RunConfig.from_dict(tree)
    select_tasks(cfg, task, backbone=encoder)  # configured, and its settings fit this encoder
    runner = get_task(task)
    root = resolve_data_root(data_root)
    missing = dataset_problems(runner.datasets(checked_settings(runner, cfg.tasks[task], task)), root)
    if missing:
        raise ConfigError(f"dataset {'; dataset '.join(missing)}; or pass data_root=")
    fingerprint = module_sha256(encoder)
    weights = ExternalWeights(path="", format=MODULE_FORMAT, name=safe_name(name, "name"),
                              sha256=fingerprint)
    with tempfile.TemporaryDirectory(prefix="benchmark-evaluate-") as scratch:
        cache = Path(cache_dir) if cache_dir is not None else Path(scratch)
        return [record for job in plan_external(cfg, [task], weights)
                for record in _run_unit(job, encoder, root, cache)]


def _run_unit(job: Any, encoder: nn.Module, data_root: Path, cache_dir: Path) -> list[ResultRecord]:
    cfg = job.run_config
    handle = ModuleEncoder(EXTERNAL, cfg, None, job.weights.sha256, job.weights, module=encoder)
    ctx = TaskContext(config=cfg, encoder=handle, data_root=data_root,
                      device=resolve_device(cfg.device), seed=cfg.seed, cache_dir=cache_dir,
                      task_name=job.task)
    return measure_task(job, ctx, job.weights.sha256)
