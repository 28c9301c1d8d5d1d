"""The on-disk feature cache: one folder per (encoder, dataset, split, layer, transform).

A folder ``<layer>-<transform digest>.shards/`` holds

- ``features.bin``: the (N, D) matrix, raw, row-major, in the task's ``feature_dtype``;
- ``labels.bin``: the N labels (raw, their own dtype and shape; VOC07 keeps (N, 20) int8);
- ``index.json``: format, identity (encoder, dataset, split, layer, transform digest), rows, dim,
  dtypes, the rows of a shard, the shards written with their CRC-32, and the ``complete`` flag.

Extraction writes shards: fixed runs of ``shard_rows`` rows (about :data:`SHARD_BYTES` each) at
their offset in the preallocated files; each is flushed to disk before the index that lists it is
replaced (atomically, written last), so a shard counts only once all its bytes are on disk, and an
interrupted extraction resumes at the first shard the index does not list. Reading memory-maps
both files (``torch.from_file``, no pickle): the rows are paged in when touched, never loaded as a
whole. A folder whose index or files do not match (another format, identity or size, a shard whose
CRC differs) is a :class:`FeatureCacheError` naming the file and the fix: delete the folder.

Disk: N x D x sizeof(feature_dtype) + N x label bytes per (layer, split).
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmark.core.atomic import fsync_directory
from benchmark.core.errors import BadFileError
from benchmark.core.store import write_json_atomic
from tasks.feature_budget import dtype_size

FORMAT = "invp-bench feature shards 1"
SHARD_BYTES = 64 * 2**20  # feature bytes of one shard (its rows: SHARD_BYTES // row bytes)
INDEX, FEATURES, LABELS = "index.json", "features.bin", "labels.bin"
CRC_BLOCK = 16 * 2**20  # bytes read at a time when checking a shard


class FeatureCacheError(BadFileError):
    """A feature-cache file is corrupt or belongs to another cache entry."""


def _remedy(folder: Path) -> str:
    return f"it is a feature cache: delete the folder {folder} and the features are extracted again"


@dataclass
class CacheIndex:
    """What ``index.json`` records (see the module docstring)."""

    identity: dict[str, str]
    rows: int
    dim: int
    dtype: str
    label_dtype: str
    label_shape: list[int]
    shard_rows: int
    shards: dict[str, int] = field(default_factory=dict)  # shard number -> CRC-32 of its features
    complete: bool = False
    format: str = FORMAT

    @property
    def shard_count(self) -> int:
        return -(-self.rows // self.shard_rows)

    def first_missing_row(self) -> int:
        """The first row of the first shard not written yet (``rows`` when complete)."""
        missing = [s for s in range(self.shard_count) if str(s) not in self.shards]
        return missing[0] * self.shard_rows if missing else self.rows


def dtype_name(dtype: torch.dtype) -> str:
    """``float16`` for ``torch.float16``: how the index (and the cache folder) names a dtype."""
    return str(dtype).removeprefix("torch.")


def _label_width(index: CacheIndex) -> int:
    return math.prod(int(d) for d in index.label_shape)


def read_index(folder: Path, identity: dict[str, str], rows: int | None = None) -> CacheIndex | None:
    """The index in ``folder`` (None when there is none yet), checked against ``identity`` and,
    when given, the split's ``rows``."""
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = CacheIndex(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise FeatureCacheError(f"{path} is unreadable ({type(exc).__name__}); {_remedy(folder)}") from None
    if index.format != FORMAT or index.identity != identity:
        raise FeatureCacheError(f"{path} belongs to another cache entry ({index.format}, {index.identity}, "
                                f"expected {identity}); {_remedy(folder)}")
    if rows is not None and index.rows != rows:
        raise FeatureCacheError(f"{path} holds {index.rows} rows but the split has {rows}; {_remedy(folder)}")
    return index


def open_cache(folder: Path, index: CacheIndex) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory-mapped (rows, dim) features and the labels of a complete cache entry; every
    shard's CRC is checked (a read of the file, nothing kept)."""
    features, labels = folder / FEATURES, folder / LABELS
    row_bytes = index.dim * dtype_size(index.dtype)
    label_count = index.rows * _label_width(index)
    for path, expected in ((features, index.rows * row_bytes), (labels, label_count * dtype_size(index.label_dtype))):
        found = path.stat().st_size if path.is_file() else None
        if found != expected:
            raise FeatureCacheError(f"{path} has {found} bytes, its index {folder / INDEX} says {expected}; "
                                    f"{_remedy(folder)}")
    with open(features, "rb") as fh:
        for shard in range(index.shard_count):
            start, stop = shard * index.shard_rows, min(index.rows, (shard + 1) * index.shard_rows)
            if _crc(fh, start * row_bytes, (stop - start) * row_bytes) != index.shards[str(shard)]:
                raise FeatureCacheError(f"{features} shard {shard} (rows {start}-{stop - 1}) does not match "
                                        f"its checksum in {folder / INDEX}; {_remedy(folder)}")
    matrix = torch.from_file(str(features), shared=False, size=index.rows * index.dim,
                             dtype=getattr(torch, index.dtype)).view(index.rows, index.dim)
    targets = torch.from_file(str(labels), shared=False, size=label_count,
                              dtype=getattr(torch, index.label_dtype)).view(index.rows, *index.label_shape)
    return matrix, targets


def _crc(fh: Any, offset: int, length: int) -> int:
    fh.seek(offset)
    crc = 0
    while length > 0:
        block = fh.read(min(CRC_BLOCK, length))
        if not block:
            break
        crc, length = zlib.crc32(block, crc), length - len(block)
    return crc


def _raw(tensor: torch.Tensor) -> memoryview:
    """The bytes of ``tensor`` (any dtype, bfloat16 included), row-major."""
    return memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())


