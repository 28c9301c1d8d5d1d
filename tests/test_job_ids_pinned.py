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
    assert len(pinned) == 408
    assert planned == pinned


def test_committed_mini_results_are_planned_jobs():
    """The committed mini results are the 3-seed sweep: every task of the 18 pretrained encoders
    is there as a record (or, where it cannot run, as a skip record under ``skipped/``), and every
    committed record is a pinned job or one of the six Table 5 ablation records (linear, kNN and
    diagnostics of InvP without hard positives / hard negatives). The sanity encoders (random
    init, raw pixels) come in two configs, the InvP family's and the MoCo family's (another model
    block): the InvP family's are committed for every task and seed (78 jobs), the MoCo family's
    for every task of seed 0 (26: that seed's task sweep ran all six methods with their sanity
    rows) and for the four probe tasks and the diagnostics of seeds 1 and 2 (20), since those
    seeds' MoCo-family task sweeps ran with ``--no-sanity``."""
    rows = [line.split() for line in PINNED.read_text().splitlines()]
    pinned = {row[0] for row in rows}
    pretrain = {row[0] for row in rows if row[1] == "pretrain"}
    of_encoders = {row[0] for row in rows if row[2] in pretrain}
    sanity = {row[0] for row in rows if row[1] == "task" and row[2] == "-"}
    folder = REPO_ROOT / "results" / "mini"
    committed = {p.stem for p in folder.glob("*.json")}
    skipped = {p.stem for p in (folder / "skipped").glob("*.json")}
    assert len(pretrain) == 18 and of_encoders <= committed | skipped
    assert len((committed | skipped) & sanity) == 78 + 26 + 20
    assert len(committed - pinned) == 6 and not skipped - pinned
