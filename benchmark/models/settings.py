"""The ``model`` section of a run config: its keys with their types and constraints (the values
live in the profiles); the harness composes it into the run-config schema."""
from __future__ import annotations

from benchmark.core.fields import AnyOf, Choice, Int, ListOf, Pattern, Section
from benchmark.models.heads import HEADS
from benchmark.models.init import INITS
from benchmark.models.registry import available_backbones

MODEL_FIELDS = Section({
    # timm is routed by the timm:<name> pattern, not by its registry entry
    "backbone": AnyOf(Choice(lambda: [name for name in available_backbones() if name != "timm"]),
                      Pattern(r"timm:[A-Za-z0-9_.-]+", "timm:<model name>")),
    "width": Int(ge=1),
    "depths": ListOf(Int(ge=1), min_len=1),
    "in_channels": Int(ge=1),
    "head": Choice(HEADS),
    "embed_dim": Int(ge=1),
    "init": Choice(INITS),
}, required=("backbone", "in_channels", "head", "embed_dim", "init"))  # width, depths: the mini ResNet's
