"""Command line: ``python -m benchmark {run,list,data,report} ...`` (``--help`` on each)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from benchmark.core.config import available_profiles, method_defaults
from benchmark.core.errors import (
    DEBUG_ENV,
    UsageError,
    debug_requested,
    explain_failure,
    require_writable_folder,
    stdout_closed,
)
from benchmark.core.store import write_text_atomic
from benchmark.data import available_datasets, resolve_data_root
from benchmark.data.imagenet import SUBSET_FIX, SUBSETS, prepare_subset_lists, subset_list_states
from benchmark.data.registry import DEFAULT_DATA_ROOT
from benchmark.harness.run_cli import add_run_parser
from benchmark.harness.sweep_cli import add_status_parser, add_sweep_parser
from benchmark.report.compare import compare_folders
from benchmark.report.export import FORMATS, write_report
from methods.base import available_methods
from tasks.base import available_tasks
from tasks.detection.export import CheckpointMismatch, export_detectron2

DEBUG_HELP = f"show the traceback of every error (also: {DEBUG_ENV}=1)"


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list methods, tasks, profiles and datasets",
                       description="List what the suite knows, one line each.")
    for what in ("methods", "tasks", "profiles", "datasets"):
        p.add_argument(f"--{what}", action="store_true", help=f"only {what}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="with --methods: each method's defaults in --profile")
    p.add_argument("--profile", default="mini", help="profile for -v defaults (default: mini)")
    p.set_defaults(func=cmd_list)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="check or prepare datasets",
                       description="Dataset utilities.")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="{check,prepare}")
    check = dsub.add_parser("check", help="found / missing / corrupt for every dataset, and the fix",
                            description="For every registered dataset: found, missing or corrupt "
                            "(contents checked: file sizes against headers, lists against the "
                            "files they name, class folders), the path searched, and how to "
                            "obtain it. Exit 1 when a dataset that is there is corrupt or "
                            "incomplete, else 0 (even when some are missing).")
    check.add_argument("--data-root", default=None, help="data root (default: $BENCHMARK_DATA "
                       f"or ./{DEFAULT_DATA_ROOT})")
    check.set_defaults(func=cmd_data_check)
    prep = dsub.add_parser("prepare", help="create a dataset that can be made locally",
                           description="Create DATASET under the data root (idempotent).")
    prep.add_argument("dataset", help=f"dataset name, e.g. fashion_mnist, or {SUBSETS} (SimCLR's "
                      "semi-supervised label lists)")
    prep.add_argument("--data-root", default=None, help="data root")
    prep.add_argument("--download", action="store_true",
                      help=f"{SUBSETS}: fetch the lists from SimCLR's repository (needs a network)")
    prep.set_defaults(func=cmd_data_prepare)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write reports/<profile>.md from result records",
                       description="Render Markdown tables from the records under RESULTS.")
    p.add_argument("--results", type=Path, default=Path("results"), help="result records root")
    p.add_argument("--out", type=Path, default=Path("reports"), help="report folder")
    p.add_argument("--profile", default=None,
                   help="profile to report (default: every profile found under --results)")
    p.add_argument("--runs", type=Path, default=None,
                   help="pretraining runs root (e.g. runs): refreshes the figure inputs stored under "
                   "RESULTS/<profile>/figures from its logs and encoders (without it the figures are "
                   "redrawn from the stored inputs)")
    p.add_argument("--data-root", default=None,
                   help="data root of the Fig. 2 images (default: $BENCHMARK_DATA, else ./data)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds expected per cell; fewer are marked (default: 3)")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="md",
                   help="md: the Markdown report with figures (default); csv / json: one line per "
                   "cell (row, task, metric, dataset, split, mean, std, n) for your own plots")
    paper = p.add_mutually_exclusive_group()
    paper.add_argument("--paper", dest="compare", action="store_true", default=None,
                       help="show the paper's numbers and deltas (default: all profiles but mini)")
    paper.add_argument("--no-paper", dest="compare", action="store_false",
                       help="do not show the paper's numbers")
    p.set_defaults(func=cmd_report)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="per-cell differences between two result folders",
                       description="Compare the records of RUN_A and RUN_B (folders such as "
                       "results/mini) cell by cell: mean ± std (n) on each side and B - A. "
                       "Exit status 1 when a cell changed or exists on one side only, like diff.")
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="result folder A (results/<profile>)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="result folder B")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="|B - A| above which a cell is 'changed' (default: 0.5)")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown here")
    p.set_defaults(func=cmd_compare)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="convert an encoder checkpoint for another framework",
                       description="Write CKPT's ResNet-50 backbone in another framework's "
                       "format (detectron2: MoCo's key renaming; see tasks/detection/README.md).")
    p.add_argument("--format", required=True, choices=["detectron2"], help="target format")
    p.add_argument("checkpoint", type=Path, help="encoder checkpoint (<run_dir>/encoder.pt)")
    p.add_argument("out", type=Path, help="output file, e.g. invp_r50.pkl")
    p.set_defaults(func=cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="invp-bench: InvP, InsDis and KNN-positive pretraining and evaluation suite.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_run_parser, _add_list, _add_data, _add_report, _add_compare, _add_export,
                add_sweep_parser,
                add_status_parser):
        add(sub)
    _accept_debug_after_command(sub)
    return parser


def _accept_debug_after_command(sub: argparse._SubParsersAction) -> None:
    """Let ``--debug`` follow the (sub)command too; absent there, it keeps the top-level value."""
    for parser in sub.choices.values():
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help=DEBUG_HELP)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_debug_after_command(action)


def cmd_list(args: argparse.Namespace) -> int:
    show_all = not (args.methods or args.tasks or args.profiles or args.datasets)
    if show_all or args.methods:
        print("methods:")
        defaults = method_defaults(args.profile) if args.verbose else {}
        for name, summary in available_methods().items():
            print(f"  {name:<14} {summary}")
            for key, value in defaults.get(name, {}).items():
                print(f"      {key} = {value}")
    if show_all or args.tasks:
        print("tasks:")
        for name, task in available_tasks().items():
            where = f" [{task.paper_table}: {task.paper_column}]" if task.paper_table else ""
            print(f"  {name:<14} {task.summary}{where}")
    if show_all or args.profiles:
        print("profiles:")
        for name in available_profiles():
            print(f"  {name}")
    if show_all or args.datasets:
        print("datasets:")
        for name, spec in available_datasets().items():
            print(f"  {name:<14} {spec.summary}")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    root = resolve_data_root(args.data_root)
    print(f"data root: {root.resolve()}")
    corrupt = []
    for name, spec in available_datasets().items():
        problems = spec.check(root)
        damage = [] if problems else spec.verify(root)
        state = "MISSING" if problems else "CORRUPT" if damage else "found"
        print(f"  {name:<14} {state:<8} {spec.location(root)}")
        if problems:
            print(f"      problem: {'; '.join(problems)}")
        for message in damage:
            print(f"      {message}")
        if problems or damage:
            print(f"      how to get it: {spec.how_to_get}")
        if damage:
            corrupt.append(name)
    for path, lines, found in subset_list_states(root):
        state = "MISSING" if found is None else "found" if found == lines else "CORRUPT"
        print(f"  {SUBSETS:<14} {state:<8} {path} ({found or 0:,} of {lines:,} lines)")
        if state != "found":
            print(f"      how to get it: {SUBSET_FIX}")
        if state == "CORRUPT":
            corrupt.append(str(path))
    if corrupt:
        print(f"error: corrupt or incomplete: {', '.join(corrupt)} (the fix follows each file "
              "above)", file=sys.stderr)
        return 1
    return 0


def cmd_data_prepare(args: argparse.Namespace) -> int:
    if args.dataset == SUBSETS:
        print(f"{SUBSETS}: ready at {prepare_subset_lists(resolve_data_root(args.data_root), args.download)}")
        return 0
    registry = available_datasets()
    spec = registry.get(args.dataset)
    if spec is None:
        raise UsageError(f"unknown dataset {args.dataset!r}; valid datasets: {', '.join(registry)}")
    if spec.prepare is None:
        raise UsageError(f"dataset {args.dataset!r} cannot be made locally; {spec.how_to_get}")
    root = resolve_data_root(args.data_root)
    print(f"{args.dataset}: ready at {spec.prepare(root)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    profiles = [args.profile] if args.profile else sorted(
        p.name for p in Path(args.results).iterdir() if p.is_dir()
    ) if Path(args.results).is_dir() else []
    if not profiles:
        raise UsageError(f"no result records under {args.results}; run `python -m benchmark run` "
                         "first or pass --results DIR")
    if args.runs is not None and not Path(args.runs).is_dir():
        raise UsageError(f"--runs {args.runs} is not a folder; pass the --out folder of "
                         "`benchmark run` (default: runs)")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    require_writable_folder(args.out, "--out")
    for profile in profiles:
        path = write_report(args.results, args.out, profile, runs_dir=args.runs,
                            data_root=args.data_root, compare=args.compare,
                            expected_seeds=args.seeds, fmt=args.fmt)
        print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    if args.tolerance < 0:
        raise UsageError(f"--tolerance must be >= 0, got {args.tolerance}")
    text, differing = compare_folders(args.run_a, args.run_b, args.tolerance)
    print(text, end="")
    if args.out is not None:
        write_text_atomic(args.out, text)
    return 0 if differing == 0 else 1


def cmd_export(args: argparse.Namespace) -> int:
    try:
        print(f"wrote {export_detectron2(args.checkpoint, args.out)}")
    except CheckpointMismatch as exc:
        raise UsageError(str(exc)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for bad input; see :mod:`benchmark.core.errors`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return stdout_closed()
    except Exception as exc:
        code = explain_failure(exc, debug_requested(args.debug))
        if code is None:
            raise
        return code
