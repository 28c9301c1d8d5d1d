"""The report figures' inputs, one small JSON record per pretraining run under
``results/<profile>/figures/<run folder name>.json``, so that ``report`` redraws the same
figures without the runs (a fresh clone, a deleted runs folder).

A record holds the run's per-epoch curves (the ``CURVE_METRICS`` keys of its ``log.jsonl``)
and, from its encoder, the Fig. 2a histograms (bin counts on ``SIMILARITY_EDGES``, shared by
every run) and the Fig. 2b anchors with their easy / hard positives (dataset indices of the
test split, with every shown image's label), beside the encoder file's sha256 and the code
version that computed them. A record whose encoder hash no longer matches the run's encoder
is recomputed; one whose hash matches keeps its Fig. 2 inputs.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from benchmark.core.config import RunConfig
from benchmark.core.provenance import git_state
from benchmark.core.store import write_text_atomic
from benchmark.data import DatasetMissing, get_dataset, resolve_data_root
from benchmark.engine.epoch_log import log_lines
from benchmark.models.encoders import read_encoder_checkpoint
from benchmark.models.heads import build_head
from benchmark.report.figures import CURVE_METRICS
from methods.parts.propagation import propagate_bfs
from tasks.base import EncoderHandle
from tasks.diagnostic_measures import nearest_similarities
from tasks.transforms import eval_transform

FIGURES_FOLDER = "figures"  # under results/<profile>/
FIG2_SPLIT = "test"
FIG2_LIMIT = 2000  # labelled images used for Fig. 2 (the first of the test split)
FIG2_NEIGHBOURS = 5
SIMILARITY_BINS = 800  # bins of 0.0025 on [-1, 1]: every run's histogram on the same axis
SIMILARITY_EDGES = torch.linspace(-1.0, 1.0, SIMILARITY_BINS + 1).tolist()
ANCHORS, SHOWN, GRAPH_K, STEPS = 6, 4, 4, 3  # Fig. 2b: anchors, positives of each kind, graph


def read_log(path: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a pretraining ``log.jsonl`` (a half-written line of a killed run
    is skipped with a warning)."""
    return [record for _, record in log_lines(path)]


def curves_of(log: list[Mapping[str, Any]]) -> list[dict[str, float]]:
    """The epoch and ``CURVE_METRICS`` values of each log record (what the figures use)."""
    keys = [key for key, _ in CURVE_METRICS]
    return [{"epoch": e.get("epoch", n + 1), **{k: e[k] for k in keys if isinstance(e.get(k), (int, float))}}
            for n, e in enumerate(log)]


def histogram(values: torch.Tensor) -> dict[str, Any]:
    """Counts of the finite ``values`` on ``SIMILARITY_EDGES``, stored from the first to the
    last non-empty bin: {"first": bin index, "counts": [...]}."""
    finite = values[torch.isfinite(values)].double().clamp(-1.0, 1.0)
    bins = ((finite + 1.0) / 2.0 * SIMILARITY_BINS).long().clamp(max=SIMILARITY_BINS - 1)
    counts = torch.bincount(bins, minlength=SIMILARITY_BINS)
    used = counts.nonzero().flatten()
    first, last = (int(used.min()), int(used.max())) if len(used) else (0, -1)
    return {"first": first, "counts": counts[first : last + 1].tolist()}


def dense_counts(stored: Mapping[str, Any]) -> torch.Tensor:
    """All ``SIMILARITY_BINS`` counts of a :func:`histogram` record."""
    counts = torch.zeros(SIMILARITY_BINS, dtype=torch.long)
    counts[stored["first"] : stored["first"] + len(stored["counts"])] = torch.tensor(stored["counts"], dtype=torch.long)
    return counts


def knn_table(features: torch.Tensor, k: int) -> torch.Tensor:
    """(N, k) indices of each sample's ``k`` most similar other samples (cosine)."""
    z = F.normalize(features.float(), dim=1)
    sims = z @ z.T
    sims.fill_diagonal_(-float("inf"))
    return sims.topk(k, dim=1).indices


