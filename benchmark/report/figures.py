"""Report figures (matplotlib, Agg backend: no display needed), drawn from the stored figure
inputs (benchmark/report/figure_inputs.py) and written as PNG beside the report.

* Paper Fig. 2a: distributions of the cosine similarity of each image to its 5 nearest
  same-class and 5 nearest different-class neighbours, one panel per row, all panels on one
  similarity axis.
* Paper Fig. 2b: anchors with their easy positives (nearest neighbours) and hard positives (the
  least similar nodes reached by propagating in the kNN graph), each positive framed and
  labelled as of the anchor's class or not.
* Training curves from the pretraining logs: one metric per panel, one line per row (the mean
  over seeds, with a ± 1 std band), the legend outside the panels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from benchmark.core.atomic import atomic_open  # noqa: E402

CURVE_METRICS = (  # (log key, panel title), in panel order; a panel only when a log holds the key
    ("loss", "total loss"),
    ("knn_top1", "kNN monitor top-1 (embedding)"),
    ("knn_top1_backbone", "kNN monitor top-1 (backbone)"),
    ("pos_precision", "precision of discovered positives"),
    ("pool_precision", "precision of the top-M pool"),
    ("knn_precision", "CLIM: precision of the kNN selection"),
    ("unique_positives", "unique positives per anchor"),
    ("hard_pos_sim", "similarity to the hardest positive"),
    ("easy_pos_sim", "similarity to the easiest positive"),
    ("alignment", "alignment (lower: views closer)"),
    ("uniformity", "uniformity (lower: more spread)"),
    ("rankme", "effective rank (RankMe)"),
    ("mean_cosine", "mean pairwise cosine"),
    ("nn_same_class_sim", "5-NN same-class similarity"),
    ("nn_diff_class_sim", "5-NN different-class similarity"),
)
SUMMARY_KEYS = ("pos_precision", "pool_precision", "unique_positives", "hard_pos_sim",
                "easy_pos_sim", "knn_top1", "rankme", "mean_cosine", "loss")  # last-epoch table
CURVE_COLUMNS = 4
DISPLAY_BINS = 60  # Fig. 2a: about this many bars span the shown range
TAIL_SHOWN = 0.005  # Fig. 2a: the shown range starts at the lowest 0.5 % quantile of any panel
SAME_CLASS_COLOUR, OTHER_CLASS_COLOUR = "tab:green", "tab:red"

Curves = Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]  # row -> one epoch list per seed


def shown_range(groups: Mapping[str, Mapping[str, Any]]) -> tuple[int, int]:
    """(first, last) fine bin shown by Fig. 2a: from the lowest ``TAIL_SHOWN`` quantile of any
    panel's histogram to the last non-empty bin of any."""
    firsts, lasts = [], []
    for group in groups.values():
        for key in ("same", "diff"):
            counts = torch.as_tensor(group[key], dtype=torch.float64)
            mass = counts.cumsum(0) / counts.sum()
            firsts.append(int((mass >= TAIL_SHOWN).nonzero()[0]))
            lasts.append(int(counts.nonzero()[-1]))
    return min(firsts), max(lasts)


def similarity_figure(groups: Mapping[str, Mapping[str, Any]], edges: Sequence[float]) -> Figure:
    """Fig. 2a: one panel per row of ``groups`` (row -> {"same", "diff": bin counts on
    ``edges``, "same_mean", "diff_mean", "runs"}), density histograms on one shared x range
    (:func:`shown_range`), the fine bins merged so that about ``DISPLAY_BINS`` cover it."""
    first, last = shown_range(groups)
    fine = len(edges) - 1
    factor = min((d for d in range(1, fine + 1) if fine % d == 0),
                 key=lambda d: abs(d - (last - first + 1) / DISPLAY_BINS))
    coarse_edges = list(edges[::factor])
    width = (torch.tensor(coarse_edges[1:]) - torch.tensor(coarse_edges[:-1])).double()
    ncols = min(4, len(groups))
    nrows = -(-len(groups) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.8 * nrows + 0.5), squeeze=False,
                             sharex=True)
    for ax, (name, group) in zip(axes.flatten(), groups.items()):
        for key, label, colour in (("same", "same class", "tab:blue"), ("diff", "different class", "tab:orange")):
            counts = torch.as_tensor(group[key], dtype=torch.float64).view(-1, factor).sum(dim=1)
            ax.stairs((counts / (counts.sum() * width)).tolist(), coarse_edges, fill=True, alpha=0.55,
                      color=colour, label=label)
        ax.set_title(f"{name} ({group['runs']} seed{'s' if group['runs'] != 1 else ''})\n"
                     f"mean same {group['same_mean']:.3f}, different {group['diff_mean']:.3f}", fontsize=9)
        ax.set_ylabel("density", fontsize=8)
        ax.tick_params(labelbottom=True, labelsize=8)
        ax.set_xlabel("cosine similarity to the 5 nearest", fontsize=8)
    for ax in axes.flatten()[len(groups):]:
        ax.axis("off")
    low, high = edges[first], edges[last + 1]
    pad = 0.02 * (high - low)
    axes[0][0].set_xlim(low - pad, high + pad)  # shared by every panel (sharex)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def grid_cells(grid: Mapping[str, Any]) -> list[list[tuple[str, int, int, bool]]]:
    """Fig. 2b's cells per anchor: (kind, image index, label, same class as the anchor), the
    anchor first, then its easy and hard positives, from a stored ``fig2b`` input."""
    labels = {int(i): int(label) for i, label in grid["labels"].items()}
    rows = []
    for anchor, easy, hard in zip(grid["anchors"], grid["easy"], grid["hard"]):
        picks = [("anchor", anchor)] + [("easy", i) for i in easy] + [("hard", i) for i in hard]
        rows.append([(kind, int(i), labels[int(i)], labels[int(i)] == labels[int(anchor)]) for kind, i in picks])
    return rows