class ShardWriter:
    """Writes one layer's rows, shard by shard, into ``folder`` (resuming an interrupted run:
    rows of shards its index already lists are dropped)."""

    def __init__(self, folder: Path, identity: dict[str, str], rows: int, index: CacheIndex | None):
        self.folder, self.identity, self.rows, self.index = folder, identity, rows, index
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.pending_rows = 0
        self.next_row = 0  # the row (of the split) of the first pending row

    def start_row(self) -> int:
        """The first row this layer still needs."""
        return 0 if self.index is None else self.index.first_missing_row()

    def begin(self, row: int) -> None:
        """Rows will arrive from ``row`` on (at most every layer's :meth:`start_row`)."""
        self.next_row = row

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """The next rows, in order; each shard is written as soon as all its rows arrived (rows of
        a shard already written, or of one that began before :meth:`begin`, are dropped)."""
        if self.index is None:
            self._create(features, labels)
        index = self.index
        self.pending.append((features, labels))
        self.pending_rows += features.shape[0]
        while self.pending_rows:
            shard = self.next_row // index.shard_rows
            stop = min(self.rows, (shard + 1) * index.shard_rows)
            if self.next_row + self.pending_rows < stop:
                return
            take = stop - self.next_row
            block_f = torch.cat([f for f, _ in self.pending])
            block_l = torch.cat([lab for _, lab in self.pending])
            if str(shard) not in index.shards and self.next_row == shard * index.shard_rows:
                self._write(shard, block_f[:take], block_l[:take])
            self.pending = [(block_f[take:], block_l[take:])]
            self.pending_rows -= take
            self.next_row = stop

    def finish(self) -> CacheIndex:
        """Mark the entry complete (every shard written) and return its index."""
        index = self.index
        if index is None or len(index.shards) != index.shard_count:
            raise RuntimeError(f"extraction into {self.folder} ended before its last shard")
        index.complete = True
        write_json_atomic(self.folder / INDEX, asdict(index))
        return index

    def _create(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        dtype = dtype_name(features.dtype)
        dim = int(features.shape[1])
        self.index = CacheIndex(
            identity=self.identity, rows=self.rows, dim=dim, dtype=dtype,
            label_dtype=dtype_name(labels.dtype), label_shape=list(labels.shape[1:]),
            shard_rows=max(1, SHARD_BYTES // (dim * dtype_size(dtype))),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, size in ((FEATURES, self.rows * dim * dtype_size(dtype)),
                           (LABELS, self.rows * _label_width(self.index) * dtype_size(self.index.label_dtype))):
            fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT, 0o666)  # never truncated: resumable
            try:
                if os.fstat(fd).st_size < size:
                    os.ftruncate(fd, size)
            finally:
                os.close(fd)
        fsync_directory(self.folder)
        write_json_atomic(self.folder / INDEX, asdict(self.index))

    def _write(self, shard: int, features: torch.Tensor, labels: torch.Tensor) -> None:
        index = self.index
        start = shard * index.shard_rows
        raw = _raw(features)
        for name, data, offset in ((FEATURES, raw, start * index.dim * dtype_size(index.dtype)),
                                   (LABELS, _raw(labels), start * _label_width(index) * dtype_size(index.label_dtype))):
            fd = os.open(self.folder / name, os.O_RDWR)
            try:
                written = 0
                while written < len(data):  # pwrite may write less than asked
                    written += os.pwrite(fd, data[written:], offset + written)
                os.fsync(fd)
            finally:
                os.close(fd)
        index.shards[str(shard)] = zlib.crc32(raw)
        write_json_atomic(self.folder / INDEX, asdict(index))
