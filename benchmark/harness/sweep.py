"""``python -m benchmark sweep``: methods x seeds x ``--set`` grid -> one plan, one submission.

``--set key=v1,v2`` makes ``key`` a grid axis (commas inside ``[...]`` or ``{...}`` belong to
the value). Every (method, seed, grid point) is resolved to a RunConfig and planned like ``run``;
jobs shared between runs (the sanity encoders, a pretraining several grids reuse) are planned
once, and jobs already done are skipped, so re-submitting a sweep runs only what failed or is
missing. The sweep's state file lives in ``<sweeps>/<name>/sweep.json`` (see ``status``).
``run`` is a one-point sweep (:func:`single_run`) and records its state the same way.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from benchmark.core.config import ConfigError, RunConfig, config_hash
from benchmark.core.errors import require_writable_folder
from benchmark.core.fields import safe_name
from benchmark.data import resolve_data_root
from benchmark.harness.completion import is_done
from benchmark.harness.external import WeightsOptions, plan_weights_list
from benchmark.harness.job_request import job_request
from benchmark.harness.jobs import Outcome, OutcomeStatus, Paths
from benchmark.harness.launch import LAUNCHERS, build_launcher
from benchmark.harness.launch_protocol import LaunchSettings
from benchmark.harness.plan import (
    Job,
    excluded_tasks,
    missing_inputs,
    plan_run,
    select_tasks,
    unfit_tasks,
)
from benchmark.harness.resources import RESOURCE_FLAGS
from benchmark.harness.schema import resolve_run
from benchmark.harness.status import ACTIVE, job_status
from benchmark.harness.submitit_launcher import CLUSTERS, array_key
from benchmark.harness.sweep_state import SweepState, code_version, version_differences
from methods.base import available_methods


def split_values(text: str) -> list[str]:
    """Split ``v1,v2`` on commas outside brackets/braces: ``[1,2],[3]`` -> ``['[1,2]', '[3]']``."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values]


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["a.b=1,2", "c=x"]`` -> ``[("a.b", ["1", "2"]), ("c", ["x"])]`` (one axis per key)."""
    axes: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"malformed --set {item!r}: expected key=v1[,v2...], "
                              "e.g. --set method.temperature=0.1,0.2")
        if key.strip() in axes:
            raise ConfigError(f"--set {key.strip()} given twice; list its values once: "
                              f"--set {key.strip()}=v1,v2")
        axes[key.strip()] = split_values(values)
    return list(axes.items())


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in split_values(text) if s]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep covers; its hash names the sweep folder."""

    profile: str
    methods: tuple[str, ...]
    tasks: str
    seeds: tuple[int, ...]
    grid: tuple[tuple[str, tuple[str, ...]], ...]
    sanity: bool = True

    @property
    def name(self) -> str:
        profile = Path(self.profile).stem
        return f"{profile}-{config_hash(asdict(self), length=10)}"

    def points(self) -> list[list[str]]:
        """Every grid point as a list of ``key=value`` overrides."""
        keys = [key for key, _ in self.grid]
        return [[f"{k}={v}" for k, v in zip(keys, combo)]
                for combo in itertools.product(*(values for _, values in self.grid))]


def single_run(profile: str, method: str, tasks: str, seed: int, overrides: Sequence[str],
               sanity: bool = True) -> SweepSpec:
    """The one-point sweep of ``run``: one method, one seed, each of its ``--set key=value`` (checked
    by ``resolve_run`` already) a one-valued grid axis kept whole, so the point is those overrides."""
    grid = tuple((key, (value,)) for key, _, value in (item.partition("=") for item in overrides))
    return SweepSpec(profile=profile, methods=(method,), tasks=tasks, seeds=(seed,), grid=grid,
                     sanity=sanity)


def expand(spec: SweepSpec, runs_root: Path) -> list[Job]:
    """The sweep's jobs, each once, every dependency before its dependents; each job's resource
    request is checked here too (a task kind the profile does not size fails planning)."""
    valid = available_methods()
    unknown = [m for m in spec.methods if m not in valid]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)} in --methods; valid methods: "
                          f"{', '.join(valid)}")
    jobs: dict[str, Job] = {}
    for method, seed, point in itertools.product(spec.methods, spec.seeds, spec.points()):
        cfg = resolve_run(spec.profile, method, point, seed)
        for job in plan_run(cfg, select_tasks(cfg, spec.tasks), runs_root, sanity=spec.sanity):
            jobs.setdefault(job.job_id, job)
    for job in jobs.values():
        job_request(job)
    return list(jobs.values())


