"""Export a ResNet-50 encoder checkpoint to detectron2's format (MoCo's converter, docs/protocols.md §MoCo recipe).

Key renaming, as ``convert-pretrain-to-detectron2.py`` does it on torchvision ResNet keys:
non-``layer`` keys get a ``stem.`` prefix, ``layerN`` -> ``res{N+1}``, ``bnK`` ->
``convK.norm``, ``downsample.0`` -> ``shortcut``, ``downsample.1`` -> ``shortcut.norm``. The
result is a pickle ``{"model": {name: numpy array}, "__author__": ..., "matching_heuristics":
True}``. Our checkpoints hold the engine's backbone (``stem.0``/``stem.1``/``stages.N``, see
``benchmark/models/resnets.py``) or torchvision keys, possibly under a wrapper prefix; both are
mapped to torchvision's names first and checked against torchvision's ResNet-50.

With detectron2 installed (on a cluster), fine-tune on VOC07+12 with MoCo's configs::

    python tools/train_net.py --config-file configs/pascal_voc_R_50_C4_24k_moco.yaml \\
        --num-gpus 8 MODEL.WEIGHTS OUT.pkl

(``detection/train_net.py`` and ``detection/configs/`` of facebookresearch/moco).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Mapping

import torch
import torchvision

from benchmark.core.atomic import atomic_open
from benchmark.core.safe_load import load_weights_only

AUTHOR = "invp-bench"
WRAPPER_PREFIXES = ("module.encoder_q.", "module.backbone.", "module.encoder.", "module.", "encoder_q.", "backbone.", "encoder.")
ENGINE_TO_TORCHVISION = ((re.compile(r"^stem\.0\."), "conv1."), (re.compile(r"^stem\.1\."), "bn1."))
STAGE_KEY = re.compile(r"^stages\.(\d+)\.")


class CheckpointMismatch(ValueError):
    """A checkpoint does not hold a torchvision-layout ResNet-50; the message lists the keys."""


def strip_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the first known wrapper prefix (``module.``, ``backbone.``, ...) shared by all keys."""
    for prefix in WRAPPER_PREFIXES:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def torchvision_resnet_keys(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """``state_dict`` renamed to torchvision's ResNet-50 keys (``fc.*`` dropped) and checked.

    Accepts the engine's ``Backbone`` names or torchvision's, under any known wrapper prefix;
    raises :class:`CheckpointMismatch` naming ``source`` and the missing or unexpected keys.
    """
    renamed = {}
    for key, value in strip_wrapper_prefix(state_dict).items():
        for pattern, replacement in ENGINE_TO_TORCHVISION:
            key = pattern.sub(replacement, key)
        key = STAGE_KEY.sub(lambda m: f"layer{int(m.group(1)) + 1}.", key)
        if not key.startswith("fc."):
            renamed[key] = value
    expected = {k for k in torchvision.models.resnet50(weights=None).state_dict() if not k.startswith("fc.")}
    missing = sorted(k for k in expected - set(renamed) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(renamed) - expected)
    if missing or unexpected:
        raise CheckpointMismatch(
            f"{source} is not a ResNet-50 backbone in torchvision's layout: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}. Only ResNet-50 encoders (model.backbone=resnet50) can be exported "
            "to detectron2's R50-C4; strip other wrapper prefixes before exporting."
        )
    return renamed


def detectron2_key(key: str) -> str:
    """MoCo's renaming of one torchvision ResNet key to detectron2's ResNet names."""
    if not key.startswith("layer"):
        key = "stem." + key
    key = re.sub(r"^layer(\d)", lambda m: f"res{int(m.group(1)) + 1}", key)
    key = re.sub(r"bn(\d)", r"conv\1.norm", key)
    key = key.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
    return key


def export_detectron2(checkpoint_path: str | Path, out_pkl: str | Path) -> Path:
    """Write ``out_pkl``: the encoder's ResNet-50 backbone in detectron2's R50 names."""
    checkpoint_path, out_pkl = Path(checkpoint_path), Path(out_pkl)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"encoder checkpoint {checkpoint_path} not found (pretraining writes <run_dir>/encoder.pt)")
    checkpoint = load_weights_only(checkpoint_path, "Pass an encoder.pt written by pretraining")
    if not isinstance(checkpoint, Mapping) or "backbone" not in checkpoint:
        raise CheckpointMismatch(
            f"{checkpoint_path} has no 'backbone' state dict; pass an encoder.pt written by pretraining"
        )
    weights = torchvision_resnet_keys(checkpoint["backbone"], str(checkpoint_path))
    model = {detectron2_key(k): v.detach().cpu().numpy() for k, v in weights.items()}
    with atomic_open(out_pkl, "wb") as fh:
        pickle.dump({"model": model, "__author__": AUTHOR, "matching_heuristics": True}, fh)
    return out_pkl
