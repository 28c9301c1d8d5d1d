"""Report figures (matplotlib, Agg backend: no display needed), written as PNG beside the report.

* Paper Fig. 2a: distributions of the cosine similarity of each sample to its 5 nearest
  same-class and 5 nearest different-class neighbours, one panel per method.
* Paper Fig. 2b: anchors with their easy positives (nearest neighbours) and hard positives (the
  least similar nodes reached by propagating ``steps`` times in the kNN graph).
* Training curves from the pretraining ``log.jsonl`` files: loss terms, kNN monitor, precision of
  discovered positives and unique positives per epoch, whichever keys the logs hold.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmark.core.atomic import atomic_open  # noqa: E402
from benchmark.core.config import RunConfig
from benchmark.core.identity import pretrain_run_dir
from benchmark.core.store import ResultStore
from benchmark.data import get_dataset
from benchmark.engine.epoch_log import log_lines
from benchmark.models.encoders import read_encoder_checkpoint
from benchmark.models.heads import build_head
from benchmark.report.frame import load_frame
from methods.parts.propagation import propagate_bfs
from tasks.base import EncoderHandle
from tasks.transforms import eval_transform

CURVE_PANELS = (  # (title, predicate on a log key)
    ("loss terms", lambda k: "loss" in k),
    ("kNN monitor accuracy", lambda k: k.startswith("knn")),
    ("precision of discovered positives", lambda k: "precision" in k),
    ("unique positives", lambda k: "unique" in k),
    ("similarity of hard / easy positives", lambda k: k.endswith("_sim")),
)
SUMMARY_KEYS = ("pos_precision", "pool_precision", "unique_positives", "hard_pos_sim",
                "easy_pos_sim", "knn_top1", "loss")  # last-epoch diagnostics shown in the report
FIG2_METHODS = ("InvP", "InsDis")
FIG2_LIMIT = 2000  # labelled images used for Fig. 2 (first of the test split)


def neighbour_similarities(
    features: torch.Tensor, labels: torch.Tensor, k: int = 5, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity of every sample to its ``k`` nearest same-class and different-class
    neighbours (itself excluded): two (N, k) tensors, rows sorted descending."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")
    z = F.normalize(features.float(), dim=1)
    same_out, diff_out = [], []
    for start in range(0, z.shape[0], chunk):
        sims = z[start : start + chunk] @ z.T
        rows = torch.arange(start, start + sims.shape[0], device=z.device)
        same = labels[start : start + chunk].view(-1, 1) == labels.view(1, -1)
        not_self = torch.ones_like(same)
        not_self[torch.arange(sims.shape[0]), rows] = False
        same_out.append(sims.masked_fill(~(same & not_self), -float("inf")).topk(k, dim=1).values)
        diff_out.append(sims.masked_fill(same, -float("inf")).topk(k, dim=1).values)
    return torch.cat(same_out), torch.cat(diff_out)


def plot_similarity_distributions(
    groups: Mapping[str, tuple[torch.Tensor, torch.Tensor]], path: Path
) -> Path:
    """Fig. 2a: one panel per method, histograms of same-class and different-class similarity."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 3.4), squeeze=False)
    for ax, (name, (same, diff)) in zip(axes[0], groups.items()):
        same, diff = same[torch.isfinite(same)], diff[torch.isfinite(diff)]
        both = torch.cat([same, diff])
        bins = torch.linspace(float(both.min()), float(both.max()) + 1e-6, 61).tolist()
        ax.hist(same.flatten().tolist(), bins=bins, alpha=0.6, density=True, label="same class")
        ax.hist(diff.flatten().tolist(), bins=bins, alpha=0.6, density=True, label="different class")
        ax.set_title(f"{name}: mean same {same.mean():.2f}, diff {diff.mean():.2f}")
        ax.set_xlabel("cosine similarity to the 5 nearest")
        ax.legend()
    return _save(fig, path)


def knn_table(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) indices of each sample's ``k`` most similar other samples (cosine)."""
    z = F.normalize(features.float(), dim=1)
    sims = z @ z.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


