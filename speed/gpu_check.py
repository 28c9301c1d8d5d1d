"""The GPU check (issue 20): one command, <= 8 minutes on one GPU, one Markdown table.

Headed with the GPU model, driver, CUDA, cuDNN and torch versions and the date; every row a
measured value, its goal and whether it is met; also written as JSON (``--json``, default
speed/gpu_check.json). Exits 1 when any path errors (the table is still printed, the failed row
saying why). Sections, each with a time cap (a row past its section's cap is skipped, saying so):

* ``pretrain`` (cap 200 s): the engine's own training step (``PretrainRun.train_step``: forward,
  method loss, backward, SGD, bank/queue update) of the imagenet profile's ResNet-50 at 224 px,
  batch 128, bank 1,281,167, on synthetic images. The subset of precision x channels_last x
  compile that fits: InvP in fp32 (channels_last off and on), bf16 autocast, fp16 + GradScaler and
  bf16 + torch.compile (the 1-2 minute compile is the largest cost, so once); InsDis and MoCo v2 in
  fp32 and bf16 (channels_last on): the method part is what differs between them, the trunk's
  precision answers are InvP's. Goal of each InvP variant: faster than fp32 without channels_last.
* ``pipeline`` (cap 80 s): the same InvP bf16 step fed by the real input pipeline from a
  synthetic JPEG ImageFolder (PIL decode + the insdis augmentation in DataLoader workers, pinned
  memory, persistent workers), and by torchvision.io.decode_jpeg on the GPU (workers only read
  the files; random-resized crop and flip on the GPU, no colour jitter): share of the
  synthetic-data images/s kept, goal >= 90 %.
* ``method`` (cap 50 s): speed/method_step.py's step at n = 1,281,167, B = 128, D = 128,
  M = 4096: InvP against the floor (one B x n matmul + top-M, goal <= 1.3x) and against the
  fastest ResNet-50 InvP step above (goal <= 5 %); InsDis-softmax for reference.
* ``topm`` (cap 15 s): methods/parts/top_m_gpu.py's threshold selection against torch.topk at
  128 x 1,281,167, k = 4096 (same set checked; goal >= 2x).
* ``probe`` (cap 50 s): speed/probe_memory.py's online multi-head probe (mini ResNet, 9 taps) on
  the JPEG folder against trunk inference over the same loader, goal >= 85 %.
* ``ddp`` (cap 60 s): a DDP ResNet-50 step (bf16, channels_last) on every visible GPU over NCCL
  against the same step without DDP on each: goal >= 90 % per GPU; skipped with one GPU.

``--tiny`` (with ``--device cpu``: a minute) runs every path at tiny sizes (mini ResNet, batch 4,
bank 2000, 520 small JPEGs, torch.compile with the eager backend, DDP over 2 gloo processes, no
time caps), so that a CPU test exercises the whole script; its numbers mean nothing.

    python speed/gpu_check.py                       # on a CUDA machine
    python speed/gpu_check.py --device cpu --tiny --json /tmp/gpu_check.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder
from torchvision.io import decode_jpeg
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.core.distributed import DistContext  # noqa: E402
from benchmark.data.augment import train_transform  # noqa: E402
from benchmark.engine.data import PretrainData, SeededAugmentation  # noqa: E402
from benchmark.engine.loop import PretrainRun  # noqa: E402
from benchmark.engine.wiring import build_encoder, build_optimizer  # noqa: E402
from benchmark.harness.schema import resolve_run  # noqa: E402
from methods.base import method_class  # noqa: E402
from methods.parts.top_m_gpu import threshold_top_m  # noqa: E402
from speed.method_step import METHODS, bench_size, pool_option, synchronize, time_it  # noqa: E402
from speed.probe_memory import HOLDOUT, measure  # noqa: E402

DEFAULT_JSON = Path(__file__).with_name("gpu_check.json")
CAPS = {"pretrain": 200.0, "pipeline": 80.0, "method": 50.0, "topm": 15.0, "probe": 50.0, "ddp": 60.0}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EPOCH = 100  # past every ramp-up: each method's full loss


@dataclass(frozen=True)
class Sizes:
    """What one check run measures at: the issue's shapes, or tiny ones (``--tiny``)."""

    batch: int = 128
    image: int = 224  # the side of the synthetic images (the augmentation's crop)
    augment: str = "insdis"  # the pipeline's augmentation recipe (data.augment)
    bank: int = 1_281_167
    pool: int = 4096
    dim: int = 128
    steps: int = 10
    warmup: int = 3
    jpegs: int = 2048
    jpeg_side: int = 400
    model: tuple[str, ...] = ()
    trunk: str = "ResNet-50"
    compile_backend: str = "inductor"


