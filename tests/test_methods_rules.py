"""Rules that a symmetric or default value left untested (mutation probes, docs/recipes-vs-original.md
§Methods): the direction of every EMA bank (m = 0.5 hides a swap of m and 1 - m), the InsDis NCE
normaliser's EMA; each test uses a value where the swapped rule gives another number."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import bank_state

from methods.base import build_method
from methods.parts.memory_bank import MemoryBank, ema_rows

N, D = 60, 8


def test_bank_ema_keeps_the_momentum_share_of_the_old_row():
    old, new = unit_rows(3, D, 1), unit_rows(3, D, 2)
    assert torch.allclose(ema_rows(old, new, 0.9), F.normalize(0.9 * old + 0.1 * new, dim=1))
    bank = MemoryBank(old.clone(), 0.9)
    bank.update(torch.tensor([0, 2]), new[:2])
    assert torch.allclose(bank.weight[[0, 2]], F.normalize(0.9 * old[[0, 2]] + 0.1 * new[:2], dim=1))


@pytest.mark.parametrize("config", [
    method_config("invp", n_background=16, memory_momentum=0.8),
    method_config("insdis", memory_momentum=0.8, variant="softmax"),
    method_config("knn", n_background=16, memory_momentum=0.8),
    method_config("knn", variant="and", memory_momentum=0.8),
])
def test_memory_momentum_is_the_share_of_the_old_row(config):
    method = build_method({**config, "temperature": 0.1}, N, D)
    old = unit_rows(N, D, 3)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(old.clone())})
    v, idx = unit_rows(4, D, 4), torch.tensor([5, 1, 40, 22])
    method.loss(v, idx, epoch=1)
    method.update()
    assert torch.allclose(method.bank.weight[idx], F.normalize(0.8 * old[idx] + 0.2 * v, dim=1), atol=1e-6)


@pytest.mark.parametrize("name, extra", [
    ("interclr", {"num_clusters": 4, "min_cluster": 5, "negatives": 12, "pool_size": 30}),
    ("clim", {"k": 5, "num_clusters": 4, "kmeans_iterations": 5, "multires_sizes": []}),
])
def test_bank_momentum_beta_is_the_share_of_the_new_key(name, extra):
    method = build_method(method_config(name, queue_size=16, kmeans_backend="torch", bank_momentum=0.8,
                                        **extra), N, D)
    old = unit_rows(N, D, 5)
    torch.manual_seed(0)
    method.on_train_start(lambda: old.clone())
    keys, idx = unit_rows(4, D, 6), torch.tensor([5, 1, 40, 22])
    method.after_step(idx, keys, step=0)
    assert torch.allclose(method.bank.weight[idx], F.normalize(0.2 * old[idx] + 0.8 * keys, dim=1), atol=1e-6)


def test_nce_normaliser_ema_keeps_the_momentum_share_of_the_old_z():
    torch.manual_seed(0)
    method = build_method(method_config("insdis", temperature=0.1, variant="nce", nce_k=20, nce_z="ema",
                                        nce_z_momentum=0.9), N, D)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(unit_rows(N, D, 1))})
    method.loss(unit_rows(4, D, 3), torch.arange(4), epoch=1)
    method.update()
    first = float(method.normaliser)
    method.loss(unit_rows(4, D, 4) * -1, torch.arange(4, 8), epoch=1)
    estimate = float(method._pending_estimate.mean())
    method.update()
    assert abs(estimate - first) > 0.1 * first  # the two rules give different Z
    assert float(method.normaliser) == pytest.approx(0.9 * first + 0.1 * estimate, rel=1e-9)
