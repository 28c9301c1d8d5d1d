"""The sampled-threshold top-M (the CUDA path of top_m, written in device-agnostic ops, so it runs
here): the exact set of a stable sort (NaN largest, ties to the lower column) on random,
clustered and tie-heavy rows, both of its branches, and the CPU kernel's set."""
import pytest
import torch
from test_methods_top_m import clustered_scores, exact, needs_compiler, reference, special_scores

import methods.parts.top_m as top_m_module
import methods.parts.top_m_gpu as top_m_gpu
from methods.parts.top_m_gpu import threshold_top_m


def tie_heavy_scores(rows: int = 12, n: int = 5000) -> torch.Tensor:
    """Scores on a coarse grid: thousands of entries equal to the m-th largest."""
    g = torch.Generator().manual_seed(5)
    return (torch.randn(rows, n, generator=g) * 4).round() / 4


def check(scores: torch.Tensor, m: int, **options) -> None:
    values, columns = threshold_top_m(scores, m, **options)
    assert torch.equal(columns.sort(dim=1).values, reference(scores, m)), m
    exact(values, scores.gather(1, columns))
    exact(values, values.sort(dim=1, descending=True).values)


CASES = {"normal": torch.randn(6, 20000), "clustered": clustered_scores(), "tie-heavy": tie_heavy_scores(),
         "ties-zeros-inf-nan": special_scores(), "one-column": torch.randn(3, 1)}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("sample_size", [64, top_m_gpu.SAMPLE_SIZE])
def test_same_set_as_a_stable_sort(name, sample_size):
    scores = CASES[name]
    n = scores.shape[1]
    for m in sorted({min(m, n) for m in (1, 7, max(1, n // 300), max(1, n // 40), max(1, n // 2), n)}):
        check(scores, m, sample_size=sample_size)


def test_compaction_and_fallback_rows(monkeypatch):
    """Rows whose survivors fit go through the compacted buffer; a row of one repeated value
    (every entry survives) and a row whose threshold lets too few through take the whole-row sort."""
    scores = torch.randn(5, 8000)
    scores[1] = 0.5  # all 8000 survive: over CAP_FACTOR * m
    calls = []
    real = top_m_gpu.sorted_top_m

    def spy(block, m):
        calls.append(tuple(block.shape))
        return real(block, m)

    monkeypatch.setattr(top_m_gpu, "sorted_top_m", spy)
    check(scores, 50)
    buffer, fallback = calls
    assert buffer[0] == 5 and 50 <= buffer[1] < 8 * 50  # compacted survivors, far shorter than the rows
    assert fallback == (1, 8000)
    calls.clear()
    monkeypatch.setattr(top_m_gpu, "row_thresholds", lambda s, m, size: s.amax(dim=1, keepdim=True))
    check(scores, 50)  # one survivor per row (two equal maxima at most): every row falls back
    assert calls == [(5, 8000)]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_dtypes(dtype):
    check(torch.randn(4, 9000).to(dtype), 100)


def test_leaves_the_global_rng_alone():
    scores = torch.randn(3, 5000)
    state = torch.get_rng_state()
    threshold_top_m(scores, 40)
    assert torch.equal(torch.get_rng_state(), state)


@needs_compiler
@pytest.mark.parametrize("name", ["normal", "clustered", "tie-heavy", "ties-zeros-inf-nan"])
def test_same_set_as_the_cpu_kernel(name):
    scores = CASES[name]
    m = max(1, scores.shape[1] // 50)
    _, kernel_columns = top_m_module.top_m(scores, m)
    assert top_m_module.native_kernel() is not None
    assert torch.equal(threshold_top_m(scores, m)[1].sort(dim=1).values, kernel_columns)
