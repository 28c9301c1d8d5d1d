"""The methods' declared state (methods/state.py): banks and queues built with the method, their
initial draw at the first loss, strict and atomic loading, device moves, and settings checked
without building a method."""
from __future__ import annotations

import pytest
import torch
from method_configs import method_config
from methods_reference import unit_rows
from methods_support import bank_state

from benchmark.core.config import ConfigError
from methods.base import build_method, method_class
from methods.parts.key_queue import random_unit_keys
from methods.parts.memory_bank import uniform_bank_init
from methods.state import Stateful

N, D = 48, 8
CONFIGS = {
    "invp": method_config("invp", n_background=16),
    "insdis": method_config("insdis", variant="softmax"),
    "knn": method_config("knn", n_background=16),
    "and": method_config("knn", variant="and"),
    "mocov2": method_config("mocov2", queue_size=16),
    "interclr": method_config("interclr", queue_size=16, num_clusters=4, negatives=8, pool_size=20,
                              min_cluster=2),
    "clim": method_config("clim", queue_size=16, k=4, num_clusters=4, multires_sizes=[]),
}


def state_tensors(part: Stateful) -> list[torch.Tensor]:
    """Every tensor of ``part``'s declared state, nested parts included."""
    found = []
    for name in part.declared_state():
        value = getattr(part, name)
        found += [value] if isinstance(value, torch.Tensor) else state_tensors(value) if isinstance(value, Stateful) else []
    return found


def test_banks_and_queues_exist_with_their_final_shapes_when_built():
    shapes = {"invp": (N, D), "insdis": (N, D), "and": (N, D), "interclr": (N, D), "clim": (N, D)}
    for label, shape in shapes.items():
        method = build_method(CONFIGS[label], N, D)
        assert tuple(method.bank.weight.shape) == shape and not method.bank.filled, label
        assert tuple(method.state_dict()["bank"]["weight"].shape) == shape, label
    for label in ("mocov2", "interclr", "clim"):
        method = build_method(CONFIGS[label], N, D)
        assert tuple(method.queue.keys.shape) == (16, D) and not method.queue.filled, label
    assert tuple(build_method(CONFIGS["interclr"], N, D).pseudo.centroids.shape) == (4, D)


def test_initial_bank_and_queue_are_drawn_at_the_first_loss_not_at_the_build():
    v, idx = unit_rows(4, D, 1), torch.arange(4)
    torch.manual_seed(0)
    bank_method, queue_method = build_method(CONFIGS["insdis"], N, D), build_method(CONFIGS["mocov2"], N, D)
    torch.manual_seed(5)
    bank_method.loss(v, idx, epoch=1)
    queue_method.loss({"query": v, "key": v}, idx, epoch=1)
    torch.manual_seed(5)
    assert torch.equal(bank_method.bank.weight, uniform_bank_init(N, D))
    assert torch.equal(queue_method.queue.keys, random_unit_keys(16, D))
    assert bank_method.bank.filled and queue_method.queue.filled


def test_a_loaded_bank_is_not_drawn_again():
    method = build_method(CONFIGS["insdis"], N, D)
    bank = unit_rows(N, D, 2)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(bank)})
    method.loss(unit_rows(4, D, 1), torch.arange(4), epoch=1)
    assert torch.equal(method.bank.weight, bank)


def test_embeddings_of_another_width_name_model_embed_dim():
    method = build_method(CONFIGS["invp"], N, D)
    with pytest.raises(ValueError, match="model.embed_dim"):
        method.loss(unit_rows(4, D - 2, 1), torch.arange(4), epoch=1)
    assert not method.bank.filled


