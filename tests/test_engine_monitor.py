"""The pretraining monitor logs the representation diagnostics beside knn_top1, and they leave
the training untouched: they draw nothing from the training RNG."""
from __future__ import annotations

from pathlib import Path

import engine_support as es
import pytest
import torch

from benchmark.engine import monitor
from benchmark.engine.pretrain import pretrain
from tasks.diagnostic_measures import DIAGNOSTIC_METRICS

OVERRIDES = ("pretrain.epochs=3",)  # the monitor runs after every epoch, twice mid-training


def trained(folder: Path) -> dict:
    """The encoder file of a 3-epoch tiny run in ``folder``."""
    folder.mkdir()
    return torch.load(pretrain(es.tiny_config(folder, OVERRIDES), folder / "run"), weights_only=True)


def test_the_monitor_logs_every_diagnostic_at_each_monitor_epoch(tmp_path: Path) -> None:
    pretrain(es.tiny_config(tmp_path, ("pretrain.epochs=2",)), tmp_path / "run")
    records = es.read_log(tmp_path / "run")
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert set(DIAGNOSTIC_METRICS) <= record.keys() and "knn_top1" in record
        assert 0.0 <= record["alignment"] <= 4.0 and -4.0 <= record["uniformity"] <= 0.0
        assert 1.0 <= record["rankme"] <= 16 and record["collapsed"] in (0.0, 1.0)


def test_the_trained_weights_are_bit_identical_with_and_without_the_diagnostics(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_diagnostics = trained(tmp_path / "a")
    monkeypatch.setattr(monitor, "embedding_diagnostics", lambda *args, **kwargs: {})
    without = trained(tmp_path / "b")
    assert "rankme" in es.read_log(tmp_path / "a" / "run")[0]
    assert "rankme" not in es.read_log(tmp_path / "b" / "run")[0]
    for part in ("backbone", "head"):
        assert all(torch.equal(without[part][k], v) for k, v in with_diagnostics[part].items())


def test_a_diagnostics_pass_that_drew_from_the_global_rng_would_change_the_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The identity check above can fail: the training does draw from the global RNG."""
    monkeypatch.setattr(monitor, "embedding_diagnostics", lambda *args, **kwargs: {})
    plain = trained(tmp_path / "a")
    monkeypatch.setattr(monitor, "embedding_diagnostics", lambda *args, **kwargs: {"draw": float(torch.rand(()))})
    drawing = trained(tmp_path / "b")
    assert not all(torch.equal(drawing["backbone"][k], v) for k, v in plain["backbone"].items())
