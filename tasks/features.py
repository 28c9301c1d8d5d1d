"""Frozen-feature extraction with an on-disk cache.

A feature layer is named by a short string:

- ``pooled``: the backbone's own pooled output ``backbone(x)``;
- ``embedding``: the projection head's output ``head(backbone(x))``, the embedding the method
  trained (needs the encoder's head);
- ``<block>``: block ``<block>`` of ``backbone.forward_blocks`` averaged globally;
- ``<block>@<g>``: adaptive average pooling to a g x g grid (InvP's 17-head probe);
- ``<block>@<k>/<s>/<p>``: AvgPool2d(kernel k, stride s, padding p) (Goyal/VISSL table).

Features are cached under ``cache_dir/features/<encoder>/<dataset>/<split>/`` in one folder per
(layer, transform) and feature dtype, keyed by the encoder's checkpoint hash, so every
frozen-feature task and every probe epoch reads the cache instead of running the backbone again.
The folder holds memory-mapped shards (``tasks/feature_cache.py``): a crash never leaves a
half-written entry, an interrupted extraction resumes at its first missing shard, and reading
pages rows in as they are touched. Tasks that keep every row resident refuse, before extracting,
features that do not fit the job's memory (``tasks/feature_budget.py``).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from benchmark.core.fields import AnyOf, ConfigError, Int, ListOf, MapOf, Parses, Text
from benchmark.models.backbone import Backbone
from tasks.base import Task
from tasks.common import EXTRACTION_DEFAULTS, encoder_key, limited_split
from tasks.feature_budget import FLOAT32_EVERY_LAYER, WorkingCopy, check_cache_disk, check_feature_budget
from tasks.feature_cache import CacheIndex, ShardWriter, dtype_name, open_cache, read_index
from tasks.transforms import eval_input_shape, eval_transform

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


def check_backbone_fit(task: Task, backbone: torch.nn.Module, settings: Mapping[str, Any]) -> None:
    """Raise a ConfigError with the reason when ``task`` cannot run on ``backbone`` under
    its checked ``settings``: a feature-layer setting (a ``LAYER``/``LAYERS`` field) names a block
    the backbone lacks (the setting named), or the task's own ``check_backbone`` refuses it."""
    for key, spec in task.settings_fields.items():
        if spec is LAYER or spec is LAYERS:
            layers = [layer for layer in resolve_layers(settings[key], backbone, {}) if not layer.embedding]
            try:
                check_layers(backbone, layers)
            except ConfigError as exc:
                raise ConfigError(f"tasks.{task.name}.{key}: {exc}") from None
    task.check_backbone(backbone, settings)


def _grid_for(block: str, grids: dict[str, int]) -> int:
    matches = [prefix for prefix in grids if block.startswith(prefix)]
    return int(grids[max(matches, key=len)]) if matches else 1


