"""Time the method part of one training step alone (issue 3 "Speed").

For each bank size n: similarities, top-M, propagation, losses, forward+backward through the
embedding (v = normalize(z), gradient to z) and the post-step update, for InvP, InsDis (softmax
and NCE) and KNN; plus the floor any bank method pays: one B x n matmul and a top-M. MoCo v2's
row is its method part with a queue of M keys (independent of n): InfoNCE over the queue and the
all-gathered enqueue (the key encoder's forward belongs to the network, speed/train_step.py).
InterCLR's row adds its inter term (B x n similarities, semi-hard pool, sampling) and the bank,
relabel, centroid and repair updates, at the ratios of docs/methods/interclr.md §Small-scale version for n (clusters n/128, pool 10 %).
CLIM's row: partner draw and CutMix of 8 x 8 stand-in images (prepare_batch), InfoNCE of the query,
the mixed view (soft target) and two multi-resolution views over the queue, and the bank update;
its per-epoch k-means and kNN refresh is not part of a step (random tables stand in).

    python speed/method_step.py                       # n = 60000 and 1281167
    python speed/method_step.py --n 60000 --reps 10 --device cuda --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.core.config import resolve  # noqa: E402
from methods.base import build_method  # noqa: E402
from methods.parts.kmeans import cluster_means  # noqa: E402
from methods.parts.top_m import top_m  # noqa: E402


def official_block(name: str, **overrides: Any) -> dict[str, Any]:
    """The imagenet profile's ``method`` block of ``name`` (the official values) with ``overrides``."""
    return {**resolve("imagenet", name).to_dict()["method"], **overrides}


