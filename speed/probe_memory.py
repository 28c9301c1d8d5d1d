"""Peak memory and throughput of the online multi-head probe as the dataset grows.

Writes synthetic ImageFolder datasets (``<class>/<i>.png``, small RGB images) of N images for
each N (5k, 20k, 80k unless ``--sizes``/``--scale`` say otherwise), then for each N in a fresh
subprocess: one epoch of the online probe (tasks/probe_sources.py ``FrozenTrunk`` +
tasks/probe.py ``train_heads``: every block tapped, one head per block, a 500-image held-out set
scored before and after the epoch), then one epoch of the inference-only trunk (``backbone(x)``)
over the same training loader. Datasets above 20k images hard-link the same 20k files
again (same decode cost, less disk). Prints one row per N (peak RSS from
``resource.getrusage``, images per wall second and per CPU second of both passes; without
data-loader workers the ratio is taken on CPU seconds, which a busy machine does not skew) and
the two goals: peak RSS at the largest N within 1.2x of the smallest, probe throughput >= 85 %
of inference-only. Last, the cached path's answer to an ImageNet-shaped request (the InvP
17-block probe's 131,072 dims for 1,281,167 images in float16 against the imagenet profile's
64 GB): refused before any image is read, with the numbers (tasks/feature_budget.py).

    python speed/probe_memory.py [--sizes 5000,20000,80000] [--scale 0.25] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset
from torchvision.datasets import ImageFolder

from benchmark.core.config import resolve
from benchmark.models import build_backbone
from speed.method_step import synchronize
from tasks.feature_budget import FeatureBudgetError, check_feature_budget
from tasks.features import resolve_layers
from tasks.probe import ProbeSchedule, train_heads
from tasks.probe_sources import FrozenTrunk
from tasks.transforms import eval_transform, train_transform

CLASSES = 10
HOLDOUT = 500
GRIDS = {"stem": 4, "layer1": 3, "layer2": 2, "layer3": 2, "layer4": 1}
RSS_GOAL, THROUGHPUT_GOAL = 1.2, 0.85


def write_pool(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` random RGB PNGs of ``size`` px under ``folder`` (written once, reused)."""
    rng = np.random.default_rng(0)
    paths = [folder / f"{i}.png" for i in range(count)]
    for path in paths:
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return paths


def write_image_folder(root: Path, pool: list[Path], n: int) -> Path:
    """An ImageFolder of ``n`` images (hard links into ``pool``), ``CLASSES`` class folders."""
    folder = root / f"n{n}"
    for i in range(n):
        target = folder / f"class{i % CLASSES}" / f"{i}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(pool[i % len(pool)], target)
    return folder


def trunk_and_layers() -> tuple[torch.nn.Module, list]:
    """The mini ResNet with two blocks per stage on RGB input: 9 taps (stem + 8 blocks)."""
    cfg = resolve("mini", "invp", ["model.depths=[2,2,2,2]", "model.in_channels=3"])
    torch.manual_seed(0)
    backbone = build_backbone(cfg.model).eval()
    return backbone, resolve_layers("blocks", backbone, GRIDS)


def measure(folder: Path, batch_size: int, size: int, workers: int, device: torch.device | str = "cpu") -> dict:
    """One inference-only epoch, then one online-probe epoch, over the ImageFolder ``folder``, on ``device``."""
    geometry = {"resize": size + size // 8, "crop": size}
    train = ImageFolder(str(folder), transform=train_transform("synthetic", geometry))
    held_out = Subset(ImageFolder(str(folder), transform=eval_transform("synthetic", geometry)),
                      range(HOLDOUT))
    backbone, layers = trunk_and_layers()
    source = FrozenTrunk(backbone.to(device), layers, train, {"holdout": held_out}, device, seed=0,
                         num_workers=workers)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))

    def inference() -> None:
        with torch.no_grad(), source.autocast():  # as the probe's trunk runs (bf16 on CUDA)
            for images, _ in source.images("train", order.split(batch_size), 0):
                backbone(images.to(source.device, non_blocking=True))
        synchronize(torch.device(device))

    def probe() -> None:
        train_heads(source, CLASSES, ProbeSchedule(epochs=1, lr=0.1, batch_size=batch_size),
                    [0.1], device, 0)
        synchronize(torch.device(device))

    probe_wall, probe_cpu = timed(probe)  # first: it pays for the cold file cache (conservative)
    inference_wall, inference_cpu = timed(inference)
    probe_images = len(train) + 2 * HOLDOUT  # the held-out set is scored before and after
    return {
        "n": len(train), "taps": len(layers), "peak_rss_mb": round(peak_rss_mb(), 1),
        "inference_img_per_cpu_s": round(len(train) / inference_cpu, 1),
        "probe_img_per_cpu_s": round(probe_images / probe_cpu, 1),
        "inference_img_s": round(len(train) / inference_wall, 1),
        "probe_img_s": round(probe_images / probe_wall, 1),
    }


def timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()`` (CPU: this process, so data-loader workers are not in it)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_rss_mb() -> float:
    """This process's peak resident set (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


IMAGENET_TRAIN, INVP_PROBE_DIMS, PROFILE_MEM_GB = 1_281_167, 131_072, 64.0


def cached_path_refusal() -> str:
    """The cached path's refusal of an ImageNet-shaped 17-block probe (its message)."""
    try:
        check_feature_budget(IMAGENET_TRAIN, [INVP_PROBE_DIMS], "float16", PROFILE_MEM_GB,
                             "tasks.linear: imagenet train features", "linear")
    except FeatureBudgetError as refusal:
        return str(refusal)
    raise SystemExit("the cached path accepted an ImageNet-shaped 17-block probe within 64 GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,80000", help="dataset sizes N")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every N (e.g. 0.25)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data", type=Path, default=None, help="folder for the images (temp)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child is not None:  # one measurement, in its own process
        print(json.dumps(measure(args.child, args.batch_size, args.image_size, args.workers)))
        return
    sizes = [max(int(int(n) * args.scale), 2 * HOLDOUT) for n in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as temp:
        root = args.data or Path(temp)
        pool_dir = root / "pool"
        pool_dir.mkdir(parents=True, exist_ok=True)
        pool = write_pool(pool_dir, min(max(sizes), 20000), args.image_size)
        rows = []
        for n in sizes:
            folder = write_image_folder(root, pool, n)
            child = [sys.executable, __file__, "--child", str(folder), "--batch-size",
                     str(args.batch_size), "--image-size", str(args.image_size), "--workers",
                     str(args.workers), "--threads", str(args.threads)]
            out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    rss_ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    unit = "img_per_cpu_s" if args.workers == 0 else "img_s"  # CPU time: robust to a busy machine
    worst = min(r[f"probe_{unit}"] / r[f"inference_{unit}"] for r in rows)
    print(json.dumps({
        "rss_ratio_largest_over_smallest": round(rss_ratio, 3), "rss_goal": RSS_GOAL,
        "probe_over_inference_worst": round(worst, 3), "throughput_goal": THROUGHPUT_GOAL,
        "throughput_measured_in": unit,
        "threads": args.threads, "workers": args.workers, "image_size": args.image_size,
    }))
    print(json.dumps({"cached_path_imagenet_shaped": cached_path_refusal()}))


if __name__ == "__main__":
    main()
