"""What identifies a job: the part of a run config that determines the trained weights (the
pretraining id, recorded in checkpoints and ``encoder.pt``), what builds the sanity encoders, and
the run folder a pretraining writes to. Job ids are hashes of these, so they must not drift."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from benchmark.core.config import RunConfig, config_hash, flatten
from benchmark.core.fields import safe_name

IDENTITY_SECTIONS = ("seed", "data", "model", "pretrain", "method")
# Keys that change how a run is executed or recorded, not what it computes.
OPERATIONAL_KEYS = frozenset({
    "data.num_workers",
    "pretrain.bn_batch",  # the recipe's BN batch per process: only a warning reads it
    "pretrain.checkpoint_every_steps",
    "pretrain.cudnn_benchmark",  # which convolution algorithms run, not what they compute
    "pretrain.keep_checkpoints",
    "pretrain.progress",
})
SANITY_SECTIONS = ("seed", "model")  # what a random-init or raw-pixel encoder depends on


def pretrain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run config that determines the trained weights, as plain nested dicts: the
    :data:`IDENTITY_SECTIONS` without the :data:`OPERATIONAL_KEYS`. Checkpoints and ``encoder.pt``
    record this (not the tasks, launcher or profile name), so equal trainings write equal files."""
    tree = RunConfig.from_dict({k: config[k] for k in IDENTITY_SECTIONS if k in config}).to_dict()
    for dotted in OPERATIONAL_KEYS:
        *parents, leaf = dotted.split(".")
        node: Any = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def pretrain_identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened keys (``pretrain.epochs`` ...) that determine the trained weights."""
    return flatten(pretrain_config(config))


def pretrain_hash(config: Mapping[str, Any]) -> str:
    """Hash of :func:`pretrain_identity`: equal for runs whose pretraining is the same."""
    return config_hash(pretrain_identity(config))


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted identity keys whose values differ between configs ``a`` and ``b`` (sorted)."""
    fa, fb = pretrain_identity(a), pretrain_identity(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>"))


def identity_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``config`` and ``config_hash`` entries of a checkpoint or ``encoder.pt``."""
    return {"config": pretrain_config(config), "config_hash": pretrain_hash(config)}


def sanity_id(cfg: RunConfig) -> str:
    """Id of the sanity encoders (random init, raw pixels): hash of what builds them."""
    return config_hash({k: cfg.tree[k] for k in SANITY_SECTIONS if k in cfg.tree})


def pretrain_run_dir(cfg: RunConfig, runs_root: Path) -> Path:
    """The folder of the pretraining ``cfg`` needs: ``<runs>/<profile>/<method>-<pretrain id>``."""
    folder = f"{safe_name(cfg.method.name, 'method.name')}-{pretrain_hash(cfg.tree)}"
    return Path(runs_root) / safe_name(cfg.profile, "profile") / folder