def easy_hard_positives(
    features: torch.Tensor, anchors: torch.Tensor, k: int = GRAPH_K, steps: int = STEPS, n_show: int = SHOWN
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


def first_of_each_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    """Index of the first image of each of the ``count`` smallest labels present."""
    classes = labels.unique()[:count]
    return torch.stack([(labels == c).nonzero()[0, 0] for c in classes])


def encoder_features(checkpoint: Path, data_root: Path, limit: int = FIG2_LIMIT,
                     device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, str]:
    """(embeddings, labels, dataset name) of the first ``limit`` test images of the
    checkpoint's pretraining dataset. Embeddings are the L2-normalised head outputs: the space in
    which the methods measure similarity (the backbone's post-ReLU features are all positive and
    crowd near cosine 1)."""
    state = read_encoder_checkpoint(checkpoint)
    cfg = RunConfig.from_dict(state["config"])
    dataset = cfg.data.dataset
    data = get_dataset(dataset).build(data_root, FIG2_SPLIT, eval_transform(dataset))
    keep = range(min(limit, len(data)))
    backbone = EncoderHandle("pretrained", cfg, checkpoint).load(device)
    head = build_head(cfg.model, backbone.feature_dim)
    head.load_state_dict(state["head"])
    head.to(device).eval()
    feats, labels = [], []
    with torch.no_grad():
        for x, y in DataLoader(Subset(data, keep), batch_size=256, generator=torch.Generator()):
            feats.append(F.normalize(head(backbone(x.to(device))), dim=1).cpu())
            labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels), dataset


def fig2_inputs(features: torch.Tensor, labels: torch.Tensor, dataset: str,
                class_names: list[str] | None = None) -> dict[str, Any]:
    """Fig. 2a's histograms and Fig. 2b's anchors and positives of one encoder's test
    ``features`` and ``labels``."""
    same, diff = nearest_similarities(features.float(), labels, FIG2_NEIGHBOURS)
    anchors = first_of_each_class(labels, ANCHORS)
    easy, hard = easy_hard_positives(features, anchors)
    shown = sorted(set(anchors.tolist()) | set(easy.flatten().tolist()) | set(hard.flatten().tolist()))
    return {
        "fig2a": {"same": histogram(same), "diff": histogram(diff),
                  "same_mean": float(same[torch.isfinite(same)].mean()),
                  "diff_mean": float(diff[torch.isfinite(diff)].mean()),
                  "images": len(labels), "neighbours": FIG2_NEIGHBOURS},
        "fig2b": {"dataset": dataset, "split": FIG2_SPLIT, "anchors": anchors.tolist(),
                  "easy": easy.tolist(), "hard": hard.tolist(),
                  "labels": {str(i): int(labels[i]) for i in shown}, "class_names": class_names},
    }


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_path(results_dir: Path, profile: str, run_name: str) -> Path:
    """Where the figure inputs of the run folder ``run_name`` are stored."""
    return Path(results_dir) / profile / FIGURES_FOLDER / f"{run_name}.json"


def load_input(results_dir: Path, profile: str, run_name: str) -> dict[str, Any] | None:
    """The stored figure inputs of ``run_name`` (None when there are none)."""
    path = input_path(results_dir, profile, run_name)
    return json.loads(path.read_text()) if path.is_file() else None


def _class_names(dataset: str, data_root: Path) -> list[str] | None:
    names = getattr(get_dataset(dataset).build(data_root, FIG2_SPLIT), "classes", None)
    return [str(n) for n in names] if names is not None else None


def run_input(run_dir: Path, data_root: Path, stored: Mapping[str, Any] | None) -> dict[str, Any]:
    """The figure inputs of a present run: its curves, and its Fig. 2 inputs (kept from
    ``stored`` when its encoder hash still matches, else computed; none without an encoder or
    the dataset, named on stderr)."""
    log = run_dir / "log.jsonl"
    record: dict[str, Any] = {"run": run_dir.name, "curves": curves_of(read_log(log)) if log.is_file() else []}
    encoder = run_dir / "encoder.pt"
    if not encoder.is_file():
        return record
    digest = file_sha256(encoder)
    if stored is not None and stored.get("encoder_sha256") == digest and "fig2a" in stored:
        return {**record, **{k: stored[k] for k in ("encoder_sha256", "code_version", "fig2a", "fig2b")}}
    try:
        features, labels, dataset = encoder_features(encoder, data_root)
        names = _class_names(dataset, data_root)
    except DatasetMissing as err:
        print(f"figures: no Fig. 2 inputs for {run_dir.name}: {err}", file=sys.stderr)
        return record
    state = git_state()
    version = f"{state['git_commit']}{'*' if state['git_dirty'] else ''}"
    return {**record, "encoder_sha256": digest, "code_version": version,
            **fig2_inputs(features, labels, dataset, names)}


def refresh_inputs(results_dir: Path, profile: str, run_dirs: list[Path], data_root: Path | None) -> None:
    """Rewrite the stored inputs of every present run in ``run_dirs`` whose inputs changed."""
    root = resolve_data_root(data_root)
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            continue
        stored = load_input(results_dir, profile, run_dir.name)
        record = run_input(run_dir, root, stored)
        if record != stored:
            write_text_atomic(input_path(results_dir, profile, run_dir.name),
                              json.dumps(record, separators=(",", ":")) + "\n")
