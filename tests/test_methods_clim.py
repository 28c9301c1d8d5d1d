"""CLIM (docs/methods/clim.md, §Conformance checks): kNN and center-wise selection against slow loops,
partners in N_k(i) and closer to the centre, the loss against MoCo v2 and a per-sample reference,
empty selections, diagnostics, state round-trip and bad options."""
from __future__ import annotations

import math

import pytest
import torch
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import queue_state

from benchmark.core.config import ConfigError
from methods.base import build_method, method_class
from methods.parts.centre_selection import bank_knn, centre_wise_selection

N, D, Q = 48, 6, 16
CONFIG = method_config("clim", queue_size=Q, k=5, num_clusters=4, kmeans_iterations=5, multires_sizes=[])


def built(**options):
    return build_method({**CONFIG, **options}, N, D)


def with_bank(method, seed: int = 0):
    """``method`` after on_train_start with a random unit bank and a random queue."""
    method.on_train_start(lambda: unit_rows(N, D, seed))
    method.load_state_dict({**method.state_dict(), "queue": queue_state(unit_rows(Q, D, seed + 1))})
    return method


def slow_knn(bank: torch.Tensor, i: int, k: int) -> list[int]:
    sims = [(float(bank[i] @ bank[j]), -j, j) for j in range(bank.shape[0]) if j != i]
    return [j for *_, j in sorted(sims, reverse=True)[:k]]


