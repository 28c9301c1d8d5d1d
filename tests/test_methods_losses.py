"""Loss terms against loop references; the sparse-gradient similarity gather against autograd."""
import math

import pytest
import torch
from methods_reference import instance_loss_loop, invp_loss_loop, unit_rows

from methods.parts.losses import and_loss, instance_loss, invp_loss, nce_loss
from methods.parts.similarity import DenseScores, gathered_similarities

torch.set_num_threads(1)
TAU = 0.1


def _sims(seed=0, b=4, n=30):
    v, bank = unit_rows(b, 8, seed), unit_rows(n, 8, seed + 1)
    return v, bank, v @ bank.T


def test_instance_loss_matches_loop():
    _, _, sims = _sims()
    anchors = torch.tensor([0, 5, 9, 29])
    pool = sims.topk(10, dim=1).indices
    got = instance_loss(sims[torch.arange(4), anchors] / TAU, sims.gather(1, pool) / TAU)
    for b in range(4):
        want = instance_loss_loop(sims[b].tolist(), sims[b, anchors[b]].item(), pool[b].tolist(), TAU)
        assert got[b].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("exclusive", [True, False])
def test_invp_loss_matches_loop_with_repeats_and_padding(exclusive):
    _, _, sims = _sims(seed=3)
    anchors = torch.tensor([1, 2, 3, 4])
    pool = sims.topk(12, dim=1).indices
    positives = torch.tensor([[5, 5, 6, 7], [8, 9, 9, 9], [10, 11, 12, 13], [14, 15, 16, 17]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False], [True] * 4])
    got = invp_loss(sims.gather(1, positives) / TAU, mask, sims.gather(1, pool) / TAU,
                    sims[torch.arange(4), anchors] / TAU, exclusive)
    for b in range(4):
        kept = positives[b][mask[b]].tolist()
        want = invp_loss_loop(sims[b].tolist(), sims[b, anchors[b]].item(), kept, pool[b].tolist(), TAU, exclusive)
        assert got[b].item() == pytest.approx(want, rel=1e-5)


def test_invp_loss_is_finite_where_plain_exp_overflows():
    logits = torch.tensor([[100.0, 99.0, 98.0]])
    got = invp_loss(torch.tensor([[98.0]]), torch.tensor([[True]]), logits, torch.tensor([100.0]), True)
    want = -math.log(math.exp(-2.0) / (math.exp(-1.0) + math.exp(-2.0)) + 1e-7)
    assert torch.isinf(torch.exp(logits)).all() and got.item() == pytest.approx(want, rel=1e-6)


def test_nce_loss_matches_spec_formula():
    logits = torch.randn(3, 6) * 2
    n, z = 1000, 2500.0
    got = nce_loss(logits, math.log(z), n)
    k = logits.shape[1] - 1
    for b in range(3):
        pm = [math.exp(x) / z for x in logits[b].tolist()]
        want = -math.log(pm[0] / (pm[0] + k / n)) - sum(math.log((k / n) / (p + k / n)) for p in pm[1:])
        assert got[b].item() == pytest.approx(want, rel=1e-5)


def test_and_loss_matches_loop():
    logits = torch.randn(3, 10)
    targets = torch.tensor([0, 4, 9])
    neighbours = torch.tensor([[3], [5], [2]])
    mask = torch.tensor([[True], [False], [True]])
    got = and_loss(logits, targets, neighbours, mask)
    for b in range(3):
        p = torch.softmax(logits[b].double(), 0)
        total = p[targets[b]] + (p[neighbours[b, 0]] if mask[b, 0] else 0.0)
        assert got[b].item() == pytest.approx(-math.log(total), rel=1e-5)


def test_gathered_similarities_gradient_equals_dense_autograd_and_bank_gets_none():
    v0, bank, _ = _sims(seed=7, b=5, n=40)
    idx = torch.tensor([[0, 3, 3, 39], [1, 1, 1, 1], [5, 6, 7, 8], [9, 0, 2, 4], [39, 38, 0, 1]])
    weights = torch.randn(5, 4)
    v = v0.clone().requires_grad_(True)
    dense = DenseScores()(v, bank)
    out = gathered_similarities(v, bank, idx, dense=dense)
    (out * weights).sum().backward()
    ref_v = v0.clone().requires_grad_(True)
    ref = (ref_v @ bank.T).gather(1, idx)
    (ref * weights).sum().backward()
    assert torch.allclose(out, ref.detach(), atol=1e-6)
    assert torch.allclose(v.grad, ref_v.grad, atol=1e-5)
    assert bank.grad is None and not bank.requires_grad
    no_dense = gathered_similarities(v0, bank, idx)
    assert torch.allclose(no_dense, ref.detach(), atol=1e-6)
