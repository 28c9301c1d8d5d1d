"""The job ids (config hashes) of the committed mini results must not drift.

``tests/data/mini_sweep_job_ids.txt`` holds the jobs planned by
``python -m benchmark sweep --methods invp,insdis,knn,mocov2,interclr,clim --seeds 0,1,2
--profile mini --launcher local --dry-run`` (id, kind, dependency, label) when the committed
results were made; a refactor that changes any of them would orphan ``results/mini``.
"""
from __future__ import annotations

import re
from pathlib import Path

from benchmark.harness.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
PINNED = Path(__file__).resolve().parent / "data" / "mini_sweep_job_ids.txt"
JOB_LINE = re.compile(r"^([0-9a-f]{12})\s+(\S+)\s+\S+\s+(\S+)\s+(.*\S)\s*$")


def planned_jobs(capsys) -> list[str]:
    code = main(["sweep", "--methods", "invp,insdis,knn,mocov2,interclr,clim", "--seeds", "0,1,2",
                 "--profile", "mini", "--launcher", "local", "--dry-run"])
    assert code == 0
    rows = []
    for line in capsys.readouterr().out.splitlines():
        match = JOB_LINE.match(line)
        if match:
            job_id, kind, after, label = match.groups()
            rows.append(f"{job_id} {kind} {after} {label}")
    return rows


def test_mini_sweep_plans_the_pinned_job_ids(capsys):
    planned = planned_jobs(capsys)
    pinned = PINNED.read_text().splitlines()
    assert len(pinned) == 288
    assert planned == pinned


def test_committed_mini_results_are_planned_jobs():
    """Every committed mini record of the six methods' sweep is one of the pinned jobs (the
    Table 5 ablation records are the only others). The committed results are seed 0 of the sweep
    (all its seed-0 jobs) and of the two ablations."""
    rows = [line.split() for line in PINNED.read_text().splitlines()]
    seed0_pretrain = {row[0] for row in rows if row[1] == "pretrain" and row[-1] == "seed=0"}
    pinned = {row[0] for row in rows}
    of_seed0 = {row[0] for row in rows if row[2] in seed0_pretrain}
    committed = {p.stem for p in (REPO_ROOT / "results" / "mini").glob("*.json")}
    assert len(committed) == 73 and len(committed & pinned) == 69  # and 4 of the ablations
    assert of_seed0 <= committed  # every task of the six seed-0 encoders