def positive_grid_figure(grid: Mapping[str, Any], images: Mapping[int, torch.Tensor], title: str = "") -> Figure:
    """Fig. 2b: one row per anchor (anchor, easy positives, hard positives); each positive is
    framed green (the anchor's class) or red (another class) and titled with its class.
    ``images[i]``: image i as a (C, H, W) tensor in [0, 1]."""
    cells = grid_cells(grid)
    names = grid.get("class_names") or []
    cols = len(cells[0])
    fig, axes = plt.subplots(len(cells), cols, figsize=(1.15 * cols, 1.4 * len(cells) + 0.6), squeeze=False)
    for r, row in enumerate(cells):
        for c, (kind, index, label, same) in enumerate(row):
            ax = axes[r][c]
            image = images[index].detach().cpu()
            pixels = image.squeeze(0) if image.shape[0] == 1 else image.permute(1, 2, 0)
            ax.imshow(pixels.numpy(), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            name = names[label] if label < len(names) else str(label)
            colour = "black" if kind == "anchor" else SAME_CLASS_COLOUR if same else OTHER_CLASS_COLOUR
            ax.set_title(f"{kind}\n{name}", fontsize=6, color=colour)
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1 if kind == "anchor" else 2.5)
    fig.suptitle(f"{title}\ngreen frame: the anchor's class; red frame: another class", fontsize=8)
    fig.tight_layout()
    return fig


def curve_bands(logs: Sequence[Sequence[Mapping[str, Any]]], key: str) -> pd.DataFrame:
    """Per epoch: mean, sample std (NaN below 2 seeds) and seed count ``n`` of ``key`` over
    the seeds' ``logs``; epochs where no seed logged it are left out."""
    points = pd.DataFrame([(e.get("epoch", n + 1), s, float(e[key]))
                           for s, log in enumerate(logs) for n, e in enumerate(log)
                           if isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool)],
                          columns=["epoch", "seed", "value"])
    grouped = points.groupby("epoch")["value"]
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})


def curves_figure(runs: Curves) -> Figure:
    """Training curves: a panel per ``CURVE_METRICS`` key some log holds, a line per row (the
    mean over its seeds, markers where the key is logged sparsely) and a ± 1 std band."""
    panels = [(key, title) for key, title in CURVE_METRICS
              if any(key in entry for logs in runs.values() for log in logs for entry in log)]
    if not panels:
        raise ValueError("the pretraining logs hold none of the curve keys "
                         f"({', '.join(k for k, _ in CURVE_METRICS)})")
    ncols = 3 if len(panels) % 3 == 0 else min(CURVE_COLUMNS, len(panels))  # no lone last panel
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols, 2.6 * nrows + 0.8), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes.flatten(), panels):
        for i, (label, logs) in enumerate(runs.items()):
            band = curve_bands(logs, key)
            if band.empty:
                continue
            colour = colours[i % len(colours)]
            marker = "o" if len(band) < 8 else None
            ax.plot(band.index, band["mean"], color=colour, marker=marker, markersize=3, label=label)
            ax.fill_between(band.index, band["mean"] - band["std"].fillna(0), band["mean"] + band["std"].fillna(0),
                            color=colour, alpha=0.2, linewidth=0)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flatten()[len(panels):]:
        ax.axis("off")
    handles = [Line2D([], [], color=colours[i % len(colours)], label=label) for i, label in enumerate(runs)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), frameon=False, fontsize=8,
               title="row: mean over seeds, band ± 1 std", title_fontsize=8)
    legend_rows = -(-len(handles) // 4)
    fig.tight_layout(rect=(0, min(0.4, (0.35 + 0.25 * legend_rows) / fig.get_figheight()), 1, 1))
    return fig


def last_epoch_summary(runs: Curves) -> pd.DataFrame:
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


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix) atomically and close it. Fixed
    metadata (no software or date stamp) keeps equal figures byte-identical."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=path.suffix.lstrip("."), dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
