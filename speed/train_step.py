"""Throughput of the pretraining engine on this machine (images/s).

* ``data``: the mini pretraining DataLoader alone (Fashion-MNIST, seeded ``mini`` augmentation).
* ``backbone``: a full training step (forward, loss, backward, SGD) of a backbone with a plain
  cross-entropy classifier on random inputs, e.g. the mini ResNet at 28x28 or ResNet-50 at 224.
* ``methods``: full steps of the engine (backbone + head + method loss + update) for InvP,
  InsDis and plain cross-entropy at the same backbone and batch, with the mini profile's
  method defaults and a bank of ``--bank`` samples; prints the InvP / InsDis ratio.

Usage::

    python speed/train_step.py data
    python speed/train_step.py backbone --backbone mini_resnet --width 16 --batch 128 --size 28
    python speed/train_step.py backbone --backbone resnet50 --batch 32 --size 224 --steps 2
    python speed/train_step.py methods --width 8 --batch 64 --bank 10000 --rounds 7
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.core.config import resolve  # noqa: E402
from benchmark.data import resolve_data_root  # noqa: E402
from benchmark.engine.data import ResumableDistributedSampler, build_pretrain_data  # noqa: E402
from benchmark.engine.wiring import build_encoder, build_optimizer  # noqa: E402
from benchmark.models import embed_dim_of  # noqa: E402
from methods.base import build_method  # noqa: E402


def timed(step: Callable[[], None], steps: int, warmup: int) -> tuple[float, float]:
    """Wall seconds and process CPU seconds per call of ``step`` after ``warmup`` untimed calls.

    CPU seconds (summed over threads) stay meaningful on a machine shared with other jobs,
    where wall time does not."""
    for _ in range(warmup):
        step()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def rates(batch: int, wall: float, cpu: float) -> dict:
    """Per-step seconds and images/s (wall) and images per CPU-second."""
    return {"s_per_step": wall, "images_per_s": batch / wall, "cpu_s_per_step": cpu,
            "images_per_cpu_s": batch / cpu}


def data_throughput(args: argparse.Namespace) -> dict:
    """Images/s of the mini pretraining DataLoader (decode + seeded augmentation + collate)."""
    cfg = resolve("mini", "invp", [f"data.num_workers={args.workers}"])
    data = build_pretrain_data(cfg, resolve_data_root(args.data_root))
    data.train.epoch = 1
    sampler = ResumableDistributedSampler(data.train, 1, 0, seed=0)
    loader = torch.utils.data.DataLoader(data.train, batch_size=args.batch, sampler=sampler,
                                         drop_last=True, num_workers=args.workers)
    wall, cpu, images = time.perf_counter(), time.process_time(), 0
    for batch, _ in loader:
        images += batch.shape[0]
    return {"what": "data", "workers": args.workers, "images": images,
            "images_per_s": images / (time.perf_counter() - wall),
            "images_per_cpu_s": images / (time.process_time() - cpu)}


def backbone_throughput(args: argparse.Namespace) -> dict:
    """Images/s of a supervised training step of one backbone on random inputs."""
    model_cfg = {"backbone": args.backbone, "width": args.width, "in_channels": args.channels,
                 "head": "linear", "embed_dim": 10, "init": "pytorch"}
    encoder = build_encoder(model_cfg)
    optimizer = build_optimizer(encoder.parameters(), {"lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4})
    x = torch.randn(args.batch, args.channels, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(encoder(x), y).backward()
        optimizer.step()

    return {"what": "backbone", "backbone": args.backbone, "width": args.width, "batch": args.batch,
            "size": args.size, "threads": args.threads, **rates(args.batch, *timed(step, args.steps, args.warmup))}


def method_step(name: str, args: argparse.Namespace) -> Callable[[], None]:
    """One full engine step (forward, loss, backward, SGD, bank update) of ``name`` ('ce' = CE)."""
    x = torch.randn(args.batch, 1, 28, 28)
    cfg = resolve("mini", "invp" if name == "ce" else name, [f"model.width={args.width}"])
    torch.manual_seed(0)
    encoder = build_encoder(cfg.model)
    classifier = torch.nn.Linear(cfg.model.embed_dim, 10)
    optimizer = build_optimizer(list(encoder.parameters()) + list(classifier.parameters()), cfg.pretrain.optimizer)
    method = None if name == "ce" else build_method(cfg.method, args.bank, embed_dim_of(cfg.model))
    epoch = 100  # past any ramp-up, so InvP's propagation term is active
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        z = encoder(x)
        if method is None:
            loss = F.cross_entropy(classifier(z), y)
        else:
            loss = method.loss(F.normalize(z, dim=1), torch.randint(0, args.bank, (args.batch,)), epoch).loss
        loss.backward()
        optimizer.step()
        if method is not None:
            method.update()

    return step


def method_throughput(args: argparse.Namespace) -> list[dict]:
    """Full engine steps for each method at the same mini backbone; InvP/InsDis ratio.

    The methods are timed in interleaved rounds of ``--steps`` steps (the order reversed every
    other round) and each one's median round is reported. The ratios are taken within each round,
    between neighbouring timings, and their median is reported with its spread: drift of the
    machine's speed (other jobs, clocks) then cancels instead of landing on one method. The ratio
    of the methods' fastest rounds is reported too: interference only ever adds time. CPU time is
    robust to other jobs; with several threads it also counts OpenMP's spin-waiting between
    parallel regions, so there wall time (on an otherwise idle machine) is what a user sees."""
    names = ("ce", "insdis", "invp")
    steps = {name: method_step(name, args) for name in names}
    rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for number in range(args.rounds):
        for name in names if number % 2 == 0 else reversed(names):
            rounds[name].append(timed(steps[name], args.steps, args.warmup))
    results = []
    for name in names:
        wall, cpu = sorted(rounds[name], key=lambda r: r[1])[len(rounds[name]) // 2]
        results.append({"what": "method", "method": name, "width": args.width, "batch": args.batch,
                        "bank": args.bank, "threads": args.threads, "rounds": args.rounds,
                        **rates(args.batch, wall, cpu)})
    for top, bottom in (("invp", "insdis"), ("insdis", "ce")):
        for clock, column in (("CPU", 1), ("wall", 0)):
            ratios = sorted(t[column] / b[column] for t, b in zip(rounds[top], rounds[bottom]))
            fastest = min(r[column] for r in rounds[top]) / min(r[column] for r in rounds[bottom])
            results.append({"what": f"{top} / {bottom}, {clock} time per step, paired by round",
                            "median": statistics.median(ratios), "quartiles": statistics.quantiles(ratios, n=4)[::2],
                            "min": ratios[0], "max": ratios[-1], "fastest_rounds": fastest})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("data", "backbone", "methods"))
    parser.add_argument("--backbone", default="mini_resnet")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--bank", type=int, default=6000, help="memory-bank size for `methods`")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for `methods`")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "data":
        out = [data_throughput(args)]
    elif args.what == "backbone":
        out = [backbone_throughput(args)]
    else:
        out = method_throughput(args)
    for record in out:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))


if __name__ == "__main__":
    main()
