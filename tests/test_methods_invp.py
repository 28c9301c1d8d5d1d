"""InvP: the official step against loop references, ramp-up, graph refresh, state, bad input."""
import math

import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config
from methods_reference import dense_official_losses, official_step_losses, unit_rows
from methods_support import bank_state

from benchmark.core.config import ConfigError
from methods.base import build_method
from methods.invp import InvP
from methods.parts.diagnostics import masked_mean

torch.set_num_threads(1)
N, D = 60, 8
CONFIG = method_config("invp", temperature=0.1, k=3, steps=2, n_pos=5, n_background=16,
                       ramp={"type": "binary", "length": 2})


def make(state_seed=0, **overrides) -> InvP:
    method = build_method({**CONFIG, **overrides}, N, D)
    g = torch.Generator().manual_seed(state_seed)
    table = torch.randint(0, N, (N, method.settings.k), generator=g)
    method.load_state_dict({"bank": bank_state(unit_rows(N, D, state_seed + 1)), "neighbours": {"table": table}})
    return method


def batch(seed=5, b=6):
    g = torch.Generator().manual_seed(seed)
    return unit_rows(b, D, seed + 2).requires_grad_(True), torch.randperm(N, generator=g)[:b]


@pytest.mark.parametrize("overrides", [{}, {"exclusive": False}, {"hard_positive": False}, {"n_pos": 500}])
def test_step_matches_official_loop_reference(overrides):
    method = make(**overrides)
    s = method.settings
    v, idx = batch()
    out = method.loss(v, idx, epoch=3)
    ins, inv = official_step_losses(v.detach(), method.bank.weight, method.neighbours.table, idx, s.temperature,
                                    s.n_background, s.steps, s.n_pos, s.exclusive, s.hard_positive)
    assert out.logs["loss_ins"] == pytest.approx(ins, rel=1e-5)
    assert out.logs["loss_invp"] == pytest.approx(inv, rel=1e-5)
    assert out.loss.item() == pytest.approx(ins + 0.6 * inv, rel=1e-5)


def test_gradient_matches_dense_autograd_and_flows_only_through_embeddings():
    method = make()
    v, idx = batch()
    bank_before = method.bank.weight.clone()
    method.loss(v, idx, epoch=3).loss.backward()
    ref_v = v.detach().clone().requires_grad_(True)
    s = method.settings
    ins, inv = dense_official_losses(ref_v, method.bank.weight, method.neighbours.table, idx, s.temperature,
                                     s.n_background, s.steps, s.n_pos, s.exclusive)
    (ins + 0.6 * inv).backward()
    assert torch.allclose(v.grad, ref_v.grad, atol=1e-5)
    assert method.bank.weight.grad is None and torch.equal(method.bank.weight, bank_before)


def test_binary_ramp_total_is_instance_loss_until_length():
    method = make()
    v, idx = batch()
    warm, on = method.loss(v, idx, epoch=2), method.loss(v, idx, epoch=3)
    assert warm.logs["ramp_weight"] == 0.0 and warm.loss.item() == warm.logs["loss_ins"]
    assert warm.logs["loss_invp"] > 0  # still computed while its weight is 0
    assert on.loss.item() == pytest.approx(on.logs["loss_ins"] + 0.6 * on.logs["loss_invp"], rel=1e-6)


def test_update_refreshes_graph_from_pre_update_bank_and_updates_bank():
    method = make()
    v, idx = batch()
    bank_before = method.bank.weight.clone()
    method.loss(v, idx, epoch=1)
    method.update()
    sims = v.detach() @ bank_before.T
    sims[torch.arange(len(idx)), idx] = -2.0
    for b, i in enumerate(idx.tolist()):
        assert set(method.neighbours.table[i].tolist()) == set(sims[b].topk(3).indices.tolist())
        assert torch.allclose(method.bank.weight[i], F.normalize(0.5 * bank_before[i] + 0.5 * v[b].detach(), dim=0))
    with pytest.raises(RuntimeError, match="without a preceding loss"):
        method.update()


def test_state_round_trip_resumes_exactly():
    a, b = make(), build_method(CONFIG, N, D)
    for step in range(2):
        v, idx = batch(seed=10 + step)
        a.loss(v, idx, epoch=3)
        a.update()
    b.load_state_dict(a.state_dict())
    v, idx = batch(seed=20)
    assert a.loss(v, idx, epoch=3).loss.item() == b.loss(v, idx, epoch=3).loss.item()
    a.update(), b.update()
    assert torch.equal(a.state_dict()["bank"]["weight"], b.state_dict()["bank"]["weight"])
    assert torch.equal(a.state_dict()["neighbours"]["table"], b.state_dict()["neighbours"]["table"])


