"""``python -m benchmark run``: pretrain a method and run tasks on it (plus the sanity rows), or,
with ``--weights PATH``, run tasks on a weights file as it is (no pretraining, no sanity rows).

Either way the run is a one-point sweep: its jobs go through the same submission, its state to
``<sweeps>/<name>/sweep.json`` (``status`` reads it), its records to ``<results>/<profile>/`` and
the report is regenerated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from benchmark.core.config import RunConfig
from benchmark.core.errors import UsageError, require_writable_folder
from benchmark.core.fields import safe_name
from benchmark.data import resolve_data_root
from benchmark.data.registry import DEFAULT_DATA_ROOT
from benchmark.harness.external import WeightsOptions, external_weights, plan_weights
from benchmark.harness.jobs import OutcomeStatus, Paths
from benchmark.harness.plan import Job
from benchmark.harness.schema import resolve_run
from benchmark.harness.sweep import (
    describe_exclusions,
    expand,
    open_state,
    require_inputs,
    show_outcome,
    single_run,
    submit_sweep,
)
from benchmark.models.external_weights import AUTO
from benchmark.models.weight_formats import WEIGHT_FORMATS
from benchmark.report.export import write_report
from methods.base import available_methods


def add_weights_flags(p: argparse.ArgumentParser) -> None:
    """``--allow-missing-keys`` (``run --weights``, ``sweep --weights-list``)."""
    p.add_argument("--allow-missing-keys", action="store_true",
                   help="with weights files: load them even when trunk keys are missing (listed; "
                   "those stay at random init)")


def add_run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="pretrain a method and run tasks on it (plus sanity rows), or "
                       "run tasks on a weights file (--weights)",
                       description="Pretrain METHOD under PROFILE, then run TASKS on the encoder "
                       "and on the two sanity encoders (random init, raw pixels); or, with "
                       "--weights PATH, run TASKS on that checkpoint as it is (the profile's "
                       "model section gives the backbone; no pretraining, no sanity rows). "
                       "Records go to RESULTS/<profile>/ and the report to REPORTS/<profile>.md. "
                       "A run is a one-point sweep: its state goes to SWEEPS/<name>/sweep.json, "
                       "so `status` shows its jobs.")
    p.add_argument("--method", default=None, help="method name (see `list`); not with --weights")
    p.add_argument("--weights", type=Path, default=None, metavar="PATH",
                   help="evaluate this checkpoint instead of pretraining (formats: "
                   f"{', '.join(WEIGHT_FORMATS)})")
    p.add_argument("--weights-format", default=AUTO, choices=[AUTO, *WEIGHT_FORMATS],
                   help="with --weights: the file's format (default: auto, told by its keys)")
    p.add_argument("--name", default=None,
                   help="with --weights: the report row's name (default: the file's stem)")
    add_weights_flags(p)
    p.add_argument("--tasks", default="all",
                   help="all (every registered task but those the profile's tasks_excluded names) "
                   "| none | comma-separated task names")
    p.add_argument("--profile", default="mini", help="profile name or YAML path (default: mini)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default: the profile's)")
    p.add_argument("--out", type=Path, default=Path("runs"),
                   help="folder for pretraining runs and caches (default: runs)")
    p.add_argument("--results", type=Path, default=Path("results"), help="result records root")
    p.add_argument("--reports", type=Path, default=Path("reports"), help="report folder")
    p.add_argument("--sweeps", type=Path, default=Path("sweeps"),
                   help="sweeps root, where the run's state for `status` goes (default: sweeps)")
    p.add_argument("--data-root", default=None,
                   help=f"data root (default: $BENCHMARK_DATA, else ./{DEFAULT_DATA_ROOT})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set pretrain.epochs=3 (repeatable)")
    p.add_argument("--launcher", default="local",
                   help="local (this process, the default), or through submitit slurm, "
                   "submitit-local or debug")
    p.add_argument("--resume", default="auto", choices=["auto", "never", "force"],
                   help="pretraining checkpoint resume policy (default: auto)")
    p.add_argument("--force", action="store_true", help="re-run jobs that already have results")
    p.add_argument("--no-sanity", action="store_true",
                   help="skip the random-init and raw-pixel sanity rows")
    p.add_argument("--no-report", action="store_true", help="do not regenerate the report")
    p.set_defaults(func=cmd_run)


def _check_flags(args: argparse.Namespace) -> None:
    """--method xor --weights; the weights-only flags only with --weights."""
    if args.weights is not None and args.method is not None:
        raise UsageError("--method and --weights exclude each other: --weights evaluates that "
                         "checkpoint as it is, without pretraining; drop one")
    if args.weights is None:
        if args.method is None:
            raise UsageError("run needs --method METHOD (pretrain it) or --weights PATH "
                             "(evaluate a checkpoint); see `list --methods`")
        given = [flag for flag, on in (("--weights-format", args.weights_format != AUTO),
                                       ("--name", args.name is not None),
                                       ("--allow-missing-keys", args.allow_missing_keys)) if on]
        if given:
            raise UsageError(f"{given[0]} only applies with --weights PATH; add --weights or drop it")


def _method_jobs(args: argparse.Namespace, paths: Paths) -> tuple[RunConfig, Any, list[Job], str]:
    valid = available_methods()
    if args.method not in valid:
        raise UsageError(f"unknown method {args.method!r}; valid methods: {', '.join(valid)}")
    cfg = resolve_run(args.profile, args.method, args.overrides, args.seed)
    spec = single_run(args.profile, args.method, args.tasks, cfg.seed, args.overrides,
                      sanity=not args.no_sanity)
    jobs = expand(spec, paths.runs)  # checks task settings
    return cfg, spec, jobs, f"run {cfg.method.name} on profile {cfg.profile}"


def _weights_jobs(args: argparse.Namespace) -> tuple[RunConfig, Any, list[Job], str]:
    cfg = resolve_run(args.profile, None, args.overrides, args.seed)
    options = WeightsOptions(args.weights_format, args.allow_missing_keys)
    weights, summary = external_weights(args.weights, args.name, cfg, options)
    print(summary, flush=True)
    spec, jobs = plan_weights([cfg], args.tasks, [weights], args.overrides)
    return cfg, spec, jobs, f"run on weights {weights.name} on profile {cfg.profile}"


def cmd_run(args: argparse.Namespace) -> int:
    _check_flags(args)
    paths = Paths(results=args.results, runs=args.out, data_root=resolve_data_root(args.data_root))
    cfg, spec, jobs, heading = (_method_jobs(args, paths) if args.weights is None
                                else _weights_jobs(args))
    return submit_run(args, cfg, spec, jobs, paths, heading)


def submit_run(args: argparse.Namespace, cfg: RunConfig, spec: Any, jobs: Sequence[Job],
               paths: Paths, heading: str) -> int:
    """Check the planned ``jobs``' inputs and output folders, run them through the launcher
    (state under ``--sweeps``/<spec.name>), regenerate the report; 1 when a job failed."""
    require_inputs(jobs, paths, args.force)
    folder = Path(args.sweeps) / safe_name(spec.name, "the run's sweep name (from --profile)",
                                           "name the profile file with letters, digits, '_', "
                                           "'.' and '-' only")
    require_writable_folder(args.out, "--out")
    require_writable_folder(args.results, "--results")
    if not args.no_report:
        require_writable_folder(args.reports, "--reports")
    require_writable_folder(args.sweeps, "--sweeps")
    print(f"{heading} (config {cfg.hash}, seed {cfg.seed}): {len(jobs)} jobs", flush=True)
    exclusions = describe_exclusions(cfg.tree, args.tasks)
    if exclusions:
        print(exclusions, flush=True)
    outcomes = submit_sweep(open_state(folder, spec), jobs, paths, args.launcher, force=args.force,
                            on_outcome=show_outcome, resume=args.resume)
    if not args.no_report:
        report = write_report(args.results, args.reports, cfg.profile, runs_dir=args.out,
                              data_root=paths.data_root)
        print(f"report: {report}")
    failed = [o for o in outcomes if o.status == OutcomeStatus.FAILED]
    if failed:
        print(f"{len(failed)} job(s) failed", file=sys.stderr)
        return 1
    return 0
