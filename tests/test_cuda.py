"""The GPU path, where CUDA exists (skipped elsewhere): AMP engine steps (fp16 + GradScaler, bf16)
stay finite and near fp32; channels_last gives fp32's outputs; the CUDA top-M selects the CPU
kernel's set; InvP / InsDis / MoCo v2 method steps on the GPU equal the CPU's to 1e-4; resume
on the GPU is bit-exact under torch.use_deterministic_algorithms.

Tolerances, stated: after one epoch (6 steps) of the tiny profile, an AMP run's weights are
within 10 % (relative L2 over all parameters; bf16 alone moves them ~5 % on CPU) of fp32's and its epoch loss within 5 %;
channels_last outputs and first-layer gradients within 1e-3 of the largest magnitude of the
contiguous layout's (TF32 off; the kernels of the two layouts sum in other orders)."""
from __future__ import annotations

import warnings
from pathlib import Path

import engine_support as es
import pytest
import torch
import torch.nn.functional as F
from method_configs import method_config
from test_methods_top_m import clustered_scores, needs_compiler
from test_top_m_gpu import tie_heavy_scores

from benchmark.engine import checkpoint as ckpt
from benchmark.engine.pretrain import prepare_run, pretrain
from benchmark.engine.wiring import build_encoder
from methods.base import build_method
from methods.parts.top_m import native_kernel, top_m

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")

GPU_RUN = ("device=cuda", "pretrain.monitor.every=0", "pretrain.checkpoint_every_steps=0")


def weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {f"{part}.{k}": v.float() for part in ("backbone", "head") for k, v in state[part].items()}


def trained(tmp_path: Path, name: str, *overrides: str) -> tuple[dict[str, torch.Tensor], float]:
    """The encoder weights and the epoch loss of one epoch of the tiny profile on the GPU."""
    cfg = es.tiny_config(tmp_path, (*GPU_RUN, "pretrain.epochs=1", *overrides))
    path = pretrain(cfg, tmp_path / name, resume="never")
    return weights(path), es.read_log(tmp_path / name)[-1]["loss"]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_amp_steps_stay_finite_and_near_fp32(tmp_path: Path, dtype: str) -> None:
    fp32, fp32_loss = trained(tmp_path, "fp32")
    amp, amp_loss = trained(tmp_path, dtype, "pretrain.amp=true", f"pretrain.amp_dtype={dtype}")
    assert all(torch.isfinite(v).all() for v in amp.values())
    distance = torch.sqrt(sum(((amp[k] - fp32[k]) ** 2).sum() for k in fp32))
    size = torch.sqrt(sum((v ** 2).sum() for v in fp32.values()))
    assert distance / size <= 0.1
    assert amp_loss == pytest.approx(fp32_loss, rel=0.05)


