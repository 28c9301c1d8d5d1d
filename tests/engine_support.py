"""Stand-ins for the pretraining-engine tests: a tiny memory-bank Method test double, a BN-free
backbone (so that DDP and single-process runs are comparable), and a tiny profile on the
always-present scikit-learn digits data.

Importing this module registers both, so subprocesses import it before calling the engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import yaml
from method_configs import method_config
from torch import nn

from benchmark.core.config import RunConfig, resolve
from benchmark.models import Backbone, register_backbone
from methods.base import LossOutput, Method, register
from methods.parts.dist_utils import all_gather_cat

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent


@register
class BankDouble(Method):
    """Softmax over the anchor's bank row and ``negatives`` random bank rows (all rows when
    ``negatives`` is 0); EMA bank update from all ranks. ``poison_step`` makes that step's loss NaN."""

    name = "engine_double"
    summary = "test double of the engine tests"

    state_names = ("bank", "steps")

    def __init__(self, config: Mapping[str, Any], num_samples: int, embed_dim: int):
        super().__init__(config, num_samples, embed_dim)
        self.bank = F.normalize(torch.randn(num_samples, int(config["dim"])), dim=1)
        self.steps = 0
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    def loss(self, embeddings: torch.Tensor, indices: torch.Tensor, epoch: int) -> LossOutput:
        negatives = int(self.config["negatives"])
        if negatives:
            columns = torch.cat([indices.view(-1, 1),
                                 torch.randint(0, self.num_samples, (len(indices), negatives), device=indices.device)], 1)
            logits = torch.einsum("bd,bkd->bk", embeddings, self.bank[columns]) / 0.1
            loss = F.cross_entropy(logits, torch.zeros_like(indices))
        else:
            loss = F.cross_entropy(embeddings @ self.bank.T / 0.1, indices)
        self.steps += 1
        if self.steps == int(self.config.get("poison_step", 0)):
            loss = loss * float("nan")
        self._pending = (embeddings.detach(), indices)
        return LossOutput(loss, {"bank_norm": float(self.bank.norm(dim=1).mean()), "epoch_seen": epoch})

    def update(self) -> None:
        embeddings, indices = (all_gather_cat(t) for t in self._pending)
        self.bank[indices] = F.normalize(0.5 * self.bank[indices] + 0.5 * embeddings, dim=1)


@register_backbone("engine_plain_cnn")
def plain_cnn(model_cfg: Mapping[str, Any]) -> Backbone:
    """Two strided convolutions without BatchNorm (batch-size independent, so DDP-comparable)."""
    stem = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU())
    stage = nn.Sequential(nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()))
    return Backbone(stem, [stage], feature_dim=16)


def profile_block(name: str, **overrides: Any) -> dict[str, Any]:
    """A whole ``methods.<name>`` block for a test profile: the official values (method_config's
    imagenet block, without ``name``) with ``overrides``; method settings have no code defaults."""
    return {k: v for k, v in method_config(name, **overrides).items() if k != "name"}


TINY_MOCO = {"queue_size": 64, "key_momentum": 0.99, "bn_splits": 2, "set": {"data.augment": "mini_mocov2"}}
MOCOV2_TINY = profile_block("mocov2", **TINY_MOCO)
INTERCLR_TINY = profile_block("interclr", **TINY_MOCO, num_clusters=4, min_cluster=10, negatives=16,
                              pool_size=48, kmeans_backend="torch", centroid_interval=3)
CLIM_TINY = profile_block("clim", **TINY_MOCO, k=4, num_clusters=6, kmeans_iterations=5, kmeans_backend="torch",
                          mix="cutmix", multires_sizes=[21, 14])


def tiny_profile(tmp_path: Path, **method: Any) -> Path:
    """A profile YAML: mini ResNet of width 4 on 192 digits, batch 32, 3 epochs, checkpoints
    every 2 steps; ``method`` overrides the double's defaults. Also configures ``mocov2``
    (queue of 64 keys, split-BN in 2), ``interclr`` (4 clusters) and ``clim`` (6 clusters,
    two multi-resolution views)."""
    tree = {
        "profile": "engine_tiny", "seed": 3, "device": "cpu", "threads": 1,
        "data": {"dataset": "digits", "train_subset": 192, "num_workers": 0, "augment": "mini"},
        "model": {"backbone": "mini_resnet", "width": 4, "depths": [1, 1, 1, 1], "in_channels": 1,
                  "head": "mlp", "embed_dim": 16, "init": "pytorch"},
        "pretrain": {
            "epochs": 3, "batch_size": 32, "bn_batch": 32, "progress": False,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False},
            "schedule": {"name": "cosine", "warmup_epochs": 0, "milestones": [], "gamma": 0.1},
            "amp": False, "amp_dtype": "bfloat16", "channels_last": False, "compile": False,
            "cudnn_benchmark": False,
            "checkpoint_every_steps": 2, "keep_checkpoints": 2,
            "monitor": {"every": 1, "k": 20, "sigma": 0.1, "holdout": 64},
        },
        "methods": {"engine_double": {"dim": 16, "negatives": 8, "poison_step": 0, **method},
                    "mocov2": MOCOV2_TINY, "interclr": INTERCLR_TINY,
                    "clim": CLIM_TINY},
        "tasks": {}, "launcher": {"name": "local"},
    }
    path = tmp_path / "engine_tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def tiny_config(tmp_path: Path, overrides: tuple[str, ...] = (), **method: Any) -> RunConfig:
    """The resolved tiny profile with the test double as method."""
    return resolve(str(tiny_profile(tmp_path, **method)), "engine_double", list(overrides))


def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``<run_dir>/log.jsonl``."""
    import json

    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
