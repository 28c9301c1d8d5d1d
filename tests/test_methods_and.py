"""AND-faithful KNN variant: entropy-ranked anchors, fixed 1-NN neighbourhoods per round."""
import math

import pytest
import torch
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import bank_state

from methods.base import build_method
from methods.knn_positive import ANDCurriculum
from methods.parts.anchor_neighbourhoods import bank_entropies_and_neighbours, select_anchors

torch.set_num_threads(1)
N, D = 40, 6
CONFIG = method_config("knn", variant="and", temperature=0.1, and_rounds=4, and_round_epochs=2,
                       and_anchor_k=1)


def test_entropies_and_neighbours_match_loop():
    bank = unit_rows(N, D, 0)
    entropies, neighbours = bank_entropies_and_neighbours(bank, 0.1, k=2, chunk_size=7)
    for i in range(N):
        logits = [(bank[i] @ bank[j]).item() / 0.1 for j in range(N)]
        z = sum(math.exp(x) for x in logits)
        h = -sum(math.exp(x) / z * (x - math.log(z)) for x in logits)
        assert entropies[i].item() == pytest.approx(h, rel=1e-4)
        others = sorted((j for j in range(N) if j != i), key=lambda j: -logits[j])[:2]
        assert neighbours[i].tolist() == others


def test_select_anchors_takes_lowest_entropy_fraction():
    mask = select_anchors(torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.6]), 0.25)
    assert mask.nonzero().flatten().tolist() == [1, 5]


def test_rounds_anchor_fraction_loss_and_state():
    method = build_method(CONFIG, N, D)
    assert isinstance(method, ANDCurriculum)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(unit_rows(N, D, 1))})
    v, idx = unit_rows(8, D, 2), torch.arange(8)
    method.on_epoch_start(1)
    plain = method.loss(v, idx, epoch=1)
    logits = v @ method.bank.weight.T / 0.1
    assert plain.loss.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, idx).item(), rel=1e-6)
    assert [method.round_of(e) for e in (1, 2, 3, 5, 9, 11, 50)] == [0, 0, 1, 2, 4, 4, 4]
    method.on_epoch_start(5)  # round 2: half the data are anchors
    assert method.round == 2 and int(method.is_anchor.sum()) == N // 2
    out = method.loss(v, idx, epoch=5)
    p = torch.softmax(logits.double(), dim=1)
    want = []
    for b in range(8):
        total = p[b, b] + (p[b, method.anchor_neighbours[b, 0]] if method.is_anchor[b] else 0.0)
        want.append(-math.log(total))
    assert out.loss.item() == pytest.approx(sum(want) / 8, rel=1e-5)
    resumed = build_method(CONFIG, N, D)
    resumed.load_state_dict(method.state_dict())
    assert resumed.round == 2 and torch.equal(resumed.is_anchor, method.is_anchor)
    assert resumed.loss(v, idx, epoch=5).loss.item() == out.loss.item()
