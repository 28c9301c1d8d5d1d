"""MoCo v2 and its shared parts: the InfoNCE loss against a slow per-sample loop, the queue
(FIFO, wrap-around, state), the key encoder (EMA, momentum schedule, shuffle/split-BN), the
two-view data path, the profiles' ``set`` values, and bad input that names the option."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import queue_state
from torch import nn

from benchmark.core.config import ConfigError, resolve
from benchmark.data.augment import NamedViews, train_transform
from benchmark.engine.data import SeededAugmentation
from benchmark.engine.key_encoder import KeyEncoder, shuffle_order
from methods.base import KeyEncoderSpec, build_method
from methods.parts.key_queue import KeyQueue

N, D, K = 64, 8, 16
CONFIG = method_config("mocov2", temperature=0.2, queue_size=K, key_momentum=0.99)


def built(**options) -> torch.nn.Module:
    return build_method({**CONFIG, **options}, N, D)


def with_queue(method, keys: torch.Tensor, pointer: int = 0):
    method.load_state_dict({"queue": queue_state(keys, pointer), "steps": 0})
    return method


def slow_moco_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's L_q per anchor written as a loop: -log(e^{q.k/t} / (e^{q.k/t} + sum_j e^{q.Q_j/t}))."""
    terms = []
    for i in range(q.shape[0]):
        positive = torch.exp(torch.dot(q[i], k[i]) / tau)
        negatives = sum(torch.exp(torch.dot(q[i], queue[j]) / tau) for j in range(queue.shape[0]))
        terms.append(-torch.log(positive / (positive + negatives)))
    return torch.stack(terms).mean()


def test_loss_and_gradient_match_a_slow_loop():
    queue = unit_rows(K, D, 1)
    method = with_queue(built(), queue)
    q = unit_rows(6, D, 2).requires_grad_(True)
    k = unit_rows(6, D, 3)
    out = method.loss({"query": q, "key": k}, torch.arange(6), epoch=1)
    out.loss.backward()
    q_ref = q.detach().clone().requires_grad_(True)
    ref = slow_moco_loss(q_ref, k, queue, 0.2)
    ref.backward()
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(q.grad, q_ref.grad, atol=1e-6)
    assert out.logs["loss_moco"] == pytest.approx(ref.item(), rel=1e-5)
    assert out.logs["positive_similarity"] == pytest.approx((q * k).sum(1).mean().item(), rel=1e-5)


def test_update_enqueues_the_keys_in_order():
    method = with_queue(built(), unit_rows(K, D, 1), pointer=K - 2)
    k = unit_rows(5, D, 3)
    method.loss({"query": unit_rows(5, D, 2), "key": k}, torch.arange(5), epoch=1)
    method.update()
    state = method.state_dict()
    assert state["queue"]["pointer"] == 3 and state["steps"] == 1
    assert torch.equal(state["queue"]["keys"][[K - 2, K - 1, 0, 1, 2]], k)
    with pytest.raises(RuntimeError, match="without a preceding loss"):
        method.update()


def test_queue_is_fifo_and_keeps_the_last_keys_of_a_long_batch():
    queue = KeyQueue(torch.zeros(5, 2))
    first, second = torch.arange(6.0).view(3, 2), 10 + torch.arange(6.0).view(3, 2)
    queue.enqueue(first)
    queue.enqueue(second)
    assert queue.pointer == 1
    expected = torch.stack([second[2], first[1], first[2], second[0], second[1]])
    assert torch.equal(queue.keys, expected)
    long = 100 + torch.arange(14.0).view(7, 2)
    queue.enqueue(long)
    assert queue.pointer == (1 + 7) % 5
    assert torch.equal(queue.keys, long[[4, 5, 6, 2, 3]])  # as seven single writes from slot 1


def test_state_round_trip_resumes_the_same_losses():
    method = built()
    method.loss({"query": unit_rows(4, D, 2), "key": unit_rows(4, D, 3)}, torch.arange(4), epoch=1)
    method.update()
    restored = built()
    restored.load_state_dict(method.state_dict())
    batch = {"query": unit_rows(4, D, 4), "key": unit_rows(4, D, 5)}
    assert method.loss(batch, torch.arange(4), 1).loss.item() == restored.loss(batch, torch.arange(4), 1).loss.item()
    method.update()
    restored.update()
    a, b = method.state_dict(), restored.state_dict()
    assert torch.equal(a["queue"]["keys"], b["queue"]["keys"]) and a["queue"]["pointer"] == b["queue"]["pointer"]
    with pytest.raises(ValueError, match="queue_size"):
        built(queue_size=K + 1).load_state_dict(a)


