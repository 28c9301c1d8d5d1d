"""One registry type for every pluggable kind: methods, tasks, datasets, backbones, launchers,
augmentation recipes.

A registry maps a name to an entry (a class, a spec, a factory). Registering a name twice is a
programming error; looking up an unknown name is a user error (:class:`ConfigError`) that lists
the valid names and the close matches.
"""
from __future__ import annotations

import difflib
from typing import Generic, Iterator, TypeVar

from benchmark.core.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to entries of one ``kind`` (e.g. ``"method"``), in registration order."""

    def __init__(self, kind: str, key: str | None = None, hint: str = ""):
        self.kind = kind
        self.key = key  # the config key that names an entry (e.g. data.augment), for messages
        self.hint = hint  # what else is accepted (e.g. "or timm:<model name>")
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a second entry under the same name is refused."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, entry: T) -> T:
        """Class decorator: register ``entry`` under its ``name`` attribute."""
        return self.add(getattr(entry, "name"), entry)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The entry registered as ``name``; an unknown name is a ConfigError listing the valid
        names and the close matches."""
        if name not in self._entries:
            raise ConfigError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        """``unknown <kind> 'x'; valid <kind>s: a, b; did you mean: c`` (``<key>='x' is not a known
        <kind>`` when the registry names its config key)."""
        close = difflib.get_close_matches(str(name), self.names(), n=3, cutoff=0.6)
        did_you_mean = f"; did you mean: {', '.join(close)}" if close else ""
        what = f"{self.key}={name!r} is not a known {self.kind}" if self.key else \
            f"unknown {self.kind} {name!r}"
        valid = ", ".join(self.names()) + (f" {self.hint}" if self.hint else "")
        return f"{what}; valid {self.kind}s: {valid}{did_you_mean}"

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
