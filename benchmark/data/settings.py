"""The ``data`` section of a run config: its keys with their types and constraints (the values
live in the profiles); the harness composes it into the run-config schema."""
from __future__ import annotations

from benchmark.core.fields import Choice, Int, Section
from benchmark.data.augment import RECIPES
from benchmark.data.registry import available_datasets

DATA_FIELDS = Section({
    "dataset": Choice(lambda: list(available_datasets())),
    "train_subset": Int(ge=0),
    "num_workers": Int(ge=0),
    "augment": Choice(RECIPES.names),
}, required=("dataset", "train_subset", "num_workers", "augment"))