def test_ema_update_matches_the_formula_and_keys_carry_no_gradient():
    torch.manual_seed(0)
    online = nn.Linear(4, 3)
    key = KeyEncoder(online, bn_splits=1)
    before = [p.detach().clone() for p in key.module.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    key.update(online, 0.9)
    for old, new, q in zip(before, key.module.parameters(), online.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * q)
        assert not new.requires_grad
    keys = key.encode(torch.randn(6, 4, requires_grad=True), seed=0, step=0, autocast=torch.no_grad)
    assert not keys.requires_grad and torch.allclose(keys.norm(dim=1), torch.ones(6))


def test_momentum_schedules():
    constant = KeyEncoderSpec(("key",), 0.99)
    cosine = KeyEncoderSpec(("key",), 0.99, schedule="cosine")
    assert constant.momentum_at(50, 100) == 0.99
    assert cosine.momentum_at(0, 100) == pytest.approx(0.99)
    assert cosine.momentum_at(50, 100) == pytest.approx(1 - 0.01 * 0.5)
    assert cosine.momentum_at(100, 100) == pytest.approx(1.0)


class PerSampleNet(nn.Module):
    """A BatchNorm-free network: keys do not depend on how the batch is split."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def test_shuffled_keys_come_back_in_batch_order():
    torch.manual_seed(0)
    net, images = PerSampleNet(), torch.randn(8, 4)
    keys = KeyEncoder(net, bn_splits=4).encode(images, seed=3, step=5, autocast=torch.no_grad)
    assert torch.allclose(keys, F.normalize(net(images), dim=1), atol=1e-6)


def test_split_bn_normalises_each_shuffled_sub_batch_apart():
    torch.manual_seed(0)
    net, images = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), torch.randn(8, 4)
    keys = KeyEncoder(net, bn_splits=2).encode(images, seed=3, step=5, autocast=torch.no_grad)
    order = shuffle_order(8, 3, 5)
    reference = torch.empty(8, 3)
    for part in order.chunk(2):
        reference[part] = F.normalize(net(images[part]), dim=1)
    assert torch.allclose(keys, reference, atol=1e-6)
    whole = KeyEncoder(net, bn_splits=1).encode(images, seed=3, step=5, autocast=torch.no_grad)
    assert not torch.allclose(keys, whole, atol=1e-3)


def test_two_views_are_independent_and_seeded():
    transform = train_transform("mini_mocov2", ("query", "key"))
    assert isinstance(transform, NamedViews)
    images = [torch.rand(28, 28).mul(255).byte().numpy() for _ in range(3)]
    from PIL import Image

    base = [(Image.fromarray(a), 0) for a in images]
    data = SeededAugmentation(base, [0, 1, 2], transform, seed=5)
    views, position = data[1]
    again, _ = data[1]
    assert position == 1 and set(views) == {"query", "key"} and views["query"].shape == (1, 28, 28)
    assert not torch.equal(views["query"], views["key"])
    assert all(torch.equal(views[name], again[name]) for name in views)


def test_profiles_set_the_mlp_head_and_recipe_for_mocov2_only():
    moco, invp = resolve("mini", "mocov2"), resolve("mini", "invp")
    assert (moco.model.head, moco.data.augment) == ("mlp", "mini_mocov2")
    assert (invp.model.head, invp.data.augment) == ("linear", "mini")
    assert "set" not in moco.method
    assert resolve("mini", "mocov2", ["model.head=linear"]).model.head == "linear"  # --set wins


def test_a_malformed_method_set_names_the_block(tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text("profile: bad\nmodel: {head: linear}\nmethods:\n  mocov2: {set: [model.head]}\n")
    with pytest.raises(ConfigError, match="methods.mocov2.set"):
        resolve(str(profile), "mocov2")
    profile.write_text("profile: bad\nmodel: {head: linear}\nmethods:\n  mocov2: {set: {model.hed: mlp}}\n")
    with pytest.raises(ConfigError, match="model.hed"):
        resolve(str(profile), "mocov2")


@pytest.mark.parametrize("option, value", [
    ("temperature", 0.0), ("queue_size", N), ("queue_size", 0), ("key_momentum", 1.0),
    ("key_momentum_schedule", "linear"), ("bn_splits", 0), ("queue_size", 8.5),
])
def test_bad_options_name_the_option(option, value):
    with pytest.raises(ConfigError, match=option):
        built(**{option: value})


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="queue_size"):
        built(queue_sise=8)


def test_bad_batches_are_refused():
    method = built()
    q, k = unit_rows(4, D, 2), unit_rows(4, D, 3)
    with pytest.raises(ValueError, match="'query' and 'key'"):
        method.loss(q, torch.arange(4), 1)
    with pytest.raises(ValueError, match="'query' and 'key'"):
        method.loss({"query": q}, torch.arange(4), 1)
    with pytest.raises(ValueError, match="not L2-normalised"):
        method.loss({"query": 2 * q, "key": k}, torch.arange(4), 1)
    with pytest.raises(ValueError, match="out of range"):
        method.loss({"query": q, "key": k}, torch.tensor([0, 1, 2, N]), 1)
    with pytest.raises(ValueError, match="differ in shape"):
        method.loss({"query": q, "key": unit_rows(4, D + 1, 3)}, torch.arange(4), 1)
    assert math.isfinite(method.loss({"query": q, "key": k}, torch.arange(4), 1).loss.item())
