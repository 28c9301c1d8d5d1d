"""Frozen-feature extraction with an on-disk cache.

A feature layer is named by a short string:

- ``pooled``: the backbone's own pooled output ``backbone(x)``;
- ``embedding``: the projection head's output ``head(backbone(x))``, the embedding the method
  trained (needs the encoder's head);
- ``<block>``: block ``<block>`` of ``backbone.forward_blocks`` averaged globally;
- ``<block>@<g>``: adaptive average pooling to a g x g grid (InvP's 17-head probe);
- ``<block>@<k>/<s>/<p>``: AvgPool2d(kernel k, stride s, padding p) (Goyal/VISSL table).

Features are cached under ``cache_dir/features/<encoder>/<dataset>/<split>/`` in one file per
(layer, transform), keyed by the encoder's checkpoint hash, so every frozen-feature task and
every probe epoch reads the cache instead of running the backbone again. Files are written to
a temporary name and renamed, so a crash never leaves a half-written cache entry.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from benchmark.core.atomic import save_atomic
from benchmark.core.fields import AnyOf, Int, ListOf, MapOf, Parses, Text
from benchmark.core.safe_load import load_weights_only
from tasks.common import EXTRACTION_DEFAULTS, encoder_key, limited_split
from tasks.transforms import eval_transform

CACHE_REMEDY = "It is a feature cache: delete it and the features are extracted again"
EMBEDDING = "embedding"


@dataclass(frozen=True)
class FeatureLayer:
    """Where features are read from and how the feature map is pooled to a vector."""

    block: str | None
    pool: tuple[int, ...] = ()
    embedding: bool = False  # the head's output (block None)

    @classmethod
    def parse(cls, text: str) -> "FeatureLayer":
        """Parse ``pooled``, ``embedding``, ``<block>``, ``<block>@<g>`` or ``<block>@<k>/<s>/<p>``."""
        if text == "pooled":
            return cls(None)
        if text == EMBEDDING:
            return cls(None, embedding=True)
        block, _, pool = text.partition("@")
        try:
            numbers = tuple(int(v) for v in pool.split("/")) if pool else ()
        except ValueError:
            numbers = (-1,)
        if not block or len(numbers) not in (0, 1, 3) or any(v < 0 for v in numbers):
            raise ValueError(
                f"bad feature layer {text!r}: use 'pooled', 'embedding', '<block>', '<block>@<grid>' or "
                "'<block>@<kernel>/<stride>/<padding>'"
            )
        return cls(block, numbers)

    @property
    def name(self) -> str:
        if self.block is None:
            return EMBEDDING if self.embedding else "pooled"
        return self.block + ("@" + "/".join(map(str, self.pool)) if self.pool else "")

    def reduce(self, fmap: torch.Tensor) -> torch.Tensor:
        """Pool a (B, C, H, W) block output to (B, D); a (B, D) block is already a vector."""
        if fmap.dim() == 2:
            return fmap
        if len(self.pool) == 3:
            kernel, stride, padding = self.pool
            pooled = F.avg_pool2d(fmap, kernel, stride, padding)
        else:
            pooled = F.adaptive_avg_pool2d(fmap, self.pool[0] if self.pool else 1)
        return pooled.flatten(1)


# The settings naming feature layers: one layer, or ``blocks`` / a list (``resolve_layers``), and
# the grid per block-name prefix that ``blocks`` pools to.
LAYER = Parses(FeatureLayer.parse, "a feature layer: pooled, embedding, <block>, <block>@<grid> or "
               "<block>@<kernel>/<stride>/<padding>")
LAYERS = AnyOf(LAYER, ListOf(LAYER, min_len=1))
GRIDS = MapOf(Text(), Int(ge=1))


def resolve_layers(
    spec: Any, backbone: torch.nn.Module, grids: dict[str, int], kind: str = "pretrained"
) -> list[FeatureLayer]:
    """Expand a layers setting: ``blocks`` = every block of the backbone pooled to the grid of
    its longest matching name prefix in ``grids`` (1 when none matches); otherwise a name or a
    list of names (see the module docstring). The raw-pixels encoder (``kind`` ``pixels``) has
    no blocks and no head: every layer becomes ``pooled``, its flattened image."""
    if kind == "pixels":
        return [FeatureLayer(None)]
    if spec == "blocks":
        names = list(getattr(backbone, "block_names", []))
        return [FeatureLayer(name, (_grid_for(name, grids),)) for name in names]
    texts = [spec] if isinstance(spec, str) else list(spec)
    return [FeatureLayer.parse(text) for text in texts]


def _grid_for(block: str, grids: dict[str, int]) -> int:
    matches = [prefix for prefix in grids if block.startswith(prefix)]
    return int(grids[max(matches, key=len)]) if matches else 1


def check_layers(backbone: torch.nn.Module, layers: Sequence[FeatureLayer],
                 head: torch.nn.Module | None = None) -> None:
    """Raise ValueError naming the blocks of ``layers`` that ``backbone`` does not have, or when the
    ``embedding`` layer is asked for without the encoder's ``head``."""
    block_names = list(getattr(backbone, "block_names", []))
    unknown = sorted({layer.block for layer in layers if layer.block is not None} - set(block_names))
    if unknown:
        raise ValueError(
            f"feature layer block(s) {unknown} not in the backbone; its blocks are {block_names}"
        )
    if head is None and any(layer.embedding for layer in layers):
        raise ValueError("feature layer 'embedding' needs the encoder's projection head; none was given")


