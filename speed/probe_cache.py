"""Probe-epoch time with the feature cache vs re-extracting features every epoch.

One probe epoch = the features of N training images (read from the on-disk cache, or
recomputed by the frozen backbone as a probe without a cache must do) plus one epoch of the
linear head on them. Runs the mini profile's backbone (random init) on Fashion-MNIST when it
is prepared, else on scikit-learn's digits. Target: cached >= 20x faster.

    python speed/probe_cache.py [--images 5000] [--repeats 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Subset

from benchmark.core.config import resolve
from benchmark.data import get_dataset, resolve_data_root
from benchmark.models import build_backbone
from tasks.features import FeatureLayer, cached_features
from tasks.probe import ProbeSchedule, train_probe
from tasks.transforms import eval_transform


def _dataset(images: int):
    root = resolve_data_root(None)
    name = "fashion_mnist" if not get_dataset("fashion_mnist").check(root) else "digits"
    data = get_dataset(name).build(root, "train", eval_transform(name))
    return name, Subset(data, range(min(images, len(data))))


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = resolve("mini", "invp")
    backbone = build_backbone(cfg.model).eval()
    name, data = _dataset(args.images)
    layers = [FeatureLayer.parse(t) for t in ("pooled", "layer3.0@2")]
    schedule = ProbeSchedule(epochs=1, lr=0.1)
    with tempfile.TemporaryDirectory() as cache:

        def features(cache_dir: Path):
            return cached_features(cache_dir, "bench", name, "train", repr(data), layers,
                                   backbone=lambda: backbone, build_dataset=lambda: data,
                                   device="cpu")

        def probe_epoch(cache_dir: Path) -> None:
            feats, labels = features(cache_dir)
            train_probe([feats[l.name] for l in layers], labels, {}, 10, schedule, "cpu", 0)

        features(Path(cache))  # fill the cache once
        cached = _best(lambda: probe_epoch(Path(cache)), args.repeats)

        def uncached() -> None:
            with tempfile.TemporaryDirectory() as empty:
                probe_epoch(Path(empty))

        extracting = _best(uncached, args.repeats)
    print(json.dumps({
        "dataset": name, "images": len(data), "layers": [l.name for l in layers],
        "threads": args.threads, "cached_epoch_s": round(cached, 4),
        "reextracting_epoch_s": round(extracting, 4), "speedup": round(extracting / cached, 1),
        "target_speedup": 20,
    }))


if __name__ == "__main__":
    main()