# 32 px (the cifar recipe's crops): this torch's CPU channels_last backward of the mini ResNet
# corrupts the heap at 64 px and more (seen with torch 2.14.1; at 32 px it runs)
TINY = Sizes(batch=4, image=32, bank=2000, pool=32, steps=2, warmup=1, jpegs=HOLDOUT + 20, jpeg_side=40,
             model=("model={backbone: mini_resnet, width: 4, depths: [1, 1, 1, 1], in_channels: 3, head: linear, "
                    "embed_dim: 128, init: pytorch}",), augment="cifar", trunk="mini ResNet",
             compile_backend="eager")


@dataclass
class Row:
    """One measurement: its value as text, the goal, and met / not met / skipped / error."""

    section: str
    name: str
    value: str = "-"
    goal: str = "-"
    met: str = "-"
    number: float | None = None


class Check:
    """The rows so far, each section's clock against its cap in ``caps`` (seconds), and how to
    add a row that may fail or be skipped."""

    def __init__(self, caps: dict[str, float]) -> None:
        self.rows: list[Row] = []
        self.caps = caps
        self.started: dict[str, float] = {}

    def row(self, section: str, name: str, measure_row: Callable[[], tuple[float, str, str, bool | None]]) -> Row:
        """Run ``measure_row`` -> (number, value text, goal text, met or None) unless the section's
        cap is spent; an exception becomes the row's value."""
        start = self.started.setdefault(section, time.perf_counter())
        row = Row(section, name)
        if time.perf_counter() - start > self.caps[section]:
            row.value, row.met = f"skipped: the section's {self.caps[section]:.0f} s cap was spent", "skipped"
        else:
            try:
                row.number, row.value, row.goal, met = measure_row()
                row.met = "-" if met is None else ("met" if met else "not met")
            except Exception as error:  # noqa: BLE001 - a failed path is a row, and the exit code
                last = ([line for line in str(error).splitlines() if line.strip()] or [""])[-1].strip()
                row.value, row.met = f"error: {type(error).__name__}: {last[:200]}", "error"
        self.rows.append(row)
        print(f"[{section}] {name}: {row.value} ({row.met})", file=sys.stderr, flush=True)
        return row

    def failed(self) -> bool:
        return any(row.met == "error" for row in self.rows)