@torch.no_grad()
def layer_vectors(
    backbone: torch.nn.Module, images: torch.Tensor, layers: Sequence[FeatureLayer],
    head: torch.nn.Module | None = None,
) -> list[torch.Tensor]:
    """One (B, D) tensor per layer for a batch of images (layers checked by ``check_layers``)."""
    block_names = list(getattr(backbone, "block_names", []))
    blocks = backbone.forward_blocks(images) if any(layer.block for layer in layers) else []
    pooled = backbone(images) if any(layer.block is None for layer in layers) else None
    embedded = head(pooled) if head is not None and any(layer.embedding for layer in layers) else None
    return [(embedded if layer.embedding else pooled) if layer.block is None
            else layer.reduce(blocks[block_names.index(layer.block)]) for layer in layers]


@torch.no_grad()
def extract_features(
    backbone: torch.nn.Module,
    dataset: Dataset,
    layers: Sequence[FeatureLayer],
    device: torch.device | str,
    batch_size: int = 256,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    head: torch.nn.Module | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run the frozen backbone (and ``head``, for the ``embedding`` layer) once over ``dataset``;
    one (N, D) CPU tensor per layer + labels."""
    check_layers(backbone, layers, head)
    backbone.eval()
    if head is not None:
        head.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    outputs: list[list[torch.Tensor]] = [[] for _ in layers]
    labels = []
    for images, targets in loader:
        vectors = layer_vectors(backbone, images.to(device, non_blocking=True), layers, head)
        for out, vec in zip(outputs, vectors):
            out.append(vec.to("cpu", dtype))
        labels.append(torch.as_tensor(targets))
    if not labels:
        raise ValueError("cannot extract features of an empty dataset")
    return [torch.cat(out) for out in outputs], torch.cat(labels)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def feature_cache_path(
    cache_dir: Path, encoder: str, dataset: str, split: str, layer: FeatureLayer, transform: Any
) -> Path:
    """Where one (encoder, dataset, split, layer, transform) feature matrix is cached."""
    slug = layer.name.replace("/", "-").replace("@", "_at_")
    return (
        Path(cache_dir) / "features" / encoder / dataset / split
        / f"{slug}-{_digest(repr(transform))}.pt"
    )


def cached_features(
    cache_dir: Path,
    encoder: str,
    dataset_name: str,
    split: str,
    transform: Any,
    layers: Sequence[FeatureLayer],
    backbone: Callable[[], torch.nn.Module],
    build_dataset: Callable[[], Dataset],
    device: torch.device | str,
    batch_size: int = 256,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    head: Callable[[], torch.nn.Module | None] = lambda: None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features per layer name and labels, from the cache or extracted (then cached).

    ``backbone``, ``head`` and ``build_dataset`` are called only when some layer is not cached yet.
    """
    paths = {
        layer: feature_cache_path(cache_dir, encoder, dataset_name, split, layer, transform)
        for layer in layers
    }
    found = {layer: load_weights_only(p, CACHE_REMEDY) for layer, p in paths.items() if p.is_file()}
    missing = [layer for layer in layers if layer not in found]
    if missing:
        feats, labels = extract_features(
            backbone(), build_dataset(), missing, device, batch_size, num_workers, dtype, head()
        )
        for layer, matrix in zip(missing, feats):
            entry = {"features": matrix, "labels": labels, "layer": layer.name}
            save_atomic(entry, paths[layer])
            found[layer] = entry
    labels = next(iter(found.values()))["labels"]
    return {layer.name: found[layer]["features"] for layer in layers}, labels


def context_features(
    ctx: Any,
    settings: dict[str, Any],
    dataset: str,
    split: str,
    layers: Sequence[FeatureLayer],
    backbone: torch.nn.Module,
    limit: int = 0,
    head: torch.nn.Module | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``cached_features`` for a TaskContext: the task's eval transform, cache dir and encoder.
    ``limit`` > 0 keeps a deterministic class-balanced draw of that many items (seed 0); ``head``:
    the encoder's projection head, needed by the ``embedding`` layer only."""
    transform = eval_transform(dataset, settings)
    extraction = {**EXTRACTION_DEFAULTS, **settings}

    return cached_features(
        ctx.cache_dir,
        encoder_key(ctx.encoder),
        dataset,
        f"{split}-balanced{limit}" if limit > 0 else split,
        transform,
        layers,
        backbone=lambda: backbone,
        build_dataset=lambda: limited_split(ctx, dataset, split, transform, limit),
        head=lambda: head,
        device=ctx.device,
        batch_size=int(extraction["extract_batch_size"]),
        num_workers=int(ctx.config.data["num_workers"]),
        dtype=getattr(torch, extraction["feature_dtype"]),
    )