def test_channels_last_gives_the_same_outputs(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model_cfg = {"backbone": "resnet50", "in_channels": 3, "head": "linear", "embed_dim": 128, "init": "kaiming_xavier"}
    contiguous = build_encoder(model_cfg).cuda()
    last = build_encoder(model_cfg).cuda().to(memory_format=torch.channels_last)
    last.load_state_dict(contiguous.state_dict())
    x = torch.randn(4, 3, 224, 224, device="cuda")
    outputs = []
    for model, images in ((contiguous, x), (last, x.contiguous(memory_format=torch.channels_last))):
        out = model(images)
        out.square().mean().backward()
        outputs.append((out.detach(), next(model.parameters()).grad.clone()))
    (out_a, grad_a), (out_b, grad_b) = outputs
    for a, b in ((out_a, out_b), (grad_a, grad_b)):  # summation order differs between the layouts' kernels
        assert (b - a).abs().max() <= 1e-3 * a.abs().max()


@needs_compiler
@pytest.mark.parametrize("scores, m", [
    (torch.randn(128, 200_000), 4096),
    (F.normalize(torch.randn(128, 128), dim=1) @ F.normalize(torch.randn(1_281_167, 128), dim=1).T, 4096),
    (clustered_scores(rows=16, n=3000), 150),
    (tie_heavy_scores(), 300),
], ids=["normal", "imagenet-shape", "clustered", "tie-heavy"])
def test_gpu_top_m_selects_the_cpu_kernels_set(scores: torch.Tensor, m: int) -> None:
    assert native_kernel() is not None
    _, expected = top_m(scores, m)
    values, columns = top_m(scores.cuda(), m)
    assert torch.equal(columns.sort(dim=1).values.cpu(), expected)
    assert torch.equal(values.cpu(), scores.gather(1, columns.cpu()))


# InsDis' NCE variant draws its noise on the device's generator, so only its softmax variant compares
METHOD_STEPS = {"invp": {"n_background": 256, "n_pos": 10}, "insdis": {"variant": "softmax"},
                "mocov2": {"queue_size": 512}}


@pytest.mark.parametrize("name", list(METHOD_STEPS))
def test_method_steps_on_gpu_equal_cpu(name: str) -> None:
    n, dim, batch = 4000, 128, 64
    bank = F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(9)), dim=1)
    methods = []
    for device in ("cpu", "cuda"):  # the same initial state: the same seed, the same filled bank
        torch.manual_seed(0)
        method = build_method(method_config(name, **METHOD_STEPS[name]), n, dim)
        state = method.state_dict()
        if "bank" in state:  # an unfilled bank or queue fills itself from the device's generator
            state["bank"] = {"weight": bank.clone(), "filled": True}
        if "queue" in state:
            state["queue"] = {"keys": bank[: state["queue"]["keys"].shape[0]].clone(), "pointer": 0, "filled": True}
        method.load_state_dict(state)
        methods.append(method.to(torch.device(device)))
    cpu, gpu = methods
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        raw = {view: torch.randn(batch, dim, generator=g) for view in (cpu.views or ("v",))}
        idx = torch.randperm(n, generator=g)[:batch]
        results = []
        for method, device in ((cpu, "cpu"), (gpu, "cuda")):
            leaves = {view: t.to(device).requires_grad_(True) for view, t in raw.items()}
            unit = {view: F.normalize(t, dim=1) for view, t in leaves.items()}
            out = method.loss(unit if method.views else unit["v"], idx.to(device), epoch=100)
            out.loss.backward()
            method.update()
            results.append((out.loss.item(), {view: t.grad.cpu() for view, t in leaves.items() if t.grad is not None}))
        (loss_cpu, grads_cpu), (loss_gpu, grads_gpu) = results
        assert loss_gpu == pytest.approx(loss_cpu, rel=1e-4, abs=1e-4)
        for view in grads_cpu:
            torch.testing.assert_close(grads_gpu[view], grads_cpu[view], rtol=1e-4, atol=1e-4)
    for key, value in cpu.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(gpu.state_dict()[key].cpu(), value, rtol=1e-4, atol=1e-4)


def test_resume_on_gpu_is_bit_exact_with_deterministic_algorithms(tmp_path: Path, monkeypatch) -> None:
    """Ops without a deterministic CUDA kernel only warn (warn_only): the test lists them when the
    weights differ. (cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first handle.)"""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cfg = es.tiny_config(tmp_path, ("device=cuda", "pretrain.epochs=2", "pretrain.monitor.every=0",
                                            "pretrain.checkpoint_every_steps=2", "pretrain.keep_checkpoints=10"))
            run_dir = tmp_path / "run"
            reference = weights(pretrain(cfg, run_dir, resume="never"))
            oldest, *newer = sorted(ckpt.list_checkpoints(run_dir / "checkpoints"),
                                    key=lambda p: torch.load(p, weights_only=True)["global_step"])
            for path in newer:
                path.unlink()
            assert torch.load(oldest, weights_only=True)["global_step"] == 2
            resumed = weights(prepare_run(cfg, run_dir, resume="auto").run())
    finally:
        torch.use_deterministic_algorithms(False)
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "deterministic" in str(w.message)})
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"weights differ after resume: {different[:5]}; non-deterministic ops: {nondeterministic}"