def test_variants_bfs_all_background_and_any_k():
    v, idx = batch()
    bfs = make(propagation="bfs").loss(v, idx, epoch=3)
    assert bfs.logs["unique_positives"] <= 5 and torch.isfinite(bfs.loss)
    full = make(n_background="all")
    out = full.loss(v, idx, epoch=3)
    ins, _ = official_step_losses(v.detach(), full.bank.weight, full.neighbours.table, idx, 0.1, N, 2, 5, True, True)
    assert out.logs["loss_ins"] == pytest.approx(ins, rel=1e-5) and "pool_precision" not in out.logs
    assert make(k=7).loss(v, idx, epoch=3).logs["unique_candidates"] > 0


def test_knn_variant_equals_invp_with_one_step_and_all_neighbours():
    knn = build_method(method_config("knn", variant="invp", temperature=0.1, k=3, n_background=16), N, D)
    invp = make(steps=1, n_pos=3)
    knn.load_state_dict(invp.state_dict())
    v, idx = batch()
    assert knn.loss(v, idx, epoch=40).loss.item() == pytest.approx(invp.loss(v, idx, epoch=40).loss.item(), rel=1e-6)


def test_label_precision_diagnostics():
    method = make()
    v, idx = batch()
    method.set_diagnostic_labels(torch.zeros(N, dtype=torch.long))
    logs = method.loss(v, idx, epoch=1).logs
    assert logs["pos_precision"] == 1.0 and logs["pool_precision"] == 1.0
    method.set_diagnostic_labels(torch.arange(N))
    logs = method.loss(v, idx, epoch=1).logs
    assert logs["pool_precision"] == 0.0 and logs["hard_pos_sim"] <= logs["easy_pos_sim"]


def test_masked_mean_weighs_valid_entries_and_is_nan_when_none_are():
    values = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    assert masked_mean(values, torch.tensor([[True, False], [True, True]])).item() == pytest.approx(13 / 3)
    assert math.isnan(masked_mean(values, torch.zeros(2, 2, dtype=torch.bool)).item())


def test_bad_input_is_rejected_with_clear_errors():
    method = make()
    v, idx = batch()
    with pytest.raises(ValueError, match="not L2-normalised"):
        method.loss(v * 2, idx, epoch=1)
    with pytest.raises(ValueError, match="out of range"):
        method.loss(v, torch.tensor([0, 1, 2, 3, 4, N]), epoch=1)
    with pytest.raises(ValueError, match="NaN"):
        method.loss(v.detach() * float("nan"), idx, epoch=1)
    method.bank.weight[3] = float("nan")
    with pytest.raises(FloatingPointError, match="1 NaN/inf rows"):
        method.loss(v, idx, epoch=3)
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['n_neg'\]"):
        build_method({**CONFIG, "n_neg": 3}, N, D)
    with pytest.raises(ConfigError, match="propagation"):
        build_method({**CONFIG, "propagation": "dfs"}, N, D)
    with pytest.raises(ConfigError, match="method.k must be a positive integer, got 2.5"):
        build_method({**CONFIG, "k": 2.5}, N, D)
    with pytest.raises(ConfigError, match="k\\+1"):
        build_method({**CONFIG, "n_background": 3}, N, D)


def test_n_background_above_n_is_clamped_with_a_warning():
    with pytest.warns(UserWarning, match="whole bank"):
        method = build_method({**CONFIG, "n_background": 10 * N}, N, D)
    assert method.pool == N and method.pool_is_bank


@pytest.mark.parametrize("tau, top_m, full", [(0.07, 10.6, 11.4), (0.2, 9.2, 10.9)])
def test_losses_at_initialisation_match_spec_simulation(tau, top_m, full):
    """docs/methods/invp.md §Conformance checks, check 3: random anchors against a fresh bank, n = 50 000, M = 4096."""
    torch.manual_seed(0)
    invp = build_method(method_config("invp", temperature=tau), 50000, 128)
    v, idx = F.normalize(torch.randn(64, 128), dim=1), torch.randint(0, 50000, (64,))
    assert invp.loss(v, idx, epoch=1).logs["loss_ins"] == pytest.approx(top_m, abs=0.25)
    insdis = build_method(method_config("insdis", temperature=tau, variant="softmax"), 50000, 128)
    insdis.load_state_dict({**insdis.state_dict(), "bank": invp.state_dict()["bank"]})
    assert insdis.loss(v, idx, epoch=1).loss.item() == pytest.approx(full, abs=0.25)
