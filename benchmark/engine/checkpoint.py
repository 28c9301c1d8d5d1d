"""Training checkpoints: atomic writes, newest-valid lookup, config-identity checks, pruning.

Files are ``<run_dir>/checkpoints/ckpt-<global step, 9 digits>.pt``. A file is written to a
temporary name in the same folder, flushed to disk and renamed, so a crash never leaves a
half-written file under the final name (a kill can leave the temporary file: resuming removes
it); a file that is nevertheless unreadable (truncated by a full disk, say) or holds no dict is
skipped with a warning and the previous one is used. Checkpoints hold tensors, containers and
plain values only (the RNG states as tensors), so they load with ``weights_only=True``.

A distributed run saves on rank 0 (:func:`save`); on resume every rank loads the same newest
checkpoint after rank 0 has removed what a kill left (:func:`load_for_resume`).
"""
from __future__ import annotations

import random
import re
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from benchmark.core.atomic import save_atomic
from benchmark.core.config import ConfigError
from benchmark.core.distributed import barrier
from benchmark.core.identity import differing_keys, pretrain_hash
from benchmark.core.safe_load import CorruptFile, load_weights_only

CHECKPOINT_RE = re.compile(r"^ckpt-(\d{9})\.pt$")
ORPHAN_GLOB = ".ckpt-*.tmp"  # what atomic_open leaves of a checkpoint when the writer is killed
RESUME_MODES = ("auto", "never", "force")
UNSAFE_REMEDY = ("Checkpoints written before the RNG states were stored as tensors are refused the "
                 "same way: start afresh with --resume never (it deletes this run's checkpoints)")


class CheckpointMismatch(ConfigError):
    """A checkpoint was written by a run with a different pretraining configuration (a user error:
    the message names the differing keys and the fix)."""


def checkpoint_path(checkpoint_dir: Path, global_step: int) -> Path:
    """Path of the checkpoint taken after ``global_step`` optimizer steps."""
    return Path(checkpoint_dir) / f"ckpt-{global_step:09d}.pt"


def list_checkpoints(checkpoint_dir: Path) -> list[Path]:
    """Checkpoint files in ``checkpoint_dir``, newest (highest step) first."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if CHECKPOINT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CHECKPOINT_RE.match(p.name).group(1)), reverse=True)


def load_latest(checkpoint_dir: Path, config: Mapping[str, Any], mode: str = "auto") -> dict[str, Any] | None:
    """The newest readable checkpoint in ``checkpoint_dir`` (None if there is none, or ``mode``
    is ``never``). Unreadable files, and files that hold no dict, are skipped with a warning; a
    file that only full unpickling could load raises :class:`benchmark.core.safe_load.UnsafeFile`. A
    checkpoint of another pretraining config raises :class:`CheckpointMismatch` naming the
    differing keys, unless ``mode`` is ``force``."""
    if mode not in RESUME_MODES:
        raise ValueError(f"resume={mode!r}; valid values: {', '.join(RESUME_MODES)}")
    if mode == "never":
        return None
    for path in list_checkpoints(checkpoint_dir):
        try:
            state = load_weights_only(path, UNSAFE_REMEDY)
        except CorruptFile as exc:
            warnings.warn(f"skipping unreadable checkpoint {path} ({exc.reason}); trying the previous one",
                          stacklevel=2)
            continue
        if not isinstance(state, dict):
            warnings.warn(f"skipping checkpoint {path}: it holds a {type(state).__name__}, not a "
                          "checkpoint's dict; trying the previous one", stacklevel=2)
            continue
        if state.get("config_hash") != pretrain_hash(config):
            keys = differing_keys(state.get("config", {}), config)
            message = (f"checkpoint {path} was written by a different pretraining config "
                       f"(differing keys: {', '.join(keys) or 'unknown'})")
            if mode != "force":
                raise CheckpointMismatch(
                    f"{message}. Use a new --run-dir, --resume never to start fresh, or "
                    "--resume force to continue from it anyway"
                )
            warnings.warn(f"{message}; resuming anyway (--resume force)", stacklevel=2)
        state["path"] = str(path)
        return state
    return None


def prune(checkpoint_dir: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints (``keep`` <= 0 keeps everything)."""
    if keep > 0:
        for path in list_checkpoints(checkpoint_dir)[keep:]:
            path.unlink(missing_ok=True)


def remove_all(checkpoint_dir: Path) -> None:
    """Delete every checkpoint in ``checkpoint_dir`` (a run started afresh)."""
    for path in list_checkpoints(checkpoint_dir):
        path.unlink(missing_ok=True)


def remove_orphans(checkpoint_dir: Path) -> None:
    """Delete the temporary files of checkpoints whose writer was killed (only safe while this
    process holds the run folder's lock: nobody else is writing one)."""
    for path in Path(checkpoint_dir).glob(ORPHAN_GLOB):
        path.unlink(missing_ok=True)


def save(state: Mapping[str, Any], checkpoint_dir: Path, global_step: int, keep: int) -> None:
    """Write ``state`` atomically as the checkpoint of ``global_step``, then keep only the
    ``keep`` newest checkpoints (rank 0's job in a distributed run)."""
    save_atomic(state, checkpoint_path(checkpoint_dir, global_step))
    prune(checkpoint_dir, keep)


def load_for_resume(checkpoint_dir: Path, config: Mapping[str, Any], mode: str,
                    is_main: bool) -> dict[str, Any] | None:
    """What every rank resumes from (:func:`load_latest`), once rank 0 (``is_main``) has removed
    orphan temporary files and, for ``mode`` ``never``, every old checkpoint."""
    if is_main:
        remove_orphans(checkpoint_dir)
        if mode == "never":
            remove_all(checkpoint_dir)  # stale ones would outrank the new run's
    barrier()
    return load_latest(checkpoint_dir, config, mode)


def rng_state() -> dict[str, Any]:
    """Every global RNG state (Python, NumPy, torch CPU and all CUDA devices) as tensors and
    plain values, so that a checkpoint holding it loads with ``weights_only=True``."""
    version, words, gauss_next = random.getstate()
    algorithm, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"algorithm": algorithm, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    python, numpy = state["python"], state["numpy"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss_next"]))
    np.random.set_state((numpy["algorithm"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
