"""An epoch's last partial batch: the bank methods train on it (the official InvP loaders,
``datasets/cifar.py`` and ``datasets/imagenet.py``, have no drop_last, so it updates the bank
and the graph), the MoCo-style methods drop it (``main_moco.py``: drop_last=True)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import engine_support as es
import pytest
import torch
import yaml

from benchmark.core.config import resolve
from benchmark.engine.pretrain import prepare_run
from methods.base import method_class
from methods.parts.memory_bank import MemoryBank
from methods.parts.neighbours import NeighbourTable

# 200 images, batch 32: six full batches and one of 8
PARTIAL = ("data.train_subset=200", "pretrain.epochs=2", "pretrain.checkpoint_every_steps=0")
GRAPH = {"temperature": 0.2, "memory_momentum": 0.5, "k": 4, "n_background": 64, "exclusive": True,
         "lam": 0.6, "ramp": {"type": "binary", "length": 1}}  # L_inv on in epoch 2
BANK_METHODS = {
    "invp": {**GRAPH, "steps": 2, "n_pos": 10, "hard_positive": True, "propagation": "concat"},
    "insdis": {"temperature": 0.1, "memory_momentum": 0.5, "variant": "nce", "nce_k": 64, "nce_z": "ema",
               "nce_z_momentum": 0.99},
    "knn": {**GRAPH, "variant": "invp"},
}


def _resolve(tmp_path: Path, name: str, block: dict[str, Any] | None):
    path = es.tiny_profile(tmp_path)
    if block is not None:
        tree = yaml.safe_load(path.read_text())
        tree["methods"][name] = es.profile_block(name, **block)
        path.write_text(yaml.safe_dump(tree))
    return resolve(str(path), name, list(PARTIAL))


@pytest.mark.parametrize("name", sorted(BANK_METHODS))
def test_bank_methods_train_on_the_last_partial_batch(tmp_path: Path, name: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    updates: dict[type, list[torch.Tensor]] = {MemoryBank: [], NeighbourTable: []}
    for table in updates:  # record the rows each update writes (the bank; InvP/KNN's graph)
        def recording_update(self, indices: torch.Tensor, rows: torch.Tensor, _update=table.update,
                             _seen=updates[table]) -> None:
            _seen.append(indices.clone())
            _update(self, indices, rows)

        monkeypatch.setattr(table, "update", recording_update)
    assert method_class(name).drop_last is False
    run = prepare_run(_resolve(tmp_path, name, BANK_METHODS[name]), tmp_path / "run", resume="never")
    run.run()
    assert [r["steps"] for r in es.read_log(tmp_path / "run")] == [7, 14]
    written = [MemoryBank] if name == "insdis" else [MemoryBank, NeighbourTable]
    assert [table for table, seen in updates.items() if seen] == written
    for table in written:
        assert [len(i) for i in updates[table]] == ([32] * 6 + [8]) * 2
        for epoch in (updates[table][:7], updates[table][7:]):  # every image's row, the last batch's too
            assert sorted(torch.cat(epoch).tolist()) == list(range(200))
    assert torch.isfinite(run.parts.method.bank.weight).all()


def test_moco_style_methods_drop_the_last_partial_batch(tmp_path: Path) -> None:
    assert all(method_class(name).drop_last for name in ("mocov2", "interclr", "clim"))
    prepare_run(_resolve(tmp_path, "mocov2", None), tmp_path / "run", resume="never").run()
    assert [r["steps"] for r in es.read_log(tmp_path / "run")] == [6, 12]
