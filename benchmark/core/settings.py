"""Typed, validated method settings read from the resolved ``method`` config block.

Each method declares a frozen dataclass whose defaults are the official code's values
(docs/methods/invp.md §Hyperparameters, docs/methods/insdis.md §Hyperparameters, docs/methods/knn-positive.md §Hyperparameters); profiles override them. Unknown keys and wrongly typed values are
errors that name the key and the fix, so a typo in a profile or ``--set`` never goes unnoticed.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from benchmark.core.config import ConfigError

T = TypeVar("T")
ANY_TYPE = {"any_type": True}  # field metadata: the settings class validates the value itself


def _check_type(method: str, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(
            f"method {method!r}: option {key!r} must be {type(default).__name__}, got {value!r}; "
            f"fix it in the profile's methods.{method} block or with --set method.{key}=..."
        )
    return value


def read_settings(cls: type[T], config: Mapping[str, Any], method: str, prefix: str = "") -> T:
    """Build the settings dataclass ``cls`` from ``config``; missing keys keep their defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(config) - set(fields) - {"name"})
    if unknown:
        raise ConfigError(
            f"method {method!r}: unknown option(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid options: {', '.join(prefix + k for k in sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for key, value in config.items():
        if key == "name":
            continue
        field = fields[key]
        has_default = field.default is not dataclasses.MISSING
        default = field.default if has_default else field.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            if not isinstance(value, Mapping):
                raise ConfigError(f"method {method!r}: option {prefix + key!r} must be a mapping")
            values[key] = read_settings(type(default), value, method, prefix=f"{prefix}{key}.")
        elif field.metadata.get("any_type"):
            values[key] = value
        else:
            values[key] = _check_type(method, prefix + key, value, default)
    return cls(**values)


def require(condition: bool, method: str, message: str) -> None:
    """Raise a ConfigError about ``method`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"method {method!r}: {message}")
