"""The report's figures: find each report row's pretraining runs from the stored jobs, refresh
their stored figure inputs from the runs present (figure_inputs.py), and draw the figures from
the stored inputs (figures.py), so that a report without the runs draws the same figures."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import torch

from benchmark.core.config import RunConfig
from benchmark.core.identity import pretrain_run_dir
from benchmark.core.store import ResultStore
from benchmark.data import DatasetMissing, get_dataset, resolve_data_root
from benchmark.report.figure_inputs import SIMILARITY_EDGES, dense_counts, load_input, refresh_inputs
from benchmark.report.figures import (
    curves_figure,
    last_epoch_summary,
    positive_grid_figure,
    save_figure,
    similarity_figure,
)
from benchmark.report.frame import load_frame
from benchmark.report.rows import row_order

FIG2B_ROW = "InvP"  # the paper's Fig. 2b shows InvP's positives
NAMING_ROOT = Path("runs")  # run folder names do not depend on the runs root


@dataclass(frozen=True)
class FigureSet:
    """What the report links and shows: (caption, path relative to the report) pairs and the
    last-epoch diagnostics table (None without curves)."""

    figures: list[tuple[str, str]]
    diagnostics: pd.DataFrame | None


def pretrain_runs(results_dir: Path, profile: str, runs_dir: Path) -> dict[str, list[Path]]:
    """Pretraining run folders per report row, found from the stored jobs' configs, sorted by
    seed (then name)."""
    frame = load_frame(results_dir, profile)
    store = ResultStore(Path(results_dir) / profile)
    runs: dict[str, list[Path]] = {}
    pretrained = frame[(frame["encoder"] == "pretrained") & frame["value"].notna()]
    for row, group in pretrained.groupby("row"):
        folders = {}
        for job_id in group["job_id"].unique():
            job = (store.load_job(job_id) or {}).get("job", {})
            if "config" in job:
                cfg = RunConfig.from_dict(job["config"])
                folders[pretrain_run_dir(cfg, runs_dir)] = int(cfg.seed)
        runs[row] = sorted(folders, key=lambda d: (folders[d], d.name))
    return runs


def stored_inputs(results_dir: Path, profile: str, runs: Mapping[str, list[Path]]) -> dict[str, list[dict[str, Any]]]:
    """The stored figure inputs per row, in report order (rows without any left out)."""
    found = {row: [rec for d in runs[row] if (rec := load_input(results_dir, profile, d.name)) is not None]
             for row in row_order(runs)}
    return {row: recs for row, recs in found.items() if recs}


def pooled_histograms(inputs: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Fig. 2a's groups: per row with Fig. 2 inputs, the bin counts summed over its seeds and
    the seeds' mean similarities averaged."""
    groups = {}
    for row, recs in inputs.items():
        parts = [rec["fig2a"] for rec in recs if "fig2a" in rec]
        if parts:
            groups[row] = {"same": sum(dense_counts(p["same"]) for p in parts).tolist(),
                           "diff": sum(dense_counts(p["diff"]) for p in parts).tolist(),
                           "same_mean": sum(p["same_mean"] for p in parts) / len(parts),
                           "diff_mean": sum(p["diff_mean"] for p in parts) / len(parts),
                           "runs": len(parts)}
    return groups


def grid_images(grid: Mapping[str, Any], data_root: Path) -> dict[int, torch.Tensor]:
    """The images Fig. 2b shows, by dataset index, as (C, H, W) tensors in [0, 1]."""
    from torchvision import transforms as T

    data = get_dataset(grid["dataset"]).build(data_root, grid["split"], T.ToTensor())
    return {int(i): data[int(i)][0] for i in grid["labels"]}


def write_figures(results_dir: Path, profile: str, runs_dir: Path | None, out_dir: Path,
                  data_root: Path | None) -> FigureSet:
    """Refresh the stored figure inputs from the runs under ``runs_dir`` (if given), then draw
    every figure the stored inputs allow under ``out_dir/<profile>_figures``. A figure that
    cannot be drawn is named on stderr with the reason."""
    folder = Path(out_dir) / f"{profile}_figures"
    runs = pretrain_runs(results_dir, profile, runs_dir or NAMING_ROOT)
    if runs_dir is not None:
        refresh_inputs(results_dir, profile, [d for dirs in runs.values() for d in dirs], data_root)
    inputs = stored_inputs(results_dir, profile, runs)
    made = []
    curves = {row: [rec["curves"] for rec in recs if rec["curves"]] for row, recs in inputs.items()}
    curves = {row: logs for row, logs in curves.items() if logs}
    if curves:
        made.append(("Training curves: mean over seeds per row, band ± 1 std",
                     save_figure(curves_figure(curves), folder / "training_curves.png")))
    elif runs_dir is not None:
        print(f"figures: no log.jsonl under {runs_dir}/{profile}: no training curves", file=sys.stderr)
    groups = pooled_histograms(inputs)
    if groups:
        made.append(("Fig. 2a: similarity to the 5 nearest same-class / different-class neighbours "
                     "(test split, L2-normalised embedding; one similarity axis for all panels)",
                     save_figure(similarity_figure(groups, SIMILARITY_EDGES), folder / "fig2a_similarity.png")))
    grid = next((rec for rec in inputs.get(FIG2B_ROW, []) if "fig2b" in rec), None)
    if grid is None:
        if runs_dir is not None or inputs:
            print(f"figures: Fig. 2 needs the encoder of a {FIG2B_ROW} run (runs under --runs, or stored "
                  f"inputs under {results_dir}/{profile}/figures)", file=sys.stderr)
        return _figure_set(made, curves, out_dir)
    try:
        images = grid_images(grid["fig2b"], resolve_data_root(data_root))
    except DatasetMissing as err:
        print(f"figures: Fig. 2b needs the {grid['fig2b']['dataset']} images: {err}", file=sys.stderr)
        return _figure_set(made, curves, out_dir)
    title = f"{FIG2B_ROW} ({grid['run']}): anchors with easy (nearest) and hard (propagated) positives"
    made.append(("Fig. 2b: InvP anchors with easy (nearest) and hard (propagated) positives; "
                 "green frame = the anchor's class, red = another class",
                 save_figure(positive_grid_figure(grid["fig2b"], images, title), folder / "fig2b_positives.png")))
    return _figure_set(made, curves, out_dir)


def _figure_set(made: list[tuple[str, Path]], curves: Mapping[str, Any], out_dir: Path) -> FigureSet:
    return FigureSet([(c, str(Path(p).relative_to(out_dir))) for c, p in made],
                     last_epoch_summary(curves) if curves else None)
