"""Checkpoints written as each project writes them, from one torchvision-named ResNet state dict.

Every writer takes ``trunk`` (a ResNet trunk's state dict in torchvision names: ``conv1.*``,
``bn1.*``, ``layerK.*``, no ``fc``) and saves the file the project's training script would save:
its wrappers, heads, momentum copies, queues and bookkeeping included (head and queue tensors are
small: only their keys matter to the loader).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch

Trunk = Mapping[str, torch.Tensor]


def _prefixed(prefix: str, state: Mapping[str, Any]) -> dict[str, Any]:
    return {f"{prefix}{key}": value for key, value in state.items()}


def _small(*names: str) -> dict[str, torch.Tensor]:
    return {name: torch.randn(4, 3) for name in names}


MOCO_V2_HEAD = _small("fc.0.weight", "fc.0.bias", "fc.2.weight", "fc.2.bias")
BN1D = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# moco v3's _build_mlp(2, ...): Linear, BatchNorm1d, ReLU, Linear (+ BatchNorm1d(affine=False) in the projector)
MOCO_V3_HEAD = _small("fc.0.weight", *(f"fc.1.{name}" for name in BN1D), "fc.3.weight",
                      *(f"fc.4.{name}" for name in BN1D[2:]))
MOCO_V3_PREDICTOR = _small("0.weight", *(f"1.{name}" for name in BN1D), "3.weight")
SOLO_PROJECTOR = _small("0.weight", "0.bias", *(f"1.{name}" for name in BN1D), "3.weight", "3.bias")


def torchvision(trunk: Trunk, fc: Trunk) -> Any:
    """torchvision's ``model.state_dict()``: trunk and ``fc`` classifier."""
    return {**trunk, **_prefixed("fc.", fc)}


def moco_v2(trunk: Trunk, fc: Trunk) -> Any:
    """main_moco.py's save_checkpoint of the DDP-wrapped MoCo (mlp head, K-long queue)."""
    encoder = {**trunk, **MOCO_V2_HEAD}
    state = {**_prefixed("module.encoder_q.", encoder), **_prefixed("module.encoder_k.", encoder),
             "module.queue": torch.randn(128, 16), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    return {"epoch": 800, "arch": "resnet50", "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "momentum": 0.9, "params": [0, 1]}]}}


def moco_v3(trunk: Trunk, fc: Trunk) -> Any:
    """MoCo v3's main_moco.py checkpoint: base/momentum encoders with projector, a predictor, a scaler."""
    encoder = {**trunk, **MOCO_V3_HEAD}
    state = {**_prefixed("module.base_encoder.", encoder), **_prefixed("module.momentum_encoder.", encoder),
             **_prefixed("module.predictor.", MOCO_V3_PREDICTOR)}
    return {"epoch": 300, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}, "param_groups": []},
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}}


def invp(trunk: Trunk, fc: Trunk) -> Any:
    """The official main.py checkpoint: DataParallel ResNet (``fc`` = 128-d head) and memory bank."""
    head = {"fc.weight": torch.randn(128, 4), "fc.bias": torch.zeros(128)}
    return {"epoch": 800, "state_dict": _prefixed("module.", {**trunk, **head}),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.03, "params": [0]}]},
            "memory_banks": torch.randn(16, 128), "neigh": torch.zeros(16, 4, dtype=torch.long)}


def vissl(trunk: Trunk, fc: Trunk) -> Any:
    """A VISSL checkpoint: classy_state_dict -> base_model -> model -> trunk (_feature_blocks) / heads."""
    model = {"trunk": _prefixed("_feature_blocks.", trunk),
             "heads": _small("0.clf.0.weight", "0.clf.0.bias", "1.clf.0.weight", "1.clf.0.bias")}
    return {"phase_idx": 199, "iteration": 1000, "loss": {}, "iteration_num": 1000, "train_phase_idx": 199,
            "classy_state_dict": {"base_model": {"model": model, "meta": {}}, "loss": {},
                                  "optim": {"state": {}, "param_groups": []}, "train": True}}


def solo_learn(trunk: Trunk, fc: Trunk) -> Any:
    """A solo-learn (Lightning) checkpoint of a momentum method with an online classifier and queue."""
    state = {**_prefixed("backbone.", trunk), **_prefixed("projector.", SOLO_PROJECTOR),
             **_prefixed("momentum_backbone.", trunk), **_prefixed("momentum_projector.", SOLO_PROJECTOR),
             **_prefixed("predictor.", _small("0.weight", "0.bias")), "classifier.weight": torch.randn(10, 4),
             "classifier.bias": torch.zeros(10), "queue": torch.randn(2, 128, 16)}
    return {"epoch": 400, "global_step": 100, "pytorch-lightning_version": "2.0.2", "state_dict": state,
            "loops": {}, "callbacks": {}, "optimizer_states": [], "lr_schedulers": []}


WRITERS: dict[str, Callable[[Trunk, Trunk], Any]] = {
    "torchvision": torchvision, "moco": moco_v2, "moco-v3": moco_v3, "invp": invp, "vissl": vissl,
    "solo-learn": solo_learn,
}
# What each writer's file has besides the trunk, as load_weights counts it (trunk: its tensor count).
DROPPED: dict[str, Callable[[int], dict[str, int]]] = {
    "torchvision": lambda trunk: {"classifier": 2},
    "moco": lambda trunk: {"projection head": 4, "momentum encoder": trunk + 4, "queue": 2},
    "moco-v3": lambda trunk: {"projection head": len(MOCO_V3_HEAD), "momentum encoder": trunk + len(MOCO_V3_HEAD),
                              "predictor": len(MOCO_V3_PREDICTOR)},
    "invp": lambda trunk: {"projection head": 2},
    "vissl": lambda trunk: {"head": 4},
    "solo-learn": lambda trunk: {"projection head": len(SOLO_PROJECTOR), "momentum encoder": trunk,
                                 "momentum projection head": len(SOLO_PROJECTOR), "predictor": 2,
                                 "online classifier": 2, "queue": 1},
}


def save(fmt: str, trunk: Trunk, fc: Trunk, path: Path) -> Path:
    """``path`` holding the checkpoint ``fmt``'s project would write for this trunk."""
    torch.save(WRITERS[fmt](trunk, fc), path)
    return path
