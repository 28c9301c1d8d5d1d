"""Memory bank init and EMA update; ramp-up schedules; all_gather_cat without a process group."""
import math

import pytest
import torch
import torch.nn.functional as F
from methods_support import bank_state

from methods.parts.dist_utils import all_gather_cat
from methods.parts.memory_bank import MemoryBank, last_occurrence, uniform_bank_init
from methods.parts.ramp import RampSettings, ramp_weight

torch.set_num_threads(1)


def test_bank_init_is_uniform_with_unit_mean_square_norm_and_not_renormalised():
    bank = MemoryBank(uniform_bank_init(20000, 128, generator=torch.Generator().manual_seed(0)), 0.5)
    bound = math.sqrt(3 / 128)
    assert bank.weight.abs().max() <= bound and bank.weight.abs().max() > 0.99 * bound
    sq = bank.weight.pow(2).sum(1)
    assert sq.mean().item() == pytest.approx(1.0, abs=0.01)
    assert sq.std().item() > 0.05  # rows are not renormalised at init


def test_bank_update_is_normalised_ema_of_visited_rows_only():
    bank = MemoryBank(uniform_bank_init(10, 4, generator=torch.Generator().manual_seed(1)), 0.5)
    before = bank.weight.clone()
    new = F.normalize(torch.randn(3, 4), dim=1)
    bank.update(torch.tensor([2, 7, 2]), new)  # index 2 repeats: the last occurrence wins
    expect2 = F.normalize(0.5 * before[2] + 0.5 * new[2], dim=0)
    expect7 = F.normalize(0.5 * before[7] + 0.5 * new[1], dim=0)
    assert torch.allclose(bank.weight[2], expect2) and torch.allclose(bank.weight[7], expect7)
    untouched = [i for i in range(10) if i not in (2, 7)]
    assert torch.equal(bank.weight[untouched], before[untouched])
    assert torch.allclose(bank.weight[[2, 7]].norm(dim=1), torch.ones(2))


def test_last_occurrence():
    assert last_occurrence(torch.tensor([4, 1, 4, 4, 0])).tolist() == [3, 1, 3, 3, 4]


def test_restored_bank_rejects_nan_and_wrong_size():
    with pytest.raises(ValueError, match="NaN"):
        MemoryBank.empty(5, 3, 0.5).load_state_dict(bank_state(torch.full((5, 3), float("nan"))))
    with pytest.raises(ValueError, match="training samples"):
        MemoryBank.empty(5, 3, 0.5).load_state_dict(bank_state(torch.zeros(4, 3)))
    with pytest.raises(ValueError, match="memory_momentum"):
        MemoryBank.empty(5, 3, 1.0)


def test_ramp_schedules():
    binary = RampSettings("binary", 30)
    assert [ramp_weight(e, binary) for e in (1, 30, 31, 800)] == [0.0, 0.0, 1.0, 1.0]
    gaussian = RampSettings("gaussian", 30)
    assert ramp_weight(15, gaussian) == pytest.approx(math.exp(-5 * 0.25))
    assert ramp_weight(30, gaussian) == 1.0 and ramp_weight(1, gaussian) < 0.01
    assert ramp_weight(1, RampSettings("none", 30)) == 1.0
    with pytest.raises(ValueError, match="ramp type"):
        ramp_weight(1, RampSettings("linear", 30))


def test_all_gather_cat_is_identity_without_process_group():
    t = torch.randn(3, 2, requires_grad=True)
    out = all_gather_cat(t)
    assert torch.equal(out, t.detach()) and not out.requires_grad