METHODS: dict[str, dict[str, Any]] = {
    "invp": official_block("invp"),
    "insdis-softmax": official_block("insdis", variant="softmax"),
    "insdis-nce": official_block("insdis", variant="nce"),
    "knn": official_block("knn", variant="invp"),
    "mocov2": official_block("mocov2"),
    "interclr": official_block("interclr"),
    "clim": official_block("clim", k=4, multires_sizes=[6, 4]),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], None], device: torch.device, reps: int, warmup: int) -> list[float]:
    """Wall seconds of ``reps`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def pool_option(config: dict[str, Any], pool: int) -> dict[str, Any]:
    """The option that sets M for a method: n_background (top-M pool), nce_k (NCE noise) or
    queue_size (MoCo's queue)."""
    if config["name"] == "insdis":
        return {"nce_k": pool} if config["variant"] == "nce" else {}
    if config["name"] == "mocov2":
        return {"queue_size": pool}
    if config["name"] in ("interclr", "clim"):
        return {"queue_size": pool}
    return {"n_background": pool}


def interclr_state(n: int, bank: torch.Tensor, clusters: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """InterCLR's options at bank size n by the ratios of docs/methods/interclr.md §Small-scale version (C = n/128, M_s = 10 %
    of n, K_n = 12.8 % of M_s) and a state of random pseudo-labels (no initial k-means)."""
    pool_size = round(0.1 * n)
    options = {"num_clusters": clusters, "pool_size": pool_size, "negatives": round(0.128 * pool_size)}
    labels = torch.randint(0, clusters, (n,), device=bank.device)
    state = {"bank": {"weight": bank, "filled": True},
             "pseudo": {"labels": labels, "centroids": cluster_means(bank, labels, clusters)},
             "seed": 0, "change_ratio": torch.zeros(()), "repaired": torch.zeros(())}
    return options, state


def clim_state(n: int, bank: torch.Tensor, table: torch.Tensor, clusters: int) -> dict[str, Any]:
    """CLIM's bank and random selection tables (k = 4 columns, about half selected)."""
    labels = torch.randint(0, clusters, (n,), device=bank.device)
    return {"bank": {"weight": bank, "filled": True}, "tables": {"neighbours": table, "selected": torch.rand(table.shape, device=bank.device) < 0.5,
                                     "assignments": labels, "centroids": cluster_means(bank, labels, clusters)}}


def embeddings_for(method: Any, views: dict[str, Any], batch: int, dim: int,
                   device: torch.device) -> tuple[Any, torch.Tensor]:
    """A batch's embeddings for ``method`` (named ``views`` for multi-view methods; those it does
    not encode with the key encoder take the gradient) and the tensor that takes the gradient."""
    z = torch.randn(batch, dim, device=device, requires_grad=True)
    if not method.views:
        return F.normalize(z, dim=1), z
    keys = method.key_encoder_spec.views
    return {name: F.normalize(torch.randn(batch, dim, device=device) + (0 if name in keys else z), dim=1)
            for name in views}, z


def random_state(n: int, dim: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    bank = F.normalize(torch.randn(n, dim, device=device), dim=1)
    return bank, torch.randint(0, n, (n, k), device=device)


def bench_size(n: int, args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Step times at bank size ``n``: the floor, then every method of ``args.methods`` (each
    measured in its own function, so its buffers are freed before the next one is built)."""
    bank, table = random_state(n, args.dim, 4, device)
    rows = [_floor_row(n, bank, args, device)]
    rows += [_method_row(label, n, bank, table, args, device) for label in args.methods]
    return rows


def _floor_row(n: int, bank: torch.Tensor, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One B x n matmul + top-M, into a score buffer reused as the methods reuse theirs."""
    scores = torch.empty(args.batch, n, device=device)

    def floor() -> None:
        v = F.normalize(torch.randn(args.batch, args.dim, device=device), dim=1)
        top_m(torch.mm(v, bank.T, out=scores), args.pool)

    return {"n": n, "method": "floor (matmul + top-M)", "times": time_it(floor, device, args.reps, args.warmup)}


def _method_row(label: str, n: int, bank: torch.Tensor, table: torch.Tensor, args: argparse.Namespace,
                device: torch.device) -> dict[str, Any]:
    """The full method step of ``label`` at bank size ``n`` (bank filled, past the ramp-up)."""
    config = {**METHODS[label], **pool_option(METHODS[label], args.pool)}
    extra: dict[str, Any] = {}
    if label == "interclr":
        options, extra = interclr_state(n, bank, max(1, round(n / 128)))
        config.update(options)
    if label == "clim":
        config["num_clusters"] = max(1, round(n / 128))
        extra = clim_state(n, bank, table, config["num_clusters"])
    method = build_method(config, n, args.dim).to(device)
    state = {**method.state_dict(), **extra}
    if "bank" in state:
        state["bank"] = {"weight": bank, "filled": True}
    if "neighbours" in state:
        state["neighbours"] = {"table": table}
    method.load_state_dict(state)
    epoch = 100  # past the ramp-up, so every term is in the loss

    def step() -> None:
        idx = torch.randint(0, n, (args.batch,), device=device)
        images = {name: torch.randn(args.batch, 1, 8, 8, device=device) for name in method.views}
        views = method.prepare_batch(images, idx, lambda i: {name: t[: len(i)] for name, t in images.items()})
        views.update({name: None for name in method.view_sizes(method.config)})
        embeddings, z = embeddings_for(method, views, args.batch, args.dim, device)
        out = method.loss(embeddings, idx, epoch)
        out.loss.backward()
        method.update()

    return {"n": n, "method": label, "times": time_it(step, device, args.reps, args.warmup)}


def report(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: median and min milliseconds per step, and median ratios to the floor and to InsDis."""
    lines = ["| n | method | median ms | min ms | / floor | / insdis-softmax |", "|---|---|---|---|---|---|"]
    for row in rows:
        row["median"] = statistics.median(row["times"])
    for row in rows:
        same = {r["method"]: r["median"] for r in rows if r["n"] == row["n"]}
        floor = same["floor (matmul + top-M)"]
        insdis = same.get("insdis-softmax")
        ratio_insdis = f"{row['median'] / insdis:.2f}" if insdis else "-"
        lines.append(f"| {row['n']} | {row['method']} | {1e3 * row['median']:.2f} | {1e3 * min(row['times']):.2f} | "
                     f"{row['median'] / floor:.2f} | {ratio_insdis} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[60000, 1281167], help="bank sizes")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--pool", type=int, default=4096, help="M (n_background), NCE K and MoCo's queue")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [row for n in args.n for row in bench_size(n, args, device)]
    print(f"device {device}, threads {torch.get_num_threads()}, B={args.batch}, D={args.dim}, M={args.pool}")
    print(report(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