def slow_nce(q: torch.Tensor, pos: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    positive = torch.exp(q @ pos / tau)
    return -torch.log(positive / (positive + sum(torch.exp(q @ row / tau) for row in queue)))


def test_knn_table_and_selection_match_slow_loops():
    bank = unit_rows(N, D, 3)
    table = bank_knn(bank, 5)
    assert [sorted(row) for row in table.tolist()] == [sorted(slow_knn(bank, i, 5)) for i in range(N)]
    labels = torch.randint(0, 3, (N,), generator=torch.Generator().manual_seed(0))
    centroids = torch.randn(3, D)
    for same in (False, True):
        selected = centre_wise_selection(bank, table, labels, centroids, same_cluster=same)
        for i in range(N):
            mu = centroids[labels[i]]
            for c, j in enumerate(table[i].tolist()):
                want = float(bank[j] @ mu) > float(bank[i] @ mu) and (not same or labels[j] == labels[i])
                assert bool(selected[i, c]) == want


def test_every_partner_is_a_neighbour_closer_to_the_anchor_centre():
    torch.manual_seed(0)
    method = with_bank(built())
    method.on_epoch_start(1)
    tables, bank = method.tables, method.bank.weight
    indices = torch.arange(N)
    views = {"query": torch.randn(N, 1, 8, 8), "key": torch.randn(N, 1, 8, 8)}
    fetched = []
    out = method.prepare_batch(views, indices, lambda idx: fetched.append(idx) or {"query": views["query"][idx]})
    partners, has, kept = method._mix
    assert out["mixed"].shape == views["query"].shape
    assert 0 < int(has.sum()) < N, "the toy set should hold anchors with and without a selection"
    for i in range(N):
        mu = tables.centroids[tables.assignments[i]]
        if has[i]:
            assert partners[i].item() in slow_knn(bank, i, 5)
            assert float(bank[partners[i]] @ mu) > float(bank[i] @ mu)
            assert kept[i] < 1 or torch.equal(out["mixed"][i], views["query"][i])
        else:
            assert not tables.selected[i].any() and partners[i] == i and kept[i] == 1
            assert torch.equal(out["mixed"][i], views["query"][i])
    assert torch.equal(fetched[0], partners[has])


def test_with_mixing_and_multires_off_the_loss_is_mocov2():
    q, k = unit_rows(8, D, 4).requires_grad_(True), unit_rows(8, D, 5)
    queue = {"queue": queue_state(unit_rows(Q, D, 6)), "steps": 0}
    losses = []
    for method in (built(mix="none"), build_method(method_config("mocov2", queue_size=Q), N, D)):
        method.load_state_dict({**method.state_dict(), **queue})
        views = method.prepare_batch({"query": q, "key": k}, torch.arange(8), lambda idx: {})
        out = method.loss(views, torch.arange(8), 1)
        losses.append((out.loss, out.logs, torch.autograd.grad(out.loss, q)[0]))
        method.update()
    assert torch.equal(losses[0][0], losses[1][0]) and losses[0][1] == losses[1][1]
    assert torch.equal(losses[0][2], losses[1][2])
    assert method_class("clim").view_sizes({**CONFIG, "mix": "none"}) == {"query": None, "key": None}


def _mixed_step(method, q, k, mixed, partners, has, kept):
    method._mix = (partners, has, kept)
    return method.loss({"query": q, "key": k, "mixed": mixed}, torch.arange(q.shape[0]), 2)


@pytest.mark.parametrize("target", ["soft", "anchor"])
def test_mixed_term_matches_a_per_sample_reference_and_skips_empty_selections(target):
    torch.manual_seed(0)
    method = with_bank(built(mix_target=target, mix_weight=0.5))
    method.on_epoch_start(1)
    B = 6
    q, k = unit_rows(B, D, 7), unit_rows(B, D, 8)
    mixed = unit_rows(B, D, 9).requires_grad_(True)
    partners, has = torch.tensor([3, 1, 7, 40, 2, 5]), torch.tensor([True, False, True, True, False, True])
    kept = torch.tensor([0.7, 1.0, 0.25, 0.5, 1.0, 0.9])
    out = _mixed_step(method, q, k, mixed, partners, has, kept)
    queue, bank = method.queue.keys, method.bank.weight
    terms = []
    for i in range(B):
        if not has[i]:
            continue
        term = slow_nce(mixed[i], k[i], queue, 0.2)
        if target == "soft":
            term = kept[i] * term + (1 - kept[i]) * slow_nce(mixed[i], bank[partners[i]], queue, 0.2)
        terms.append(term)
    ref_mix = torch.stack(terms).sum() / B
    base = torch.stack([slow_nce(q[i], k[i], queue, 0.2) for i in range(B)]).mean()
    assert out.logs["loss_mix"] == pytest.approx(ref_mix.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx((base + 0.5 * ref_mix).item(), rel=1e-5)
    grad = torch.autograd.grad(out.loss, mixed)[0]
    assert torch.equal(grad[~has], torch.zeros_like(grad[~has])), "an empty selection must add no mixed term"
    assert out.logs["empty_selection"] == pytest.approx(2 / 6)
    assert out.logs["mean_lambda"] == pytest.approx(kept[has].mean().item())


def test_lambda_one_soft_equals_anchor_equals_the_unmixed_query():
    torch.manual_seed(0)
    B = 5
    q, k = unit_rows(B, D, 10), unit_rows(B, D, 11)
    args = (torch.tensor([1, 2, 3, 4, 0]), torch.ones(B, dtype=torch.bool), torch.ones(B))
    values = []
    for target in ("soft", "anchor"):
        method = with_bank(built(mix_target=target))
        method.on_epoch_start(1)
        values.append(_mixed_step(method, q, k, q.clone(), *args).logs["loss_mix"])
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    assert values[0] == pytest.approx(method.intra_loss(q, k)[0].item(), rel=1e-6)


def test_diagnostics_compare_partner_and_plain_knn_precision():
    torch.manual_seed(0)
    method = with_bank(built())
    labels = torch.arange(N) % 3
    method.set_diagnostic_labels(labels)
    method.on_epoch_start(1)
    B = 8
    partners, has = torch.tensor([5, 1, 9, 12, 4, 0, 30, 2]), torch.tensor([1, 0, 1, 1, 0, 1, 1, 1]).bool()
    out = _mixed_step(method, unit_rows(B, D, 1), unit_rows(B, D, 2), unit_rows(B, D, 3), partners, has, torch.ones(B))
    same = [labels[p] == labels[i] for i, p in enumerate(partners.tolist()) if has[i]]
    assert out.logs["pos_precision"] == pytest.approx(float(sum(same)) / len(same))
    neighbours = method.tables.neighbours[:B]
    plain = (labels[neighbours] == labels[:B].view(-1, 1)).float().mean().item()
    assert out.logs["knn_precision"] == pytest.approx(plain)
    assert out.logs["selection_size"] == pytest.approx(method.tables.selected[:B].sum(1).float().mean().item())


def test_tables_wait_for_the_warm_up_and_refresh_on_schedule():
    method = with_bank(built(warmup_epochs=1, refresh_epochs=2))
    method.on_epoch_start(1)
    assert method.tables is None
    views = {"query": torch.zeros(2, 1, 4, 4), "key": torch.zeros(2, 1, 4, 4)}
    assert method.prepare_batch(views, torch.arange(2), lambda idx: {}) is views
    method.on_epoch_start(2)
    first = method.tables
    method.on_epoch_start(3)
    assert method.tables is first
    method.on_epoch_start(4)
    assert method.tables is not first


def test_bank_rows_become_the_latest_keys():
    method = with_bank(built())
    keys = unit_rows(4, D, 12)
    method.loss({"query": unit_rows(4, D, 13), "key": keys}, torch.tensor([3, 9, 9, 1]), 1)
    method.update()
    assert torch.allclose(method.bank.weight[[3, 9, 1]], keys[[0, 2, 3]])


def test_state_round_trip_resumes_identically():
    torch.manual_seed(0)
    method = with_bank(built())
    method.on_epoch_start(1)
    state = method.state_dict()
    restored = build_method({**CONFIG}, N, D)
    restored.load_state_dict(state)
    for a, b in ((method, restored),):
        assert torch.equal(a.bank.weight, b.bank.weight)
        for name in ("neighbours", "selected", "assignments", "centroids"):
            assert torch.equal(getattr(a.tables, name), getattr(b.tables, name))
    views = {"query": torch.randn(6, 1, 8, 8), "key": torch.randn(6, 1, 8, 8)}
    results = []
    for m in (method, restored):
        torch.manual_seed(3)
        out = m.prepare_batch(views, torch.arange(6), lambda idx: {"query": views["query"][idx % 6]})
        results.append((out["mixed"], m._mix[0]))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    bad = {**state, "tables": {**state["tables"], "neighbours": state["tables"]["neighbours"][:, :2]}}
    with pytest.raises(ValueError, match="same options"):
        build_method(CONFIG, N, D).load_state_dict(bad)


def test_a_mixed_view_needs_prepare_batch_and_multires_views_are_required():
    method = with_bank(built())
    method.on_epoch_start(1)
    q = unit_rows(2, D, 1)
    with pytest.raises(RuntimeError, match="prepare_batch"):
        method.loss({"query": q, "key": q, "mixed": q}, torch.arange(2), 1)
    with pytest.raises(ValueError, match="multires0"):
        built(multires_sizes=[4]).loss({"query": q, "key": q}, torch.arange(2), 1)
    with pytest.raises(RuntimeError, match="on_train_start"):
        built().on_epoch_start(1)


@pytest.mark.parametrize("option, value", [
    ("k", 0), ("k", N), ("num_clusters", N + 1), ("kmeans_iterations", 0), ("kmeans_backend", "scipy"), ("refresh_epochs", 0),
    ("mix", "blend"), ("mix_alpha", 0.0), ("mix_target", "partner"), ("mix_weight", -1.0),
    ("multires_weight", -0.5), ("warmup_epochs", -1), ("bank_momentum", 0.0), ("multires_sizes", [0]),
    ("multires_sizes", 21), ("require_same_cluster", "yes"),
])
def test_bad_options_name_the_option(option, value):
    with pytest.raises(ConfigError, match=option):
        built(**{option: value})


def test_cutmix_lambda_of_a_step_is_the_pixel_fraction_kept():
    torch.manual_seed(1)
    method = with_bank(built())
    method.on_epoch_start(1)
    views = {"query": torch.rand(N, 1, 8, 8) + 1.0, "key": torch.zeros(N, 1, 8, 8)}
    out = method.prepare_batch(views, torch.arange(N), lambda idx: {"query": -views["query"][idx]})
    _, has, kept = method._mix
    from_pixels = (out["mixed"] > 0).flatten(1).float().mean(1)
    assert torch.allclose(kept, from_pixels) and math.isclose(float(kept[~has].min()), 1.0)


def test_centre_wise_selection_raises_label_precision_on_a_toy_set():
    """docs/methods/clim.md §Conformance checks, check 4 (a diagnostic, not a guarantee): on 3 noisy labelled blobs, the selected
    neighbours share the anchor's label more often than the plain k nearest do."""
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    bank = torch.nn.functional.normalize(unit_rows(3, 8, 20)[labels] + 0.45 * torch.randn(300, 8, generator=g), dim=1)
    method = build_method({**CONFIG, "k": 10, "num_clusters": 3, "kmeans_iterations": 10, "kmeans_backend": "torch"}, 300, 8)
    method.on_train_start(lambda: bank)
    torch.manual_seed(0)
    method.on_epoch_start(1)
    same = labels[method.tables.neighbours] == labels.view(-1, 1)
    selected = method.tables.selected
    assert (same & selected).sum() / selected.sum() > same.float().mean() + 0.02
