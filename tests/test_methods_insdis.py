"""InsDis: full softmax against a loop reference; NCE with frozen vs EMA normaliser Z."""
import math

import pytest
import torch
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import bank_state

from methods.base import build_method

torch.set_num_threads(1)
N, D = 50, 8


def make(**config):
    method = build_method(method_config("insdis", **{"temperature": 0.1, "variant": "softmax", **config}),
                          N, D)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(unit_rows(N, D, 1))})
    return method


def test_softmax_loss_matches_loop_and_gradient_reaches_embeddings_only():
    method = make()
    v = unit_rows(4, D, 2).requires_grad_(True)
    idx = torch.tensor([3, 0, 49, 7])
    out = method.loss(v, idx, epoch=1)
    bank = method.bank.weight.double()
    want = 0.0
    for b in range(4):
        logits = [(bank[j] @ v[b].detach().double()).item() / 0.1 for j in range(N)]
        want += -logits[idx[b]] + math.log(sum(math.exp(x) for x in logits))
    assert out.loss.item() == pytest.approx(want / 4, rel=1e-5)
    out.loss.backward()
    assert v.grad is not None and v.grad.abs().sum() > 0 and method.bank.weight.grad is None


@pytest.mark.parametrize("mode", ["frozen", "ema"])
def test_nce_normaliser_frozen_or_ema(mode):
    torch.manual_seed(0)
    method = make(variant="nce", nce_k=20, nce_z=mode, nce_z_momentum=0.9)
    idx = torch.arange(4)
    first = method.loss(unit_rows(4, D, 3), idx, epoch=1)
    assert method.normaliser is None
    method.update()
    z1 = float(method.normaliser)
    assert first.logs["nce_log_z"] == pytest.approx(math.log(z1))  # the first step uses its own estimate
    assert N * math.exp(-10) < z1 < N * math.exp(10)
    second = method.loss(unit_rows(4, D, 4), idx + 4, epoch=1)
    assert second.logs["nce_log_z"] == pytest.approx(math.log(z1))  # later steps use the kept Z
    method.update()
    z2 = float(method.normaliser)
    assert (z2 == z1) if mode == "frozen" else (z2 != z1)
    restored = make(variant="nce", nce_k=20, nce_z=mode)
    restored.load_state_dict(method.state_dict())
    assert float(restored.normaliser) == z2 and restored.state_dict()["nce_z"] == mode


def test_first_z_is_n_times_mean_exp_score():
    torch.manual_seed(1)
    method = make(variant="nce", nce_k=30)
    v, idx = unit_rows(3, D, 5), torch.tensor([1, 2, 3])
    torch.manual_seed(7)
    noise = torch.randint(0, N, (3, 30))
    cols = torch.cat([idx.view(-1, 1), noise], 1)
    scores = torch.exp((method.bank.weight[cols] @ v.unsqueeze(2)).squeeze(2) / 0.1)
    torch.manual_seed(7)
    method.loss(v, idx, epoch=1)
    method.update()
    assert float(method.normaliser) == pytest.approx(N * scores.mean().item(), rel=1e-5)
