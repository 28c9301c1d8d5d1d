"""The M largest entries of every row of a score matrix: InvP's top-M pool (docs/methods/invp.md §Official step, step 4).

On CPU, torch.topk's per-row selection over (value, index) pairs is the one part of an InvP
step that InsDis does not have, and at the mini scale it costs more than the rest of the
method. ``top_m`` runs a radix select (``methods/parts/native/top_m.cpp``) there instead, built once
with torch's C++ extension loader (a C++ compiler and ninja; ~25 s, cached under
``~/.cache/torch_extensions`` or ``$TORCH_EXTENSIONS_DIR``). Where it cannot be built, or with
``BENCHMARK_NATIVE_TOPM=0``, or for other non-CUDA or non-float32 scores, ``top_m`` uses
torch.topk: the same set of columns (ties at the cut aside), in another order. On CUDA, rows at
least ``THRESHOLD_MIN_RATIO * m`` long take the sampled-threshold selection
(methods/parts/top_m_gpu.py: the same set, ties at the cut to the lower column, faster than
torch.topk at 128 x 1.28 M, k = 4096); shorter ones torch.topk.
"""
from __future__ import annotations

import logging
import os
import shutil
import sysconfig
import warnings
from pathlib import Path
from types import ModuleType

import torch

from methods.parts.top_m_gpu import threshold_top_m

SOURCE = Path(__file__).with_name("native") / "top_m.cpp"
SWITCH = "BENCHMARK_NATIVE_TOPM"  # 0: always torch.topk
THRESHOLD_MIN_RATIO = 16  # CUDA rows shorter than this many m: torch.topk is as fast
_log = logging.getLogger(__name__)
_kernel: ModuleType | None = None
_kernel_tried = False


def _build_kernel() -> ModuleType:
    """Compile (or load from torch's extension cache) the radix-select kernel."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" notice
    from torch.utils.cpp_extension import load

    scripts = sysconfig.get_path("scripts")  # pip's ninja lands here, maybe off PATH (un-activated venv)
    if shutil.which("ninja") is None and shutil.which("ninja", path=scripts):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    _log.info("loading the CPU top-M kernel (compiled once, ~25 s)")
    return load("invp_bench_top_m", [str(SOURCE)], extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"],
                verbose=False)  # OpenMP: at::parallel_for runs serially without it


def native_kernel() -> ModuleType | None:
    """The compiled kernel, or None (disabled, or the build failed: warned once, with the fix)."""
    global _kernel, _kernel_tried
    if os.environ.get(SWITCH, "1") == "0":
        return None
    if not _kernel_tried:
        _kernel_tried = True
        try:
            _kernel = _build_kernel()
        except Exception as error:  # noqa: BLE001 - any build failure falls back to torch.topk
            reason = (str(error).strip().splitlines() or [repr(error)])[-1]
            warnings.warn(
                f"the CPU top-M kernel ({SOURCE}) could not be built ({type(error).__name__}: {reason}); "
                f"using torch.topk (same pools, slower). It needs a C++ compiler, ninja (pip install "
                f"ninja) and the Python headers; set {SWITCH}=0 to skip the attempt", stacklevel=3)
    return _kernel


def top_m(scores: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, columns), each (B, m): the m largest entries of each row of ``scores`` (B, n).

    Order within a row is unspecified (the CPU kernel returns ascending columns, the CUDA
    threshold path descending values; both keep the lower columns among entries equal to the
    m-th largest). No autograd: the caller
    gathers what it differentiates.
    """
    if not 1 <= m <= scores.shape[-1]:
        raise ValueError(f"top_m: m must be in [1, {scores.shape[-1]}] (the row length), got {m}")
    if scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.dim() == 2:
        kernel = native_kernel()
        if kernel is not None:
            values, columns = kernel.top_m(scores.detach(), m)
            return values, columns
    if scores.device.type == "cuda" and scores.dim() == 2 and scores.is_floating_point() \
            and scores.shape[1] >= THRESHOLD_MIN_RATIO * m:
        return threshold_top_m(scores.detach(), m)
    result = scores.detach().topk(m, dim=-1, sorted=False)
    return result.values, result.indices
