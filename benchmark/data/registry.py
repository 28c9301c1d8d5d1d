"""Dataset registry: a name maps to a spec that knows the on-disk layout, the splits, the class
count, how to build a torch Dataset, how to say what is missing and how to get it, and how to
check the contents of what is there (``data check``; helpers in ``integrity``).

Roots come from ``--data-root``, then the ``BENCHMARK_DATA`` environment variable, then
``./data`` under the current directory.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from torch.utils.data import Dataset

from benchmark.core.config import ConfigError
from benchmark.core.registry import Registry

DEFAULT_DATA_ROOT = Path("data")


class DatasetMissing(FileNotFoundError):
    """A dataset is not where it should be; the message says where we looked and how to get it."""


def no_content_check(root: Path) -> list[str]:
    """The content check of a dataset with nothing to check beyond its presence."""
    return []


def resolve_data_root(cli_value: str | os.PathLike | None = None) -> Path:
    """``--data-root`` if given, else ``$BENCHMARK_DATA``, else ``./data``."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("BENCHMARK_DATA")
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, check and load one dataset."""
    name: str
    summary: str
    num_classes: int
    splits: tuple[str, ...]
    location: Callable[[Path], Path]  # folder (or file) searched under a data root
    problems: Callable[[Path], list[str]]  # empty when the data is usable
    how_to_get: str
    builder: Callable[..., Dataset]  # builder(root, split, transform=None, **kw) -> Dataset
    prepare: Callable[[Path], Path] | None = None  # makes the data under a root (if it can)
    contents: Callable[[Path], list[str]] = no_content_check  # run once ``problems`` is empty

    def check(self, root: Path) -> list[str]:
        """Problems that stop this dataset from loading under ``root`` (empty = found)."""
        return self.problems(root)

    def verify(self, root: Path) -> list[str]:
        """Problems with the contents of the dataset found under ``root`` (file sizes against
        headers, lists against the files they name, empty class folders); each names the file
        and the fix. Reads every file's header or size, so it is slower than :meth:`check`."""
        return self.contents(root)

    def build(self, root: Path, split: str, transform: Any = None, **kwargs: Any) -> Dataset:
        """The dataset's ``split``; raises DatasetMissing with where it looked and the fix (also
        when the split holds no samples)."""
        if split not in self.splits:
            raise ConfigError(f"dataset {self.name!r} has splits {self.splits}, not {split!r}")
        problems = self.check(root)
        if problems:
            raise DatasetMissing(
                f"dataset {self.name!r} not usable at {self.location(root)}: "
                + "; ".join(problems)
                + f". How to get it: {self.how_to_get}"
            )
        dataset = self.builder(root, split, transform=transform, **kwargs)
        if len(dataset) == 0:
            raise DatasetMissing(
                f"dataset {self.name!r}: split {split!r} under {self.location(root)} has no "
                f"samples (empty or truncated files?). How to get it: {self.how_to_get}"
            )
        return dataset


DATASETS: Registry[DatasetSpec] = Registry("dataset")
register_dataset = DATASETS.register  # add a spec under its ``name`` (one name, one spec)


def available_datasets() -> dict[str, DatasetSpec]:
    """Registered datasets by name."""
    return dict(DATASETS.items())


def get_dataset(name: str) -> DatasetSpec:
    """The spec registered as ``name``; unknown names list the valid ones."""
    return DATASETS.get(name)


def dataset_problems(names: Iterable[str], root: Path) -> list[str]:
    """One message per dataset of ``names`` that is missing or damaged under ``root``: its
    problems, where it was looked for and how to get it (empty when every one is there)."""
    messages = []
    for name in names:
        spec = get_dataset(name)
        problems = spec.check(root)
        if problems:
            messages.append(f"{name}: {', '.join(problems)} under {spec.location(root)} "
                            f"(get it: {spec.how_to_get})")
    return messages
