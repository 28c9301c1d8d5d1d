"""The training loop in-process: log records, the encoder file, AMP on CPU, the NaN guard."""
from __future__ import annotations

from pathlib import Path

import engine_support as es
import pytest
import torch

from benchmark.core import identity
from benchmark.core.config import ConfigError
from benchmark.engine import checkpoint as ckpt
from benchmark.engine.data import bn_batch_warning
from benchmark.engine.guard import NonFiniteLoss
from benchmark.engine.pretrain import prepare_run, pretrain
from benchmark.engine.wiring import autocast_factory


def test_log_and_encoder_follow_the_contract(tmp_path: Path) -> None:
    cfg = es.tiny_config(tmp_path, ("pretrain.epochs=2",))
    path = pretrain(cfg, tmp_path / "run")
    records = es.read_log(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["epoch_seen"] for r in records] == [1.0, 2.0]  # epochs reach the method 1-based
    assert [r["steps"] for r in records] == [6, 12]  # 192 images / batch 32
    for record in records:
        assert {"loss", "lr", "images_per_s", "knn_top1", "knn_top1_backbone", "bank_norm"} <= record.keys()
        assert 0.0 <= record["knn_top1"] <= 1.0 and record["images_per_s"] > 0
    encoder = torch.load(path, weights_only=True)
    assert path == tmp_path / "run" / "encoder.pt"
    assert set(encoder) == {"backbone", "head", "config", "config_hash", "epoch"}
    assert encoder["epoch"] == 2 and encoder["config_hash"] == identity.pretrain_hash(cfg.to_dict())
    last = torch.load(ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[0], weights_only=True)
    assert (last["next_epoch"], last["next_step"], last["global_step"]) == (3, 0, 12)
    assert all(torch.equal(last["backbone"][k], v) for k, v in encoder["backbone"].items())


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    cfg = es.tiny_config(tmp_path, ("pretrain.epochs=1", "pretrain.amp=true", "pretrain.channels_last=true"))
    with autocast_factory(cfg.pretrain, torch.device("cpu"))():
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.bfloat16
    pretrain(cfg, tmp_path / "run")
    (record,) = es.read_log(tmp_path / "run")
    assert torch.isfinite(torch.tensor(record["loss"]))
    with pytest.raises(ConfigError, match="only bfloat16"):
        autocast_factory(es.tiny_config(tmp_path, ("pretrain.amp=true", "pretrain.amp_dtype=float16")).pretrain,
                         torch.device("cpu"))


def test_nonfinite_loss_stops_with_a_checkpoint(tmp_path: Path) -> None:
    cfg = es.tiny_config(tmp_path, poison_step=9)  # step 3 of epoch 2
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 3 \(global step 9\).*pretrain.optimizer.lr"):
        pretrain(cfg, tmp_path / "run")
    newest = ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")[0]
    state = torch.load(newest, weights_only=True)
    assert (state["global_step"], state["next_epoch"], state["next_step"]) == (8, 2, 2)
    assert all(torch.isfinite(v).all() for v in state["backbone"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "encoder.pt").exists()


def test_bn_batch_other_than_the_recipes_warns_once(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    # The official runs: batch 128 under DataParallel on 4 GPUs, BN over 32 images per GPU.
    assert bn_batch_warning(128, 4, 32) is None
    assert bn_batch_warning(128, 8, 32) == (
        "warning: BatchNorm normalises over 16 images per process (pretrain.batch_size=128 over 8 "
        "processes), the recipe over 32 (pretrain.bn_batch); run 4 processes or --set "
        "pretrain.batch_size=256 (and scale the lr) for the recipe's BN statistics")
    assert bn_batch_warning(96, 1, 64).endswith(
        "(pretrain.batch_size=96 over 1 process), the recipe over 64 (pretrain.bn_batch); --set "
        "pretrain.batch_size=64 (and scale the lr) for the recipe's BN statistics")
    prepare_run(es.tiny_config(tmp_path, ("pretrain.bn_batch=16",)), tmp_path / "run", resume="never")
    assert capfd.readouterr().err.count("warning: BatchNorm normalises over 32 images per process") == 1
    prepare_run(es.tiny_config(tmp_path), tmp_path / "run2", resume="never")
    assert "BatchNorm" not in capfd.readouterr().err


@pytest.mark.parametrize("autotune", [True, False])
def test_cudnn_autotuning_follows_the_config_and_not_the_job_id(tmp_path: Path, monkeypatch, autotune: bool) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", not autotune)  # restored afterwards
    cfg = es.tiny_config(tmp_path, (f"pretrain.cudnn_benchmark={str(autotune).lower()}",))
    prepare_run(cfg, tmp_path / "run", resume="never")
    assert torch.backends.cudnn.benchmark is autotune
    assert identity.pretrain_hash(cfg.to_dict()) == identity.pretrain_hash(es.tiny_config(tmp_path).to_dict())