def easy_hard_positives(
    features: torch.Tensor, anchors: torch.Tensor, k: int = 4, steps: int = 3, n_show: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fig. 2b's positives per anchor: (easy, hard), each (A, n_show) sample indices.

    Easy = the most similar graph neighbours; hard = the least similar of the nodes reached in
    1..``steps`` propagation steps (de-duplicated, anchor excluded).
    """

    table = knn_table(features, max(k, n_show))
    z = F.normalize(features.float(), dim=1)
    easy = table[anchors, :n_show]
    reached, mask = propagate_bfs(table[:, :k], anchors, steps)
    sims = (z[anchors].unsqueeze(1) * z[reached]).sum(-1).masked_fill(~mask, float("inf"))
    hard_cols = sims.topk(min(n_show, reached.shape[1]), dim=1, largest=False).indices
    return easy, reached.gather(1, hard_cols)


def plot_positive_grid(
    images: torch.Tensor | Mapping[int, torch.Tensor], anchors: torch.Tensor, easy: torch.Tensor, hard: torch.Tensor,
    path: Path, title: str = "",
) -> Path:
    """Fig. 2b: one row per anchor: the anchor, its easy positives, then its hard positives.
    ``images[i]`` is sample i as a (C, H, W) tensor in [0, 1]."""
    cols = 1 + easy.shape[1] + hard.shape[1]
    fig, axes = plt.subplots(len(anchors), cols, figsize=(1.2 * cols, 1.3 * len(anchors)),
                             squeeze=False)
    for r, anchor in enumerate(anchors.tolist()):
        picks = [("anchor", anchor)] + [("easy", int(i)) for i in easy[r]] + [
            ("hard", int(i)) for i in hard[r]]
        for c, (kind, index) in enumerate(picks):
            ax = axes[r][c]
            image = images[index].detach().cpu()
            pixels = image.squeeze(0) if image.shape[0] == 1 else image.permute(1, 2, 0)
            ax.imshow(pixels.numpy(), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(kind, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a pretraining ``log.jsonl`` (a half-written line of a killed run
    is skipped with a warning)."""
    return [record for _, record in log_lines(path)]


def plot_training_curves(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                         path: Path) -> Path:
    """Per-epoch curves, one colour per row label, one line per seed; panels by key family."""
    numeric = {
        key
        for logs in runs.values() for log in logs for entry in log
        for key, value in entry.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"
    }
    panels = [(title, sorted(k for k in numeric if pick(k))) for title, pick in CURVE_PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    if not panels:
        raise ValueError("the pretraining logs hold no loss, knn, precision or unique keys")
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax in axes.flatten()[len(panels):]:
        ax.axis("off")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ("-", "--", ":", "-.")
    for ax, (title, keys) in zip(axes.flatten(), panels):
        for i, (label, logs) in enumerate(runs.items()):
            for j, key in enumerate(keys):
                for s, log in enumerate(logs):
                    points = [(e.get("epoch", n + 1), e[key]) for n, e in enumerate(log) if key in e]
                    if points:
                        xs, ys = zip(*points)
                        ax.plot(xs, ys, styles[j % len(styles)], color=colours[i % len(colours)],
                                alpha=0.8, label=f"{label}: {key}" if s == 0 else None)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=6)
    return _save(fig, path)


def last_epoch_summary(runs: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> pd.DataFrame:
    """Per row: the last logged epoch's ``SUMMARY_KEYS`` as mean ± std over seeds (runs)."""
    table = {}
    for label, logs in runs.items():
        last = [log[-1] for log in logs if log]
        cells = {"epochs": ", ".join(sorted({str(e.get("epoch", "?")) for e in last}))}
        for key in SUMMARY_KEYS:
            values = pd.Series([e[key] for e in last if isinstance(e.get(key), (int, float))], dtype=float)
            if len(values):
                spread = f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""
                cells[key] = f"{values.mean():.3f}{spread} (n={len(values)})"
        table[label] = cells
    frame = pd.DataFrame.from_dict(table, orient="index")
    columns = ["epochs"] + [k for k in SUMMARY_KEYS if k in frame.columns]
    return frame[columns].fillna("—")


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip("."), dpi=110)
    plt.close(fig)
    return path


def pretrain_runs(results_dir: Path, profile: str, runs_dir: Path) -> dict[str, list[Path]]:
    """Pretraining run folders per report row, found from the stored jobs' configs."""
    frame = load_frame(results_dir, profile)
    store = ResultStore(Path(results_dir) / profile)
    runs: dict[str, list[Path]] = {}
    pretrained = frame[(frame["encoder"] == "pretrained") & frame["value"].notna()]
    for row, group in pretrained.groupby("row"):
        folders = set()
        for job_id in group["job_id"].unique():
            job = (store.load_job(job_id) or {}).get("job", {})
            if "config" in job:
                cfg = RunConfig.from_dict(job["config"])
                folders.add(pretrain_run_dir(cfg, runs_dir))
        runs[row] = sorted(folders)
    return runs


def encoder_features(
    checkpoint: Path, data_root: Path, limit: int = FIG2_LIMIT, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(embeddings, labels, displayable dataset) of the first ``limit`` test images of the
    checkpoint's pretraining dataset. Embeddings are the L2-normalised head outputs: the space in
    which the methods measure similarity (the backbone's post-ReLU features are all positive and
    crowd near cosine 1)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms as T

    state = read_encoder_checkpoint(checkpoint)
    cfg = RunConfig.from_dict(state["config"])
    spec = get_dataset(cfg.data.dataset)
    data = spec.build(data_root, "test", eval_transform(cfg.data.dataset))
    keep = range(min(limit, len(data)))
    shown = Subset(spec.build(data_root, "test", T.ToTensor()), keep)
    backbone = EncoderHandle("pretrained", cfg, checkpoint).load(device)
    head = build_head(cfg.model, backbone.feature_dim)
    head.load_state_dict(state["head"])
    head.to(device).eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(Subset(data, keep), batch_size=256):
            feats.append(F.normalize(head(backbone(x.to(device))), dim=1).cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels), shown


@dataclass(frozen=True)
class FigureSet:
    """What the report links and shows from the runs: (caption, path relative to the report)
    pairs and the last-epoch diagnostics table (None without logs)."""

    figures: list[tuple[str, str]]
    diagnostics: pd.DataFrame | None


def write_figures(
    results_dir: Path, profile: str, runs_dir: Path, out_dir: Path, data_root: Path | None
) -> FigureSet:
    """Draw every figure the runs allow under ``out_dir/<profile>_figures``. A figure that
    cannot be drawn is named on stderr with the reason."""
    folder = Path(out_dir) / f"{profile}_figures"
    runs = pretrain_runs(results_dir, profile, runs_dir)
    made = []
    logs = {row: [read_log(d / "log.jsonl") for d in dirs if (d / "log.jsonl").is_file()]
            for row, dirs in runs.items()}
    logs = {row: found for row, found in logs.items() if found}
    if logs:
        path = plot_training_curves(logs, folder / "training_curves.png")
        made.append(("Training curves per method (one line per seed)", path))
    else:
        print(f"figures: no log.jsonl under {runs_dir}/{profile}: no training curves",
              file=sys.stderr)
    checkpoints = {row: next((d / "encoder.pt" for d in runs.get(row, [])
                              if (d / "encoder.pt").is_file()), None) for row in FIG2_METHODS}
    missing = [row for row, ckpt in checkpoints.items() if ckpt is None]
    if data_root is None or missing:
        print(f"figures: Fig. 2 needs --data-root and encoders of {', '.join(FIG2_METHODS)} "
              f"(missing: {', '.join(missing) or 'none'})", file=sys.stderr)
        return _figure_set(made, logs, out_dir)
    extracted = {row: encoder_features(ckpt, Path(data_root)) for row, ckpt in checkpoints.items()}
    groups = {row: neighbour_similarities(f, y) for row, (f, y, _) in extracted.items()}
    made.append(("Fig. 2a: similarity to the 5 nearest same-class / different-class neighbours",
                 plot_similarity_distributions(groups, folder / "fig2a_similarity.png")))
    features, _, shown = extracted["InvP"]
    anchors = torch.arange(6)
    easy, hard = easy_hard_positives(features, anchors)
    needed = set(anchors.tolist()) | set(easy.flatten().tolist()) | set(hard.flatten().tolist())
    images = {i: shown[i][0] for i in needed}
    made.append(("Fig. 2b: InvP anchors with easy (nearest) and hard (propagated) positives",
                 plot_positive_grid(images, anchors, easy, hard, folder / "fig2b_positives.png")))
    return _figure_set(made, logs, out_dir)


def _figure_set(made: list[tuple[str, Path]], logs: Mapping[str, Any], out_dir: Path) -> FigureSet:
    return FigureSet([(c, str(Path(p).relative_to(out_dir))) for c, p in made],
                     last_epoch_summary(logs) if logs else None)
