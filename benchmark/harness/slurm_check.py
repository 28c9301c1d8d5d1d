"""Checks made before anything is submitted to Slurm: commands on PATH, partition, resources.

Each failure raises :class:`LaunchError` naming what is wrong and how to fix it, so a sweep
never half-submits.
"""
from __future__ import annotations

import shutil
import subprocess
from typing import Iterable

from benchmark.core.config import ConfigError
from benchmark.harness.resources import Resources

SLURM_COMMANDS = ("sbatch", "sinfo", "sacct", "scancel")


class LaunchError(ConfigError):
    """The cluster cannot take the jobs as asked (no Slurm, unknown partition, impossible size)."""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def require_slurm() -> None:
    """Slurm's client commands are on PATH and a controller answers ``sinfo``."""
    missing = [c for c in SLURM_COMMANDS if shutil.which(c) is None]
    if missing:
        raise LaunchError(
            f"--launcher slurm needs Slurm's commands on PATH; missing: {', '.join(missing)}. "
            "Install the Slurm client (Debian: apt-get install slurm-client), run on a login "
            "node, or use --launcher local / submitit-local / debug")
    probe = _run(["sinfo", "-h", "-o", "%P"])
    if probe.returncode != 0:
        raise LaunchError(f"`sinfo` failed, so no Slurm controller is reachable: "
                          f"{probe.stderr.strip() or probe.stdout.strip()}. Check SLURM_CONF "
                          "(a test cluster: bash .ci/slurm_up.sh)")


def partitions() -> list[str]:
    """Partition names the controller knows (the default one without its ``*``)."""
    out = _run(["sinfo", "-h", "-o", "%P"]).stdout.split()
    return sorted({name.rstrip("*") for name in out})


def check_resources(requests: Iterable[tuple[Resources, int]]) -> None:
    """Every distinct (resources, processes per node) request names a known partition and fits
    the cluster (``sbatch --test-only``)."""
    known = partitions()
    for res, procs in {tuple(r.sbatch_args(n)): (r, n) for r, n in requests}.values():
        if res.partition and res.partition not in known:
            raise LaunchError(f"unknown partition {res.partition!r} (launcher.partition / "
                              f"--partition); partitions on this cluster: {', '.join(known)}")
        test = _run(["sbatch", "--test-only", *res.sbatch_args(procs), "--wrap", "true"])
        if test.returncode != 0:
            message = " ".join(test.stderr.split()) or test.stdout.strip()
            raise LaunchError(f"the cluster cannot run a job with {res.describe()}: {message}. "
                              "Lower the request (launcher section of the profile, or the "
                              "--partition/--gpus-per-node/--cpus-per-task/--mem-gb/--time-min "
                              "flags)")
