"""Command-line parsers of ``sweep`` and ``status``."""
from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.harness.resources import RESOURCE_FLAGS
from benchmark.harness.run_cli import add_weights_flags
from benchmark.harness.status import cmd_status
from benchmark.harness.submitit_launcher import LOG_TAIL_LINES
from benchmark.harness.sweep import cmd_sweep


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="submit methods x seeds x a --set grid (Slurm job arrays)",
                       description="Plan every (method, seed, grid point) run and submit the jobs "
                       "not done yet: pretraining first, then each pretraining's tasks as job "
                       "arrays (one per resource request) that wait for it (afterok). "
                       "Re-submitting runs only failed or missing jobs.")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods, e.g. invp,insdis,knn (or --weights-list)")
    p.add_argument("--weights-list", type=Path, default=None, metavar="FILE",
                   help="instead of --methods: evaluate the checkpoints FILE maps to local files "
                   "(`<name>: <path>` per line, names from benchmark/report/paper/"
                   "published_checkpoints.yaml; the protocol self-check: --profile "
                   "protocol-check); listed files that are not there are reported as not found")
    add_weights_flags(p)
    p.add_argument("--tasks", default="all",
                   help="all (every registered task but those the profile's tasks_excluded names) "
                   "| none | comma-separated task names")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the profile's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (or a single override), e.g. --set method.temperature=0.1,0.2")
    p.add_argument("--profile", default="mini", help="profile name or YAML path (default: mini)")
    p.add_argument("--launcher", default=None,
                   help="slurm | submitit-local | debug (submitit) or local (this process); "
                   "default: the profile's launcher.name")
    for name, (kind, text) in RESOURCE_FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                       help=f"{text} (default: the profile's launcher section)")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION[=VALUE]",
                   help="extra sbatch option, e.g. --sbatch exclusive --sbatch comment=x")
    p.add_argument("--dry-run", action="store_true",
                   help="print jobs, dependencies, each job's request (resources, processes; a "
                   "task's kind, GPU cap, data-loader workers) and what is done; submit nothing")
    p.add_argument("--wait", action="store_true", help="with slurm: block until every job ends")
    p.add_argument("--force", action="store_true", help="re-run jobs that already have results")
    p.add_argument("--no-sanity", action="store_true",
                   help="skip the random-init and raw-pixel sanity rows")
    p.add_argument("--name", default=None, help="sweep name (default: derived from the grid)")
    p.add_argument("--sweeps", type=Path, default=Path("sweeps"), help="sweeps root (default: sweeps)")
    p.add_argument("--out", type=Path, default=Path("runs"), help="pretraining runs folder")
    p.add_argument("--results", type=Path, default=Path("results"), help="result records root")
    p.add_argument("--data-root", default=None, help="data root (default: $BENCHMARK_DATA)")
    p.set_defaults(func=cmd_sweep)


def add_status_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="pending / running / done / failed for every job of a sweep",
                       description="Show every job of SWEEP, a sweep or a run (default: the latest "
                       "under --sweeps): "
                       "done, pending, running, failed (with its log's last lines), missing.")
    p.add_argument("sweep", nargs="?", default=None, help="sweep name or folder (default: latest)")
    p.add_argument("--sweeps", type=Path, default=Path("sweeps"), help="sweeps root (default: sweeps)")
    p.add_argument("--results", type=Path, default=Path("results"), help="result records root")
    p.add_argument("--lines", type=int, default=LOG_TAIL_LINES,
                   help=f"log lines shown for a failed job (default: {LOG_TAIL_LINES})")
    p.set_defaults(func=cmd_status)
