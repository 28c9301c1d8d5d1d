"""Test-side method configs: a profile's resolved ``methods.<name>`` block with a test's overrides.

Method settings hold no defaults (every value is the profile's), so a test builds its method from
a whole block. The default profile is ``imagenet``: its blocks hold the official values, the ones
the settings classes held as defaults before, so a test that sets only what it checks keeps
checking the official behaviour elsewhere.
"""
from __future__ import annotations

from typing import Any, Mapping

from benchmark.core.config import resolve


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; a nested block (``ramp``) is merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, Mapping) and isinstance(out.get(key), Mapping)
        out[key] = merged(out[key], value) if nested else value
    return out


def method_config(name: str, profile: str = "imagenet", **overrides: Any) -> dict[str, Any]:
    """The run config's ``method`` block of ``name`` under ``profile`` (with ``name``; the
    block's ``set`` already applied elsewhere), with ``overrides`` merged in."""
    return merged(resolve(profile, name).to_dict()["method"], overrides)
