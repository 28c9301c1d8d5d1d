"""Loading a published checkpoint as the suite's backbone: read, fingerprint, recognise, load strictly.

``load_weights(path, model_cfg)`` reads the file without running code (``weights_only=True``,
which also rebuilds the ``argparse.Namespace`` of a training command line, or a ``.safetensors``
file; never full unpickling, which could run the file's code), tells its format by its keys (``fmt="auto"``),
builds the backbone ``model_cfg`` names (a suite ``encoder.pt`` brings its own) and loads the
trunk: every trunk parameter and buffer must be in the file and nothing unexpected may be,
unless ``allow_missing_keys``. Heads, momentum copies and queues are dropped and counted.
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from benchmark.core.fields import required
from benchmark.core.safe_load import CorruptFile, UnsafeFile, load_weights_only
from benchmark.models.registry import build_backbone
from benchmark.models.weight_formats import (
    READERS,
    RESNET_FORMATS,
    WEIGHT_FORMATS,
    WeightsError,
    detect_format,
    suite_model_cfg,
    torchvision_name,
)

AUTO = "auto"
STEP_COUNTER = "num_batches_tracked"  # BatchNorm's step count: unused at evaluation, absent in old files
LISTED_KEYS = 5  # how many missing/unexpected keys an error message names
CHUNK_BYTES = 1 << 20
SAFETENSORS = ".safetensors"
UNREADABLE_REMEDY = "Check that it is a whole torch.save or .safetensors file (download it again if it was cut)"
# the suite never unpickles a weights file fully (that could run its code): the user re-saves it
RESAVE_REMEDY = ("If you trust where it comes from, re-save its tensors yourself where you trust it "
                 "(load it with full unpickling in your own code, then torch.save its state dict: "
                 "model.state_dict() for a whole pickled model) and pass that file")
# Classes a weights file may hold besides tensors and plain values. argparse.Namespace: the
# command line that torchvision's references/classification/train.py saves as ``args``. Rebuilding
# one runs no code of the file's choosing (object.__new__, then its attributes set from values
# the weights-only loader rebuilt itself); allowed for the weights files read here only.
SAFE_GLOBALS = (argparse.Namespace,)
STRICT_REMEDY = ("Check that the profile's backbone (model.backbone) is the checkpoint's architecture "
                 "and --weights-format its format, or pass --allow-missing-keys to load the rest anyway")


@dataclass(frozen=True)
class LoadedWeights:
    """A checkpoint loaded as the trunk, and what the loading found."""

    backbone: nn.Module
    format: str
    sha256: str
    model_cfg: Mapping[str, Any]
    dropped: Mapping[str, int]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    auto_detected: bool = False
    counters_filled: int = 0

    def summary(self) -> str:
        """One line: the format, how it was chosen, and what was dropped, filled or missing."""
        line = f"format {self.format} ({'auto-detected' if self.auto_detected else 'as given'})"
        if self.dropped:
            parts = [f"{count} {label}" for label, count in sorted(self.dropped.items())]
            line += f"; tensors dropped: {', '.join(parts)}"
        if self.counters_filled:
            line += f"; {self.counters_filled} BatchNorm step counters absent (set to 0, unused at evaluation)"
        if self.missing:
            line += f"; {len(self.missing)} trunk keys MISSING, left at random init ({_listed(self.missing)})"
        if self.unexpected:
            line += f"; {len(self.unexpected)} unexpected keys ignored ({_listed(self.unexpected)})"
        return line


def _listed(keys: tuple[str, ...]) -> str:
    more = f", ... {len(keys) - LISTED_KEYS} more" if len(keys) > LISTED_KEYS else ""
    return ", ".join(keys[:LISTED_KEYS]) + more


def _named(keys: tuple[str, ...], fmt: str) -> tuple[str, ...]:
    """Trunk keys as the Backbone names them, with the torchvision name the file would use."""
    return tuple(f"{key} (torchvision name {torchvision_name(key)})"
                 if fmt in RESNET_FORMATS and torchvision_name(key) != key else key for key in keys)


def file_sha256(path: str | Path) -> str:
    """The sha256 of the file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_checkpoint(path: Path) -> Any:
    """The file's contents, read without running code: a ``.safetensors`` file (tensors only), else
    ``torch.load(weights_only=True)`` (with :data:`SAFE_GLOBALS` allowed); a file that would need
    full unpickling raises a WeightsError saying why and how to re-save it."""
    if path.suffix == SAFETENSORS:
        return _read_safetensors(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return load_weights_only(path)
    except UnsafeFile as exc:
        raise WeightsError(path, exc.reason, RESAVE_REMEDY) from None
    except CorruptFile as exc:
        raise WeightsError(path, exc.reason, UNREADABLE_REMEDY) from None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise WeightsError(path, "is a safetensors file, which needs the safetensors package",
                           "Install it: pip install safetensors (timm brings it)") from None
    try:
        return load_file(path, device="cpu")
    except Exception as exc:  # noqa: BLE001  (a cut or foreign file: safetensors' own error types vary)
        raise WeightsError(path, f"is unreadable ({type(exc).__name__}: {exc})", UNREADABLE_REMEDY) from None


def _fill_counters(found: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> int:
    absent = [key for key in expected if key.endswith(STEP_COUNTER) and key not in found]
    for key in absent:
        found[key] = torch.zeros_like(expected[key])
    return len(absent)


def _check_shapes(path: Path, found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    wrong = [f"{key} {tuple(found[key].shape)} vs {tuple(value.shape)}"
             for key, value in expected.items() if key in found and found[key].shape != value.shape]
    if wrong:
        raise WeightsError(path, f"has {len(wrong)} trunk tensors of the wrong shape for the backbone "
                           f"(file vs backbone: {_listed(tuple(wrong))})", STRICT_REMEDY)


def load_weights(path: str | Path, model_cfg: Mapping[str, Any], fmt: str = AUTO, *,
                 allow_missing_keys: bool = False) -> LoadedWeights:
    """The checkpoint at ``path`` in format ``fmt`` (``auto``: told by its keys) loaded into the
    backbone ``model_cfg`` describes (a ``suite`` file: the one its config describes), eval mode, CPU.

    Raises :class:`WeightsError` (a user error naming the file and the fix) for a missing file,
    an unknown format, trunk keys missing from the file or unexpected in it (unless
    ``allow_missing_keys``: then listed in the result), wrong shapes, or a file that would need
    full unpickling (never done: it could run the file's code).
    """
    path = Path(path)
    if fmt != AUTO and fmt not in READERS:
        raise WeightsError(path, f"cannot be read as format {fmt!r}", f"Use one of {AUTO}, {', '.join(WEIGHT_FORMATS)}")
    if not path.is_file():
        raise WeightsError(path, "is not a file", "Pass the path of a checkpoint file")
    obj = read_checkpoint(path)
    chosen = detect_format(obj, path, str(required(model_cfg, "backbone", "model"))) if fmt == AUTO else fmt
    if chosen == "suite":
        model_cfg = suite_model_cfg(obj, path)
    with torch.random.fork_rng(devices=[]):
        backbone = build_backbone(model_cfg)
    split = READERS[chosen](obj, path, backbone)
    expected = backbone.state_dict()
    found = dict(split.trunk)
    filled = _fill_counters(found, expected)
    missing = tuple(key for key in expected if key not in found)
    unexpected = split.unexpected + tuple(key for key in found if key not in expected)
    if (missing or unexpected) and not allow_missing_keys:
        problems = [f"{len(missing)} trunk keys missing ({_listed(_named(missing, chosen))})" if missing else "",
                    f"{len(unexpected)} unexpected keys ({_listed(_named(unexpected, chosen))})" if unexpected else ""]
        raise WeightsError(path, f"does not fit the {model_cfg['backbone']} trunk as format {chosen}: "
                           f"{'; '.join(filter(None, problems))}", STRICT_REMEDY)
    _check_shapes(path, found, expected)
    backbone.load_state_dict({key: value for key, value in found.items() if key in expected}, strict=False)
    return LoadedWeights(backbone.eval(), chosen, file_sha256(path), dict(model_cfg), dict(split.dropped),
                         missing, unexpected, auto_detected=fmt == AUTO,
                         counters_filled=filled)