def describe_exclusions(tree: Mapping[str, Any], tasks: str) -> str | None:
    """For ``--tasks all``: the tasks the profile excludes, then those that cannot run on its
    backbone (``unfit_tasks``), one line each with its reason."""
    if tasks != "all":
        return None
    cfg = RunConfig.from_dict(tree)
    lines = []
    for heading, reasons in (("the profile's tasks_excluded", excluded_tasks(tree)),
                             (f"they cannot run on model.backbone={cfg.model['backbone']}",
                              unfit_tasks(cfg, list(cfg.tasks)))):
        if reasons:
            lines += [f"not run ({heading}):", *(f"  {name}: {why}" for name, why in reasons.items())]
    return "\n".join(lines) or None


def resource_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The resource overrides given on the command line (unset flags left out)."""
    flags = {name: getattr(args, name) for name in RESOURCE_FLAGS if getattr(args, name) is not None}
    if args.sbatch:
        flags["sbatch"] = dict(_sbatch_option(item) for item in args.sbatch)
    return flags


def _sbatch_option(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not key.strip().lstrip("-"):
        raise ConfigError(f"malformed --sbatch {item!r}: expected option=value, e.g. "
                          "--sbatch exclusive or --sbatch comment=paper")
    return key.strip().lstrip("-"), value if sep else True


def describe_plan(jobs: Sequence[Job], paths: Paths, launcher: str, flags: dict[str, Any],
                  force: bool) -> str:
    """The dry-run table: id, kind, done or to submit, what it waits for, label, then the job's
    request (resources, processes per node; a task's kind, GPU cap and data-loader workers)."""
    lines = [f"{'job id':<12}  {'kind':<8}  {'state':<9}  {'after':<12}  resources / label"]
    todo, arrays = 0, set()
    for job in jobs:
        done = is_done(job, paths.store(job.config["profile"])) and not force
        todo += not done
        request = job_request(job, flags)
        if job.kind == "task" and not done:
            arrays.add((job.depends_on[:1], array_key(request)))
        where = request.describe() if launcher in CLUSTERS else "in this process"
        after = ",".join(job.depends_on) or "-"
        lacking = [] if done else missing_inputs(job, paths.data_root)
        where += f"\n{'':<48}MISSING INPUT: {lacking[0]}" if lacking else ""
        lines.append(f"{job.job_id:<12}  {job.kind:<8}  {'done' if done else 'submit':<9}  "
                     f"{after:<12}  {job.label}\n{'':<48}{where}")
    lines.append(f"{len(jobs)} jobs: {len(jobs) - todo} done, {todo} to submit"
                 + (f" (task jobs as {len(arrays)} array(s), one per pretraining and request; "
                    "evaluations wait for their pretraining)" if launcher in CLUSTERS and arrays else ""))
    return "\n".join(lines)


def require_inputs(jobs: Sequence[Job], paths: Paths, force: bool) -> None:
    """Planning's last check: a job still to run whose inputs are missing (``missing_inputs``) is
    a ConfigError naming the job, the file and the fix, before any job is submitted."""
    for job in jobs:
        if force or not is_done(job, paths.store(job.config["profile"])):
            lacking = missing_inputs(job, paths.data_root)
            if lacking:
                raise ConfigError(f"{job.label}: {lacking[0]}")


def active_jobs(state: SweepState, results_root: Path) -> dict[str, str]:
    """Planned job id -> scheduler id of jobs still pending or running from earlier submissions."""
    active = {}
    for job_id in state.jobs:
        _, sid, _ = state.latest(job_id)
        if sid is not None and job_status(state, job_id, results_root).state in ACTIVE:
            active[job_id] = sid
    return active


def open_state(folder: Path, spec: Any) -> SweepState:
    """The sweep's state, created on first use (``spec``: the dataclass saying what the sweep
    covers, a SweepSpec or ``external.WeightsSpec``); warns when the code version changed since."""
    code = code_version()
    if not (folder / "sweep.json").is_file():
        return SweepState(folder / "sweep.json", asdict(spec), code)
    state = SweepState.load(folder)
    differences = version_differences(state.code, code)
    if differences:
        print(f"warning: sweep {folder} was submitted by another code version; finished jobs "
              "are kept, new ones run with this code. Differences:", file=sys.stderr)
        for line in differences:
            print(f"  {line}", file=sys.stderr)
        state.code = code
    return state


def submit_sweep(state: SweepState, jobs: Sequence[Job], paths: Paths, launcher_name: str,
                 flags: dict[str, Any] | None = None, force: bool = False, wait: bool = True,
                 on_outcome: Callable[[Outcome], None] | None = None,
                 runner: Callable[..., Outcome] | None = None,
                 resume: str = "auto") -> list[Outcome] | None:
    """Hand the jobs not done yet to the launcher ``launcher_name`` and record in ``state`` the
    submission, then each outcome as it is known (``on_outcome`` is told it too).

    Returns the outcomes, or None when the launcher's jobs run on without this process (Slurm)
    and ``wait`` is off. ``runner`` executes one job inside a scheduled process (tests pass a
    tiny one).
    """
    def finished(outcome: Outcome) -> None:
        state.note(outcome)
        state.save()
        if on_outcome:
            on_outcome(outcome)

    folder = state.path.parent / "logs" / f"{len(state.submissions):03d}"
    launcher = build_launcher(launcher_name, LaunchSettings(force, resume, finished, folder,
                                                            flags or {}, runner))
    state.plan(jobs)
    subs = launcher.submit(jobs, paths, running=active_jobs(state, paths.results))
    state.record(launcher_name, launcher.cluster, launcher.job_logs,
                 {s.job.job_id: s.scheduler_id for s in subs if s.scheduler_id is not None},
                 {s.job.job_id: s.outcome for s in subs if s.outcome is not None})
    state.save()
    if launcher.detached and not wait:
        return None
    return launcher.wait()


def show_outcome(outcome: Outcome) -> None:
    """One line per finished job: ``[ status] label: message``."""
    print(f"  [{outcome.status:>7}] {outcome.label}"
          + (f": {outcome.message}" if outcome.message else ""), flush=True)


def _method_sweep(args: argparse.Namespace, profile: Mapping[str, Any],
                  paths: Paths) -> tuple[SweepSpec, list[Job], str]:
    methods = tuple(m.strip() for m in (args.methods or "").split(",") if m.strip())
    if not methods:
        raise ConfigError("sweep needs --methods (comma-separated methods to pretrain) or "
                          "--weights-list FILE (checkpoints to evaluate); see `list --methods`")
    spec = SweepSpec(profile=args.profile, methods=methods, tasks=args.tasks,
                     seeds=tuple(parse_seeds(args.seeds)) if args.seeds else (profile["seed"],),
                     grid=tuple((k, tuple(v)) for k, v in parse_grid(args.overrides)),
                     sanity=not args.no_sanity)
    return spec, expand(spec, paths.runs), (f"{len(spec.methods)} method(s) x {len(spec.seeds)} "
                                            f"seed(s) x {len(spec.points())} grid point(s)")


def _weights_sweep(args: argparse.Namespace, profile: Mapping[str, Any]) -> tuple[Any, list[Job], str]:
    if args.methods:
        raise ConfigError("--methods and --weights-list exclude each other: the list's "
                          "checkpoints are evaluated as they are, without pretraining; drop one")
    grid = parse_grid(args.overrides)
    several = [key for key, values in grid if len(values) > 1]
    if several:
        raise ConfigError(f"--set {several[0]} with --weights-list takes one value (no grid); "
                          "run one sweep per value")
    overrides = [f"{key}={values[0]}" for key, values in grid]
    seeds = parse_seeds(args.seeds) if args.seeds else [profile["seed"]]
    cfgs = [resolve_run(args.profile, None, overrides, seed) for seed in seeds]
    options = WeightsOptions(allow_missing_keys=args.allow_missing_keys)
    spec, jobs, lines = plan_weights_list(args.weights_list, cfgs, args.tasks, options, overrides)
    print("\n".join(lines), flush=True)
    return spec, jobs, f"{len(spec.weights)} checkpoint(s) x {len(seeds)} seed(s)"


def cmd_sweep(args: argparse.Namespace) -> int:
    profile = resolve_run(args.profile).tree  # checked: its seed and launcher.name are set
    launcher_name = args.launcher or profile["launcher"]["name"]
    if launcher_name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher_name!r} (--launcher / launcher.name); "
                          f"valid launchers: {', '.join(LAUNCHERS)}")
    paths = Paths(results=args.results, runs=args.out, data_root=resolve_data_root(args.data_root))
    spec, jobs, covered = (_method_sweep(args, profile, paths) if args.weights_list is None
                           else _weights_sweep(args, profile))
    flags = resource_flags(args)
    folder = Path(args.sweeps) / safe_name(args.name or spec.name, "--name")
    print(f"sweep {folder}: {covered} -> {len(jobs)} jobs, launcher {launcher_name}")
    exclusions = describe_exclusions(profile, spec.tasks)
    if exclusions:
        print(exclusions)
    if args.dry_run:
        print(describe_plan(jobs, paths, launcher_name, flags, args.force))
        return 0
    require_inputs(jobs, paths, args.force)
    for option, output in (("--sweeps", args.sweeps), ("--out", args.out),
                           ("--results", args.results)):
        require_writable_folder(output, option)
    state = open_state(folder, spec)
    outcomes = submit_sweep(state, jobs, paths, launcher_name, flags, args.force, args.wait,
                            on_outcome=show_outcome)
    if outcomes is None:
        ids = state.submissions[-1]["scheduler_ids"]
        print(f"submitted {len(ids)} job(s); state: {state.path}\n"
              f"follow with: python -m benchmark status {folder}")
        return 0
    return 1 if any(o.status == OutcomeStatus.FAILED for o in outcomes) else 0
