"""The run's result, ``<run_dir>/encoder.pt`` (format in docs/CONTRACTS.md): written by rank 0
at the end of training, and checked to be a finished encoder before a run is skipped."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from benchmark.core.atomic import save_atomic
from benchmark.core.distributed import DistContext, barrier, broadcast_from_main
from benchmark.core.identity import identity_fields
from benchmark.core.safe_load import CorruptFile, LoadError
from benchmark.engine.wiring import Encoder
from benchmark.models.encoders import ENCODER_REMEDY, read_encoder_checkpoint

ENCODER_FILE = "encoder.pt"
# What rank 0 tells every rank about the encoder file it read.
ENCODER_ABSENT, ENCODER_FOUND, ENCODER_BROKEN = 0, 1, 2


def write_encoder(run_dir: Path, encoder: Encoder, tree: Mapping[str, Any], epoch: int,
                  dist: DistContext) -> Path:
    """``<run_dir>/encoder.pt`` of ``encoder`` trained for ``epoch`` epochs under the config
    ``tree`` (rank 0 writes it, every rank waits); returns its path."""
    path = Path(run_dir) / ENCODER_FILE
    if dist.is_main:
        save_atomic({
            "backbone": encoder.backbone.state_dict(),
            "head": encoder.head.state_dict(),
            **identity_fields(tree),
            "epoch": epoch,
        }, path)
    barrier()
    return path


def finished_encoder(path: Path, dist: DistContext) -> bool:
    """Whether ``path`` holds a finished encoder (rank 0 reads it, every rank gets the answer);
    one that does not load raises :class:`~benchmark.core.safe_load.LoadError` naming it."""
    verdict, problem = ENCODER_ABSENT, None
    if dist.is_main and path.exists():
        try:
            read_encoder_checkpoint(path)
            verdict = ENCODER_FOUND
        except LoadError as exc:
            verdict, problem = ENCODER_BROKEN, exc
    verdict = broadcast_from_main(verdict, dist.device)
    if verdict == ENCODER_BROKEN:
        raise problem or CorruptFile(path, "does not load (rank 0 logs why)", ENCODER_REMEDY)
    return verdict == ENCODER_FOUND