def check_layers(backbone: torch.nn.Module, layers: Sequence[FeatureLayer],
                 head: torch.nn.Module | None = None) -> None:
    """Raise a ConfigError (a user error) naming the blocks of ``layers`` that ``backbone`` does not
    have and the ones it has, or a ValueError when the ``embedding`` layer is asked for without the
    encoder's ``head``."""
    block_names = list(getattr(backbone, "block_names", []))
    unknown = sorted({layer.block for layer in layers if layer.block is not None} - set(block_names))
    if unknown:
        raise ConfigError(
            f"feature layer block(s) {unknown} not in the backbone; its blocks are {block_names}: "
            "set the task's layers (tasks.<task>.layers or .layer) to some of them, or to blocks"
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
    pooled = None
    if any(layer.block is None for layer in layers):
        # a Backbone's pooled output is its last block averaged: no second trunk pass
        pooled = (torch.flatten(F.adaptive_avg_pool2d(blocks[-1], 1), 1)
                  if blocks and isinstance(backbone, Backbone) else backbone(images))
    embedded = head(pooled) if head is not None and any(layer.embedding for layer in layers) else None
    return [(embedded if layer.embedding else pooled) if layer.block is None
            else layer.reduce(blocks[block_names.index(layer.block)]) for layer in layers]


@torch.no_grad()
def feature_batches(
    backbone: torch.nn.Module,
    dataset: Dataset,
    layers: Sequence[FeatureLayer],
    device: torch.device | str,
    batch_size: int = 256,
    num_workers: int = 0,
    dtype: torch.dtype = torch.float32,
    head: torch.nn.Module | None = None,
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """Run the frozen backbone (and ``head``, for the ``embedding`` layer) over ``dataset`` in
    order: per batch, one (B, D) CPU tensor per layer in ``dtype`` + the labels."""
    check_layers(backbone, layers, head)
    backbone.eval()
    if head is not None:
        head.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    for images, targets in loader:
        vectors = layer_vectors(backbone, images.to(device, non_blocking=True), layers, head)
        yield [vec.to("cpu", dtype) for vec in vectors], torch.as_tensor(targets)


def gather_features(
    batches: Iterable[tuple[list[torch.Tensor], torch.Tensor]],
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """:func:`feature_batches` gathered in memory: one (N, D) CPU tensor per layer + labels."""
    outputs: list[list[torch.Tensor]] = []
    labels = []
    for vectors, targets in batches:
        outputs = outputs or [[] for _ in vectors]
        for out, vec in zip(outputs, vectors):
            out.append(vec)
        labels.append(targets)
    if not labels:
        raise ValueError("cannot extract features of an empty dataset")
    return [torch.cat(out) for out in outputs], torch.cat(labels)


@torch.no_grad()
def layer_dims(backbone: torch.nn.Module, layers: Sequence[FeatureLayer], input_shape: Sequence[int],
               head: torch.nn.Module | None = None) -> list[int]:
    """Width D of each layer's vectors, from one all-zero input of ``input_shape`` (no image read)."""
    check_layers(backbone, layers, head)
    backbone.eval()
    device = next(iter(backbone.parameters()), torch.empty(0)).device
    zeros = torch.zeros(1, *input_shape, device=device)
    return [int(v.shape[1]) for v in layer_vectors(backbone, zeros, layers, head)]


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def feature_cache_path(
    cache_dir: Path, encoder: str, dataset: str, split: str, layer: FeatureLayer, transform: Any
) -> Path:
    """The folder of one (encoder, dataset, split, layer, transform) cache entry (one sub-folder
    per feature dtype inside)."""
    slug = layer.name.replace("/", "-").replace("@", "_at_")
    return (
        Path(cache_dir) / "features" / encoder / dataset / split
        / f"{slug}-{_digest(repr(transform))}.shards"
    )


# what a resident consumer checks before extracting: (rows, width per layer) -> raises when too big
BudgetCheck = Callable[[int, Sequence[int]], None]


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
    budget: tuple[BudgetCheck, Sequence[int]] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Features per layer name (memory-mapped (N, D) tensors, rows paged in when touched) and
    labels, from the cache or extracted (then cached; an interrupted extraction resumes).

    ``backbone``, ``head`` and ``build_dataset`` are called only when some layer is not cached
    yet. ``budget`` = (check, input shape): before any image is read, ``check(N, D per layer)``
    must pass and the layers not cached yet must fit the cache's disk (``check_cache_disk``; D of
    a layer not cached yet from one all-zero input of that shape)."""
    precision = dtype_name(dtype)
    folders = {layer: feature_cache_path(cache_dir, encoder, dataset_name, split, layer, transform) / precision
               for layer in layers}
    identities = {layer: {"encoder": encoder, "dataset": dataset_name, "split": split, "layer": layer.name,
                          "transform": _digest(repr(transform)), "dtype": precision} for layer in layers}
    indexes = {layer: read_index(folders[layer], identities[layer]) for layer in layers}
    missing = [layer for layer in layers if indexes[layer] is None or not indexes[layer].complete]
    dataset = build_dataset() if missing else None
    if budget is not None:
        check, input_shape = budget
        rows = len(dataset) if dataset is not None else next(iter(indexes.values())).rows
        new = dict(zip(missing, layer_dims(backbone(), missing, input_shape, head()))) if missing else {}
        check(rows, [new[layer] if layer in new else indexes[layer].dim for layer in layers])
        size = torch.empty(0, dtype=dtype).element_size()
        check_cache_disk({folders[layer]: rows * dim * size for layer, dim in new.items()},
                         f"{dataset_name} {split} features of {', '.join(layer.name for layer in new)}")
    if missing:
        indexes.update(_extract_into(
            {layer: ShardWriter(folders[layer], identities[layer], len(dataset),
                                read_index(folders[layer], identities[layer], len(dataset))) for layer in missing},
            backbone(), dataset, device, batch_size, num_workers, dtype, head(),
        ))
    opened = {layer: open_cache(folders[layer], indexes[layer]) for layer in layers}
    return {layer.name: opened[layer][0] for layer in layers}, opened[layers[0]][1]


def _extract_into(writers: dict[FeatureLayer, ShardWriter], backbone: torch.nn.Module, dataset: Dataset,
                  device: torch.device | str, batch_size: int, num_workers: int, dtype: torch.dtype,
                  head: torch.nn.Module | None) -> dict[FeatureLayer, CacheIndex]:
    """Extract the layers of ``writers`` from the first row any of them lacks, shard by shard."""
    if len(dataset) == 0:
        raise ValueError("cannot extract features of an empty dataset")
    start = min(writer.start_row() for writer in writers.values())
    for writer in writers.values():
        writer.begin(start)
    layers = list(writers)
    rest = Subset(dataset, range(start, len(dataset))) if start else dataset
    for vectors, targets in feature_batches(backbone, rest, layers, device, batch_size, num_workers, dtype, head):
        for layer, vec in zip(layers, vectors):
            writers[layer].add(vec, targets)
    return {layer: writer.finish() for layer, writer in writers.items()}


def _streamed(rows: int, dims: Sequence[int]) -> None:
    """The memory check of a task that streams its rows in chunks: none (its chunk is sized from
    the budget); the cache's disk is still checked."""


def context_features(
    ctx: Any,
    settings: dict[str, Any],
    dataset: str,
    split: str,
    layers: Sequence[FeatureLayer],
    backbone: torch.nn.Module,
    limit: int = 0,
    head: torch.nn.Module | None = None,
    resident: bool = True,
    working: WorkingCopy = FLOAT32_EVERY_LAYER,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``cached_features`` for a TaskContext: the task's eval transform, cache dir and encoder.
    ``limit`` > 0 keeps a deterministic class-balanced draw of that many items (seed 0); ``head``:
    the encoder's projection head, needed by the ``embedding`` layer only. ``resident``: the task
    holds every row (probe, SVM fits), so the rows + its ``working`` copy are checked against
    ``ctx.memory_budget_gb`` before extracting (``check_feature_budget``); a task that streams the
    rows in chunks (kNN) passes False."""
    transform = eval_transform(dataset, settings)
    extraction = {**EXTRACTION_DEFAULTS, **settings}
    split_name = f"{split}-balanced{limit}" if limit > 0 else split

    def check(rows: int, dims: Sequence[int]) -> None:
        check_feature_budget(rows, dims, extraction["feature_dtype"], ctx.memory_budget_gb,
                             f"tasks.{ctx.task_name}: {dataset} {split_name} features", ctx.task_name,
                             working)

    return cached_features(
        ctx.cache_dir,
        encoder_key(ctx.encoder),
        dataset,
        split_name,
        transform,
        layers,
        backbone=lambda: backbone,
        build_dataset=lambda: limited_split(ctx, dataset, split, transform, limit),
        head=lambda: head,
        device=ctx.device,
        batch_size=int(extraction["extract_batch_size"]),
        num_workers=int(ctx.config.data["num_workers"]),
        dtype=getattr(torch, extraction["feature_dtype"]),
        budget=(check if resident else _streamed, eval_input_shape(dataset, settings)),
    )
