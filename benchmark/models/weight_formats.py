"""Where each published checkpoint format keeps a ResNet trunk, and what else it holds.

A reader takes the loaded file (``torch.load(weights_only=True)``), finds its model state dict
and splits it into the trunk's tensors, named as the suite :class:`~benchmark.models.Backbone`
names them (``conv1``/``bn1`` -> ``stem.0``/``stem.1``, ``layerK`` -> ``stages.{K-1}``), the parts
that are dropped (projection heads, momentum copies, queues: counted by part), and the keys that
are neither. Layouts, as each project saves them:

* ``torchvision``: a plain ResNet state dict (``conv1.weight``, ..., ``fc.*`` = the classifier),
  or a checkpoint of torchvision's references/classification/train.py: ``model`` (that state
  dict), ``optimizer``, ``lr_scheduler``, ``epoch``, ``args`` (an argparse.Namespace), and with
  ``--model-ema`` a ``model_ema`` copy (dropped).
* ``moco``: ``{"state_dict": ...}``; v1/v2 ``module.encoder_q.`` (``encoder_q.fc`` = head,
  ``encoder_k`` = momentum encoder, ``queue``/``queue_ptr``), v3 ``module.base_encoder.``
  (``base_encoder.fc`` = head, ``momentum_encoder``, ``predictor``).
* ``invp``: ``{"state_dict": ...}`` with ``module.`` keys of the official models/resnet.py
  (torchvision names; ``fc`` = the projection head), beside ``memory_banks`` and ``optimizer``.
* ``vissl``: ``classy_state_dict -> base_model -> model -> {trunk, heads}``, trunk keys
  ``_feature_blocks.conv1.weight``, ...
* ``solo-learn``: a Lightning checkpoint, ``{"state_dict": ...}`` with ``backbone.`` keys and the
  method's other modules (``projector``, ``momentum_backbone``, ``classifier``, ...).
* ``timm``: a timm model's state dict (``model.backbone=timm:<name>``), plain or a checkpoint of
  timm's train.py (its ``state_dict_ema`` first, as timm loads it), its classifier dropped.
* ``suite``: this suite's ``encoder.pt`` (``backbone``, ``config``, ``head``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from benchmark.core.safe_load import LoadError
from benchmark.models.encoders import ENCODER_KEYS

WRAPPER_PREFIX = "module."  # what DataParallel / DistributedDataParallel put before every key
SUITE_NAMES = ((re.compile(r"^conv1\."), "stem.0."), (re.compile(r"^bn1\."), "stem.1."),
               (re.compile(r"^layer([1-4])\."), None))
FORMAT_HINT = "pass --weights-format (torchvision, moco, invp, vissl, solo-learn, timm, suite)"


class WeightsError(LoadError):
    """A checkpoint could not be used as the trunk (unknown layout, missing or unexpected trunk
    keys, wrong shapes, or a file that needs full unpickling); a user error naming the file and
    the fix."""


@dataclass(frozen=True)
class Split:
    """A checkpoint's model tensors sorted into trunk (suite names), dropped parts and the rest."""

    trunk: dict[str, torch.Tensor]
    dropped: dict[str, int]
    unexpected: tuple[str, ...]


def suite_name(torchvision_name: str) -> str | None:
    """``conv1.weight`` -> ``stem.0.weight``, ``layer2.0.conv1.weight`` -> ``stages.1.0.conv1.weight``;
    None for a name outside a ResNet trunk."""
    for pattern, replacement in SUITE_NAMES:
        found = pattern.match(torchvision_name)
        if found:
            new = replacement or f"stages.{int(found.group(1)) - 1}."
            return new + torchvision_name[found.end():]
    return None


def torchvision_name(suite_key: str) -> str:
    """The inverse of :func:`suite_name` (``stages.1.0.conv1.weight`` -> ``layer2.0.conv1.weight``);
    a key outside the ResNet naming comes back unchanged."""
    head, _, rest = suite_key.partition(".")
    index, _, tail = rest.partition(".")
    if head == "stem" and index in ("0", "1"):
        return f"{('conv1', 'bn1')[int(index)]}.{tail}"
    if head == "stages" and index.isdigit():
        return f"layer{int(index) + 1}.{tail}"
    return suite_key