def test_loading_wants_exactly_the_declared_keys():
    method = build_method(CONFIGS["invp"], N, D)
    state = method.state_dict()
    with pytest.raises(ValueError, match=r"lacks \['neighbours'\]"):
        method.load_state_dict({"bank": state["bank"]})
    with pytest.raises(ValueError, match=r"unexpected \['bank.extra'\]"):
        method.load_state_dict({**state, "bank": {**state["bank"], "extra": 1}})
    with pytest.raises(ValueError, match=r"'bank.filled' holds 1 \(int\)"):
        method.load_state_dict({**state, "bank": {**state["bank"], "filled": 1}})


def test_a_failed_load_leaves_the_method_as_it_was():
    method = build_method(CONFIGS["invp"], N, D)
    method.load_state_dict({**method.state_dict(), "bank": bank_state(unit_rows(N, D, 3))})
    before = method.state_dict()
    bad = {"bank": bank_state(unit_rows(N, D, 4)), "neighbours": {"table": torch.full((N, 4), N)}}
    with pytest.raises(ValueError, match="outside"):
        method.load_state_dict(bad)
    with pytest.raises(ValueError, match="NaN"):
        method.load_state_dict({**before, "bank": bank_state(torch.full((N, D), float("nan")))})
    assert torch.equal(method.bank.weight, before["bank"]["weight"]) and method.bank.filled
    assert torch.equal(method.neighbours.table, before["neighbours"]["table"])


def test_a_recorded_setting_must_match_and_optional_state_loads_into_its_template():
    ema = build_method({**CONFIGS["insdis"], "variant": "nce", "nce_z": "ema"}, N, D)
    ema.normaliser = torch.tensor(3.0, dtype=torch.float64)
    with pytest.raises(ValueError, match="'nce_z' is 'ema' but this run's is 'frozen'"):
        build_method({**CONFIGS["insdis"], "variant": "nce", "nce_z": "frozen"}, N, D).load_state_dict(ema.state_dict())
    restored = build_method({**CONFIGS["insdis"], "variant": "nce"}, N, D)
    restored.load_state_dict(ema.state_dict())
    assert restored.normaliser.dtype == torch.float64 and float(restored.normaliser) == 3.0


def test_clim_without_mixing_keeps_no_bank_and_refuses_one():
    plain = build_method({**CONFIGS["clim"], "mix": "none"}, N, D)
    mixing = build_method(CONFIGS["clim"], N, D)
    assert plain.bank is None and plain.state_dict()["bank"] is None
    with pytest.raises(ValueError, match="does not keep"):
        plain.load_state_dict(mixing.state_dict())
    with pytest.raises(ValueError, match="which this run keeps"):
        mixing.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("label", list(CONFIGS))
def test_to_moves_every_state_tensor_and_the_diagnostic_labels(label):
    method = build_method(CONFIGS[label], N, D)
    method.set_diagnostic_labels(torch.arange(N) % 3)
    method.to("meta")
    assert method.device.type == "meta" and method.diagnostic_labels.device.type == "meta"
    tensors = state_tensors(method)
    assert tensors and all(t.device.type == "meta" for t in tensors)


def test_settings_are_checked_without_building_a_method():
    with pytest.raises(ConfigError, match="method.temperature must be a number > 0, got 'abc'"):
        method_class("invp").check_settings(method_config("invp", temperature="abc"))
    with pytest.raises(ConfigError, match="method.and_rounds must be a positive integer, got 0"):
        method_class("knn").check_settings(method_config("knn", variant="and", and_rounds=0))
    with pytest.raises(ConfigError, match=r"method.memory_momentum must be a number in \[0, 1\), got 1.0"):
        method_class("insdis").check_settings(method_config("insdis", memory_momentum=1.0))
    with pytest.raises(ConfigError, match="mix_alpha"):
        method_class("clim").check_settings(method_config("clim", mix_alpha=0.0))
    settings = method_class("knn").check_settings(method_config("knn", k=7))
    assert (settings.steps, settings.n_pos) == (1, 7)  # the InvP settings the knn variant stands for
    interclr = method_class("interclr").check_settings(method_config("interclr"))
    assert interclr.queue_size == 65536  # no data size needed