def environment(device: torch.device) -> dict[str, str]:
    """GPU model, driver, CUDA, cuDNN and torch versions, and the date (UTC)."""
    header = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "torch": torch.__version__, "cuda": str(torch.version.cuda),
              "cudnn": str(torch.backends.cudnn.version()), "device": str(device)}
    if device.type == "cuda":
        header["gpu"] = f"{torch.cuda.get_device_name(device)} x {torch.cuda.device_count()}"
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            header["driver"] = subprocess.run(query, capture_output=True, text=True, check=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            header["driver"] = "unknown (no nvidia-smi)"
    else:
        header.update(gpu="none (CPU run)", driver="-")
    return header


class Placeholder(Dataset):
    """A dataset of ``n`` samples that is never read: sizes the bank of a synthetic-input run."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> Any:
        raise IndexError("synthetic-input runs read no samples")


def engine_run(method: str, sizes: Sizes, device: torch.device, base: Dataset, workers: int, run_dir: Path,
               amp: str | None, channels_last: bool) -> PretrainRun:
    """The engine's PretrainRun of the imagenet profile's ``method`` over ``base`` (precision
    ``amp``: None = fp32, bfloat16 or float16), pool / queue of ``sizes.pool``."""
    pool = pool_option(METHODS[{"insdis": "insdis-nce"}.get(method, method)], sizes.pool)
    overrides = [f"pretrain.batch_size={sizes.batch}", f"pretrain.bn_batch={sizes.batch}",
                 f"pretrain.amp={str(amp is not None).lower()}", f"pretrain.amp_dtype={amp or 'bfloat16'}",
                 f"pretrain.channels_last={str(channels_last).lower()}", "pretrain.progress=false",
                 "pretrain.checkpoint_every_steps=0", f"data.num_workers={workers}", f"data.augment={sizes.augment}",
                 *sizes.model,
                 *(f"method.{key}={value}" for key, value in pool.items())]
    cfg = resolve_run("imagenet", method, overrides)
    views = method_class(method).view_sizes(cfg.method)
    augmentation = train_transform(cfg.data.augment, views)
    train = SeededAugmentation(base, range(len(base)), augmentation, int(cfg.seed))
    no_holdout = SeededAugmentation(base, [], augmentation, int(cfg.seed))  # the monitor never runs here
    data = PretrainData(train, torch.zeros(len(base), dtype=torch.long), [], [], torch.zeros(0, dtype=torch.long), 1,
                        no_holdout)
    return PretrainRun(cfg, run_dir, DistContext(0, 1, 0, device), data)


def synthetic_rate(run: PretrainRun, sizes: Sizes, device: torch.device) -> float:
    """Images/s of the run's training step on random images already on the device."""
    names = run.parts.method.view_sizes(run.parts.method.config)

    def images() -> torch.Tensor:
        return torch.randn(sizes.batch, 3, sizes.image, sizes.image, device=device)

    batch = {name: images() for name in names} if names else images()

    def step() -> None:
        run.train_step(batch, torch.randint(0, sizes.bank, (sizes.batch,), device=device), EPOCH, time.perf_counter())

    return sizes.batch / statistics.median(time_it(step, device, sizes.steps, sizes.warmup))


def pretrain_section(check: Check, sizes: Sizes, device: torch.device, run_dir: Path) -> dict[str, float]:
    """The ResNet-50 step rows; returns the images/s of each InvP variant measured."""
    bank = Placeholder(sizes.bank)
    rates: dict[str, float] = {}
    variants = [("invp", None, False, False), ("invp", None, True, False), ("invp", "bfloat16", True, False),
                ("invp", "float16", True, False), ("invp", "bfloat16", True, True),
                ("insdis", None, True, False), ("insdis", "bfloat16", True, False),
                ("mocov2", None, True, False), ("mocov2", "bfloat16", True, False)]
    for method, amp, channels_last, compiled in variants:
        label = (f"{method} {'fp32' if amp is None else ('bf16 autocast' if amp == 'bfloat16' else 'fp16 + GradScaler')}, "
                 f"channels_last {'on' if channels_last else 'off'}, compile {'on' if compiled else 'off'}")

        def measure_row() -> tuple[float, str, str, bool | None]:
            run = engine_run(method, sizes, device, bank, 0, run_dir, amp, channels_last)
            if compiled:
                run.views.model = torch.compile(run.views.model, backend=sizes.compile_backend)
            rate = synthetic_rate(run, sizes, device)
            if method == "invp":
                rates[label] = rate
            baseline = next(iter(rates.values()), None)
            if method != "invp" or baseline is None or baseline == rate:
                return rate, f"{rate:.1f} img/s", "-", None
            return rate, f"{rate:.1f} img/s ({rate / baseline:.2f}x fp32)", "faster than fp32, channels_last off", rate > baseline

        if amp == "float16" and device.type != "cuda":
            check.rows.append(Row("pretrain", f"{sizes.trunk} step, {label}", "skipped: fp16 autocast needs CUDA "
                                  "(the engine refuses it on CPU)", met="skipped"))
            continue
        check.row("pretrain", f"{sizes.trunk} step, {label}", measure_row)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rates


def write_jpegs(root: Path, count: int, side: int) -> Path:
    """An ImageFolder of ``count`` smooth random JPEGs (ImageNet-like sizes and compression) in 10 classes."""
    rng = np.random.default_rng(0)
    for i in range(count):
        path = root / f"class{i % 10}" / f"{i}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (side // 8 + 1, side // 8 + 1, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((side, side * 7 // 8), Image.BICUBIC).save(path, quality=90)
    return root


def read_bytes(path: str) -> bytes:
    """A file's bytes (the workers run no torch op: a forked worker's torch thread pool can hang)."""
    return Path(path).read_bytes()


def collate_files(batch: list[tuple[bytes, int]]) -> list[torch.Tensor]:
    """The encoded files of a batch as uint8 tensors (decoded later, on the GPU)."""
    return [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data, _ in batch]


def gpu_augment(images: list[torch.Tensor], side: int) -> torch.Tensor:
    """Random-resized crop to ``side`` (scale 0.2-1) and flip of decoded uint8 images, normalised."""
    out = []
    for image in images:
        top, left, height, width = RandomResizedCrop.get_params(image, (0.2, 1.0), (3 / 4, 4 / 3))
        crop = TF.resized_crop(image, top, left, height, width, [side, side], antialias=True)
        out.append(crop.flip(-1) if torch.rand(()) < 0.5 else crop)
    batch = torch.stack(out).float().div_(255)
    return TF.normalize(batch, MEAN, STD)


def timed_batches(batches: Callable[[], Any], train: Callable[[Any], None], sizes: Sizes, device: torch.device) -> float:
    """Images/s of ``train`` over batches from ``batches()`` (re-created per epoch), after the
    warm-up. The epoch it ends in is read to its end (untrained), so that no worker is still
    sending batches when the loader goes."""
    done, start, rate = 0, 0.0, None
    while rate is None:
        for batch in batches():
            if rate is not None:
                continue
            train(batch)
            done += 1
            if done == sizes.warmup:
                synchronize(device)
                start = time.perf_counter()
            if done == sizes.warmup + sizes.steps:
                synchronize(device)
                rate = sizes.steps * sizes.batch / (time.perf_counter() - start)
    return rate


def pipeline_section(check: Check, sizes: Sizes, device: torch.device, folder: Path, run_dir: Path, workers: int) -> None:
    """The InvP bf16 step fed by the real pipeline (PIL in workers) and by GPU decode, against synthetic input."""
    base = ImageFolder(str(folder))
    synthetic: dict[str, float] = {}

    def share(rate: float) -> tuple[float, str, str, bool]:
        kept = rate / synthetic["rate"]
        return kept, f"{rate:.1f} img/s = {100 * kept:.0f} % of synthetic", ">= 90 % of synthetic", kept >= 0.9

    def reference() -> tuple[float, str, str, None]:
        run = engine_run("invp", replace(sizes, bank=len(base)), device, base, workers, run_dir, "bfloat16", True)
        synthetic["run"], synthetic["rate"] = run, synthetic_rate(run, replace(sizes, bank=len(base)), device)
        return synthetic["rate"], f"{synthetic['rate']:.1f} img/s", "-", None

    def pil_workers() -> tuple[float, str, str, bool]:
        run: PretrainRun = synthetic["run"]

        def epochs() -> Any:
            run.data.train.epoch += 1
            run.sampler.set_epoch(run.data.train.epoch)
            return run.loader

        return share(timed_batches(epochs, lambda b: run.train_step(b[0], b[1], EPOCH, time.perf_counter()), sizes, device))

    def gpu_decode() -> tuple[float, str, str, bool]:
        run: PretrainRun = synthetic["run"]
        files = ImageFolder(str(folder), loader=read_bytes)
        loader = DataLoader(files, batch_size=sizes.batch, shuffle=True, drop_last=True, num_workers=workers,
                            collate_fn=collate_files, pin_memory=device.type == "cuda", persistent_workers=workers > 0)

        def train(encoded: list[torch.Tensor]) -> None:
            images = gpu_augment(decode_jpeg(encoded, device=device), sizes.image)
            images = images.contiguous(memory_format=torch.channels_last)
            run.train_step(images, torch.randint(0, len(base), (len(encoded),), device=device), EPOCH, time.perf_counter())

        return share(timed_batches(lambda: loader, train, sizes, device))

    name = f"InvP bf16 step, {len(base)} JPEGs ~{sizes.jpeg_side} px"
    check.row("pipeline", f"{name}: synthetic input (reference)", reference)
    check.row("pipeline", f"{name}: PIL decode + {sizes.augment} augmentation in {workers} workers", pil_workers)
    check.row("pipeline", f"{name}: torchvision decode_jpeg on the {device.type.upper()}, crop + flip there", gpu_decode)
    synthetic.clear()


def method_section(check: Check, sizes: Sizes, device: torch.device, invp_rates: dict[str, float]) -> None:
    """speed/method_step.py's InvP, InsDis-softmax and floor rows at the bank size."""
    args = argparse.Namespace(batch=sizes.batch, dim=sizes.dim, pool=sizes.pool, methods=["invp", "insdis-softmax"],
                              reps=sizes.steps, warmup=sizes.warmup)
    times: dict[str, float] = {}

    def measure_rows() -> tuple[float, str, str, bool]:
        for row in bench_size(sizes.bank, args, device):
            times[row["method"]] = statistics.median(row["times"])
        ratio = times["invp"] / times["floor (matmul + top-M)"]
        return ratio, f"{1e3 * times['invp']:.2f} ms = {ratio:.2f}x the floor ({1e3 * times['floor (matmul + top-M)']:.2f} ms)", \
            "<= 1.3x floor", ratio <= 1.3

    shape = f"n={sizes.bank}, B={sizes.batch}, D={sizes.dim}, M={sizes.pool}"
    check.row("method", f"InvP method step / floor (matmul + top-M), {shape}", measure_rows)

    def against_trunk() -> tuple[float, str, str, bool]:
        step = sizes.batch / max(invp_rates.values())
        share = times["invp"] / step
        return share, f"{100 * share:.1f} % of the fastest {sizes.trunk} InvP step ({1e3 * step:.1f} ms)", "<= 5 %", share <= 0.05

    check.row("method", f"InvP method step / {sizes.trunk} step", against_trunk)
    check.row("method", "InsDis-softmax method step (reference)",
              lambda: (times["insdis-softmax"], f"{1e3 * times['insdis-softmax']:.2f} ms", "-", None))


def topm_section(check: Check, sizes: Sizes, device: torch.device) -> None:
    """The threshold top-M against torch.topk on cosine scores of the method step's shape."""

    def measure_row() -> tuple[float, str, str, bool]:
        bank = F.normalize(torch.randn(sizes.bank, sizes.dim, device=device), dim=1)
        scores = F.normalize(torch.randn(sizes.batch, sizes.dim, device=device), dim=1) @ bank.T
        fast = threshold_top_m(scores, sizes.pool)[0].sort(dim=1).values
        if not torch.equal(fast, scores.topk(sizes.pool, dim=1).values.sort(dim=1).values):
            raise AssertionError("the threshold top-M selected other values than torch.topk")
        ours = statistics.median(time_it(lambda: threshold_top_m(scores, sizes.pool), device, sizes.steps, sizes.warmup))
        theirs = statistics.median(time_it(lambda: scores.topk(sizes.pool, dim=1), device, sizes.steps, sizes.warmup))
        return theirs / ours, f"{1e3 * ours:.2f} ms vs torch.topk {1e3 * theirs:.2f} ms = {theirs / ours:.2f}x", \
            ">= 2x torch.topk", theirs / ours >= 2

    check.row("topm", f"top-{sizes.pool} of {sizes.batch} x {sizes.bank} (same set as torch.topk)", measure_row)


def probe_section(check: Check, sizes: Sizes, device: torch.device, folder: Path, workers: int) -> None:
    def measure_row() -> tuple[float, str, str, bool]:
        result = measure(folder, sizes.batch, 32, workers, device)
        kept = result["probe_img_s"] / result["inference_img_s"]
        return kept, f"{result['probe_img_s']:.0f} vs {result['inference_img_s']:.0f} img/s = {100 * kept:.0f} %", \
            ">= 85 % of inference", kept >= 0.85

    check.row("probe", f"online probe (mini ResNet, {len(ImageFolder(str(folder)))} JPEGs, 32 px) / trunk inference", measure_row)


def ddp_worker(rank: int, world: int, port: int, sizes: Sizes, out: Path) -> None:
    """One rank of the DDP row: the ResNet-50 step alone, then in DDP; rank 0 writes both rates."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    cuda = out.suffix == ".cuda"
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        cfg = resolve_run("imagenet", "invp", list(sizes.model))
        encoder = build_encoder(cfg.model).to(device).to(memory_format=torch.channels_last)
        x = torch.randn(sizes.batch, 3, sizes.image, sizes.image, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, int(cfg.model.embed_dim), (sizes.batch,), device=device)
        rates = []
        for model in (encoder, torch.nn.parallel.DistributedDataParallel(encoder, device_ids=[rank] if cuda else None)):
            optimizer = build_optimizer(model.parameters(), cfg.pretrain.optimizer)

            def step() -> None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x).float(), y)
                loss.backward()
                optimizer.step()

            rates.append(sizes.batch / statistics.median(time_it(step, device, sizes.steps, sizes.warmup)))
        if rank == 0:
            out.with_suffix(".json").write_text(json.dumps(rates))
    finally:
        dist.destroy_process_group()


def ddp_section(check: Check, sizes: Sizes, device: torch.device, scratch: Path) -> None:
    world = torch.cuda.device_count() if device.type == "cuda" else 2
    if world < 2:
        check.rows.append(Row("ddp", "NCCL DDP step", "skipped: one GPU visible", ">= 90 % per GPU", "skipped"))
        return

    def measure_ddp() -> tuple[float, str, str, bool]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        out = scratch / f"ddp.{device.type}"
        mp.spawn(ddp_worker, args=(world, port, sizes, out), nprocs=world, join=True)
        alone, wrapped = json.loads(out.with_suffix(".json").read_text())
        kept = wrapped / alone
        return kept, f"{world * wrapped:.0f} img/s on {world} ({100 * kept:.0f} % of one without DDP)", \
            ">= 90 % per GPU", kept >= 0.9

    check.row("ddp", f"DDP {sizes.trunk} step, bf16, {'NCCL' if device.type == 'cuda' else 'gloo'} x {world}", measure_ddp)


def table(header: dict[str, str], rows: list[Row]) -> str:
    """The Markdown table, headed by the environment."""
    lines = [f"GPU check, {header['date']}: {header['gpu']}, driver {header['driver']}, CUDA {header['cuda']}, "
             f"cuDNN {header['cudnn']}, torch {header['torch']}", "",
             "| section | measurement | value | goal | met |", "|---|---|---|---|---|"]
    lines += [f"| {r.section} | {r.name} | {r.value} | {r.goal} | {r.met} |" for r in rows]
    return "\n".join(lines)


SECTIONS = tuple(CAPS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: every path in seconds (numbers mean nothing)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="which sections to run")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(10, CPUs - 1))")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where the table goes as JSON ({DEFAULT_JSON.name})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device {args.device} but CUDA is not available here; use --device cpu --tiny for "
              "a CPU run of every path", file=sys.stderr)
        return 2
    sizes = TINY if args.tiny else Sizes()
    workers = args.workers if args.workers is not None else (1 if args.tiny else min(10, (os.cpu_count() or 2) - 1))
    torch.manual_seed(0)
    check = Check({name: float("inf") for name in CAPS} if args.tiny else CAPS)
    invp_rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        folder = write_jpegs(scratch_dir / "jpegs", sizes.jpegs, sizes.jpeg_side) \
            if {"pipeline", "probe"} & set(args.sections) else scratch_dir
        if "pretrain" in args.sections or "method" in args.sections:
            invp_rates = pretrain_section(check, sizes, device, scratch_dir / "run")
        if "pipeline" in args.sections:
            pipeline_section(check, sizes, device, folder, scratch_dir / "run", workers)
        if "method" in args.sections:
            method_section(check, sizes, device, invp_rates)
        if "topm" in args.sections:
            topm_section(check, sizes, device)
        if "probe" in args.sections:
            probe_section(check, sizes, device, folder, workers)
        if "ddp" in args.sections:
            ddp_section(check, sizes, device, scratch_dir)
    header = environment(device)
    print(table(header, check.rows))
    args.json.write_text(json.dumps({"header": header, "tiny": args.tiny, "rows": [vars(r) for r in check.rows]}, indent=1))
    return 1 if check.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