def unwrap(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` without the ``module.`` prefix DataParallel/DDP saving puts on every key."""
    return {key[len(WRAPPER_PREFIX):] if key.startswith(WRAPPER_PREFIX) else key: value
            for key, value in state.items()}


def _container(obj: Any, keys: Sequence[str], path: Path, fmt: str) -> Mapping[str, Any]:
    """``obj[keys[0]][keys[1]]...``, a mapping; a WeightsError naming the missing level otherwise."""
    found = obj
    for depth, key in enumerate(keys):
        if not isinstance(found, Mapping) or key not in found:
            where = " -> ".join(keys[:depth + 1])
            raise WeightsError(path, f"is not a {fmt} checkpoint: it has no {where}", FORMAT_HINT)
        found = found[key]
    if not isinstance(found, Mapping):
        what = " -> ".join(keys) or "its content"
        raise WeightsError(path, f"is not a {fmt} checkpoint: {what} is a {type(found).__name__}, "
                           "not a state dict", FORMAT_HINT)
    return found


def split_state(state: Mapping[str, Any], trunk_prefix: str, parts: Sequence[tuple[str, str]],
                rename: Callable[[str], str | None] = suite_name,
                other_part: Callable[[str], str | None] = lambda key: None) -> Split:
    """Sort ``state`` (``module.`` prefixes removed): a key under a ``parts`` prefix is dropped and
    counted under its label (parts are checked first); one under ``trunk_prefix`` is renamed by
    ``rename`` (None: unexpected); anything else is counted under ``other_part(key)`` or is
    unexpected."""
    trunk: dict[str, torch.Tensor] = {}
    dropped: dict[str, int] = {}
    unexpected: list[str] = []
    for key, value in unwrap(state).items():
        label = next((label for prefix, label in parts if key.startswith(prefix)), None)
        if label is None and key.startswith(trunk_prefix):
            name = rename(key[len(trunk_prefix):]) if isinstance(value, torch.Tensor) else None
            if name is None:
                unexpected.append(key)
            else:
                trunk[name] = value
            continue
        label = label or other_part(key)
        if label is None:
            unexpected.append(key)
        else:
            dropped[label] = dropped.get(label, 0) + 1
    return Split(trunk, dropped, tuple(unexpected))


REFERENCES_KEYS = ("model", "optimizer", "epoch", "args")  # a torchvision references checkpoint
EMA_ENTRY = "model_ema"


def is_references_checkpoint(obj: Any) -> bool:
    """Whether ``obj`` is a checkpoint of torchvision's references/classification/train.py."""
    return isinstance(obj, Mapping) and all(key in obj for key in REFERENCES_KEYS)


def read_torchvision(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """A plain torchvision ResNet state dict (``fc`` is its classifier), or the ``model`` entry of
    a references checkpoint (its ``model_ema`` copy dropped; optimizer, scheduler and args not read)."""
    if not is_references_checkpoint(obj):
        return split_state(_container(obj, [], path, "torchvision"), "", [("fc.", "classifier")])
    ema = obj[EMA_ENTRY] if isinstance(obj.get(EMA_ENTRY), Mapping) else {}
    state = {**_container(obj, ["model"], path, "torchvision"),
             **{f"{EMA_ENTRY}.{key}": value for key, value in ema.items()}}
    return split_state(state, "", [("fc.", "classifier"), (f"{EMA_ENTRY}.", "EMA copy")])


def read_moco(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """MoCo v1/v2 (``encoder_q``/``encoder_k``/``queue``) or v3 (``base_encoder``/``momentum_encoder``)."""
    state = unwrap(_container(obj, ["state_dict"], path, "moco"))
    if any(key.startswith("base_encoder.") for key in state):
        return split_state(state, "base_encoder.", [
            ("base_encoder.fc.", "projection head"), ("momentum_encoder.", "momentum encoder"),
            ("predictor.", "predictor")])
    return split_state(state, "encoder_q.", [
        ("encoder_q.fc.", "projection head"), ("encoder_k.", "momentum encoder"), ("queue", "queue")])


def read_invp(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """The official InvP release: its ResNet's ``module.`` keys under ``state_dict``; ``fc`` = head."""
    return split_state(_container(obj, ["state_dict"], path, "invp"), "", [("fc.", "projection head")])


def read_vissl(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """VISSL: ``classy_state_dict -> base_model -> model``, the trunk's ``_feature_blocks.`` keys."""
    model = _container(obj, ["classy_state_dict", "base_model", "model"], path, "vissl")
    trunk = _container(model, ["trunk"], path, "vissl")
    heads = model["heads"] if isinstance(model.get("heads"), Mapping) else {}
    state = {**{f"trunk.{key}": value for key, value in trunk.items()},
             **{f"heads.{key}": value for key, value in heads.items()}}
    return split_state(state, "trunk._feature_blocks.", [("heads.", "head")])


SOLO_LEARN_PARTS = {"projector": "projection head", "momentum_backbone": "momentum encoder",
                    "momentum_projector": "momentum projection head", "predictor": "predictor",
                    "classifier": "online classifier"}


def read_solo_learn(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """solo-learn's Lightning checkpoint: ``backbone.`` is the trunk (its ``fc`` is an Identity);
    every other top-level module of the method (projector, momentum copies, queues) is dropped."""
    state = _container(obj, ["state_dict"], path, "solo-learn")
    return split_state(state, "backbone.", [],
                       other_part=lambda key: SOLO_LEARN_PARTS.get(key.split(".")[0], key.split(".")[0]))


# the state dict a checkpoint of timm's train.py holds, in the order timm's own
# ``load_state_dict(path, use_ema=True)`` takes them: the EMA weights when it kept them
TIMM_TRAIN_STATES = ("state_dict_ema", "model_ema", "state_dict", "model")


def timm_train_state(obj: Any) -> str | None:
    """The key of the state dict in a timm train.py checkpoint (``arch`` + ``state_dict``...), or
    None for anything else."""
    if not isinstance(obj, Mapping) or "arch" not in obj:
        return None
    return next((key for key in TIMM_TRAIN_STATES if isinstance(obj.get(key), Mapping)), None)


def read_timm(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """A timm model's state dict (the ``model`` of a TimmBackbone), plain or inside a timm
    train.py checkpoint (its EMA weights first, as timm loads it: ``TIMM_TRAIN_STATES``); its
    classifier (``pretrained_cfg["classifier"]``) is dropped."""
    classifier = getattr(backbone, "model", backbone).pretrained_cfg["classifier"]
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state_key = timm_train_state(obj)
    state = _container(obj, [state_key] if state_key else [], path, "timm")
    return split_state(state, "", [(f"{name}.", "classifier") for name in names],
                       rename=lambda key: f"model.{key}")


def suite_model_cfg(obj: Any, path: Path) -> Mapping[str, Any]:
    """The model section a suite ``encoder.pt`` was pretrained with (``config -> model``)."""
    return _container(obj, ["config", "model"], path, "suite")


def read_suite(obj: Any, path: Path, backbone: nn.Module) -> Split:
    """This suite's ``encoder.pt``: ``backbone`` in the Backbone's own names, ``head`` dropped."""
    heads = obj["head"] if isinstance(obj.get("head"), Mapping) else {}
    state = {**{f"backbone.{key}": value for key, value in _container(obj, ["backbone"], path, "suite").items()},
             **{f"head.{key}": value for key, value in heads.items()}}
    return split_state(state, "backbone.", [("head.", "projection head")], rename=lambda key: key)


RESNET_FORMATS = ("torchvision", "moco", "invp", "vissl", "solo-learn")  # torchvision's trunk names
READERS: dict[str, Callable[[Any, Path, nn.Module], Split]] = {
    "torchvision": read_torchvision, "moco": read_moco, "invp": read_invp, "vissl": read_vissl,
    "solo-learn": read_solo_learn, "timm": read_timm, "suite": read_suite,
}
WEIGHT_FORMATS: tuple[str, ...] = tuple(READERS)


def _state_keys(obj: Any) -> set[str]:
    state = obj.get("state_dict") if isinstance(obj, Mapping) else None
    return set(unwrap(state)) if isinstance(state, Mapping) else set()


def _is_plain_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(value, torch.Tensor) for value in obj.values())


def detect_format(obj: Any, path: str | Path, backbone: str | None = None) -> str:
    """The format of the loaded checkpoint ``obj``, told by its keys (``backbone``: the
    ``model.backbone`` it is for, which tells a timm state dict from a torchvision one); a
    WeightsError listing the formats when none or several fit."""
    keys = _state_keys(obj)
    plain = _is_plain_state(obj)
    timm_target = str(backbone).startswith("timm:")
    signs = {
        "suite": isinstance(obj, Mapping) and all(key in obj for key in ENCODER_KEYS),
        "vissl": isinstance(obj, Mapping) and "classy_state_dict" in obj,
        "moco": any(key.startswith(("encoder_q.", "base_encoder.")) for key in keys),
        "solo-learn": any(key.startswith("backbone.") for key in keys),
        "invp": "conv1.weight" in keys and not timm_target,
        "torchvision": not timm_target and (
            (plain and "conv1.weight" in unwrap(obj)) or
            (is_references_checkpoint(obj) and isinstance(obj["model"], Mapping)
             and "conv1.weight" in unwrap(obj["model"]))),
        "timm": timm_target and (plain or timm_train_state(obj) is not None),
    }
    found = [fmt for fmt, sign in signs.items() if sign]
    if len(found) == 1:
        return found[0]
    what = (f"it fits {' and '.join(found)}" if found else
            f"its layout fits none of {', '.join(WEIGHT_FORMATS)} (top-level keys: "
            f"{', '.join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__})")
    raise WeightsError(path, f"has a checkpoint format that could not be told apart: {what}", FORMAT_HINT)
