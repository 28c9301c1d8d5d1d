"""The top-M pool selection: the CPU radix-select kernel against a sort reference, the torch.topk
fallback, build failure, bad input, and an InvP step that is the same with either path."""
import shutil
import warnings

import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config

import methods.parts.top_m as top_m_module
from methods.base import build_method
from methods.parts.top_m import top_m

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler on PATH")


def reference(scores: torch.Tensor, m: int) -> torch.Tensor:
    """Columns of the m largest entries per row, ties to the lower column, in ascending order."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    return order[:, :m].sort(dim=1).values


def exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def clustered_scores(rows: int = 16, n: int = 3000) -> torch.Tensor:
    """Cosine similarities of clustered unit vectors: most entries in a few float exponent bins."""
    g = torch.Generator().manual_seed(3)
    centres = F.normalize(torch.randn(10, 32, generator=g), dim=1)
    bank = F.normalize(3 * centres[torch.randint(0, 10, (n,), generator=g)] + 0.3 * torch.randn(n, 32, generator=g), dim=1)
    return bank[:rows] @ bank.T


def special_scores() -> torch.Tensor:
    """Few distinct values (ties everywhere), both zeros, infinities and NaN."""
    g = torch.Generator().manual_seed(4)
    scores = torch.randint(-3, 4, (8, 500), generator=g).float()
    scores[0, ::7] = -0.0
    scores[1, ::5] = float("inf")
    scores[2, ::11] = float("-inf")
    scores[3, ::13] = float("nan")
    scores[5, ::17] = -torch.tensor(float("nan"))  # sign bit set: still above +inf
    scores[4] = 1.5  # one value in the whole row
    return scores


@pytest.fixture(params=[pytest.param("native", marks=needs_compiler), "torch"])
def path(request, monkeypatch):
    """Run a test with the compiled kernel and with the torch.topk fallback."""
    if request.param == "torch":
        monkeypatch.setenv(top_m_module.SWITCH, "0")
    return request.param


@needs_compiler
def test_kernel_builds_where_a_compiler_is_present():
    assert top_m_module.native_kernel() is not None


@pytest.mark.parametrize("scores", [torch.randn(5, 1000), clustered_scores(), special_scores(), torch.randn(3, 1)],
                         ids=["normal", "clustered", "ties-zeros-inf-nan", "one-column"])
def test_same_columns_as_the_sort_reference(path, scores):
    n = scores.shape[1]
    for m in sorted({min(m, n) for m in (1, 2, max(1, n // 12), max(1, n // 2), max(1, n - 1), n)}):
        values, columns = top_m(scores, m)
        expected = reference(scores, m)
        if path == "native":
            assert torch.equal(columns, expected), m
        else:  # torch.topk breaks ties its own way: compare the selected values
            exact(values.sort(dim=1).values, scores.gather(1, expected).sort(dim=1).values)
        exact(values, scores.gather(1, columns))
        assert columns.dtype == torch.long and values.shape == columns.shape == (scores.shape[0], m)


@needs_compiler
def test_kernel_parallel_and_non_contiguous_input():
    scores = clustered_scores(rows=40, n=2000)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _, parallel = top_m(scores, 160)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(parallel, reference(scores, 160))
    transposed = scores.T.contiguous().T  # same values, column-major
    assert not transposed.is_contiguous()
    assert torch.equal(top_m(transposed, 160)[1], parallel)


def test_other_dtypes_use_torch_topk():
    scores = torch.randn(4, 300, dtype=torch.float64)
    values, columns = top_m(scores, 30)
    assert values.dtype == torch.float64
    assert torch.equal(columns.sort(dim=1).values, reference(scores, 30))


@pytest.mark.parametrize("m", [0, 301])
def test_bad_m_names_the_row_length(m):
    with pytest.raises(ValueError, match=r"m must be in \[1, 300\]"):
        top_m(torch.randn(2, 300), m)


def test_build_failure_warns_once_and_falls_back(monkeypatch):
    def broken_build():
        raise RuntimeError("Error building extension 'invp_bench_top_m'\nc++: not found")

    monkeypatch.setattr(top_m_module, "_build_kernel", broken_build)
    monkeypatch.setattr(top_m_module, "_kernel", None)
    monkeypatch.setattr(top_m_module, "_kernel_tried", False)
    scores = torch.randn(3, 200)
    with pytest.warns(UserWarning, match=r"top_m\.cpp.*could not be built.*c\+\+: not found.*torch\.topk.*ninja"):
        values, _ = top_m(scores, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        top_m(scores, 20)  # tried once: no second warning
    assert torch.equal(values.sort(dim=1).values, scores.topk(20, dim=1).values.sort(dim=1).values)


def test_invp_step_is_the_same_with_either_path(monkeypatch):
    """The pool's order differs between the paths; losses agree to rounding, graph and bank exactly."""
    outcomes = []
    for disabled in ("1", "0"):
        monkeypatch.setenv(top_m_module.SWITCH, disabled)
        torch.manual_seed(0)
        method = build_method(method_config("invp", n_background=100, n_pos=10, temperature=0.2), 1000, 16)
        logs = []
        for step in range(4):
            g = torch.Generator().manual_seed(step)
            v = F.normalize(torch.randn(32, 16, generator=g), dim=1).requires_grad_(True)
            out = method.loss(v, torch.randperm(1000, generator=g)[:32], epoch=10)
            out.loss.backward()
            logs.append((out.logs["loss_ins"], out.logs["loss_invp"], v.grad.clone()))
            method.update()
        outcomes.append((logs, method.neighbours.table.clone(), method.bank.weight.clone()))
    (native_logs, native_table, native_bank), (torch_logs, torch_table, torch_bank) = outcomes
    for (ins_a, invp_a, grad_a), (ins_b, invp_b, grad_b) in zip(native_logs, torch_logs):
        assert ins_a == pytest.approx(ins_b, rel=1e-5) and invp_a == pytest.approx(invp_b, rel=1e-5)
        assert torch.allclose(grad_a, grad_b, atol=1e-6)
    assert torch.equal(native_table, torch_table)
    assert torch.allclose(native_bank, torch_bank, atol=1e-6)
