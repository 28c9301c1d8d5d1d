"""Run configuration: profile YAML + dotted ``--set`` overrides -> a frozen, hashed RunConfig.

A profile (``benchmark/profiles/<name>.yaml``) holds every default of a run. Its ``methods``
section holds one block of defaults per method; resolving a run picks the chosen method's block
into ``method`` (with ``method.name``) so that the hash of a run depends only on what it uses.
A block may also hold ``set: {dotted.key: value}``: values of shared sections that this method
needs (MoCo v2's MLP head and augmentation), applied like ``--set`` before the user's overrides.
Overrides address the resolved tree: ``--set method.temperature=0.2 --set pretrain.epochs=3``.

Profiles and ``--set`` values are read with YAML rules plus YAML 1.2's exponent floats: ``3e-2``
is the number 0.03 (PyYAML's YAML 1.1 would read it as a string), so one config has one hash
however its numbers are written. The harness checks the resolved tree against its schema (benchmark/harness/schema.py).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import yaml

from benchmark.core.fields import ConfigError, safe_name

PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader that also reads exponent floats without a dot (``3e-2``, ``1e5``) as
    floats, as YAML 1.2 does."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(stream: Any) -> Any:
    """Parse YAML text or a file object with :class:`ConfigLoader` (safe: builds no objects)."""
    return yaml.load(stream, Loader=ConfigLoader)  # noqa: S506 (ConfigLoader is a SafeLoader)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``benchmark/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def profile_path(name: str) -> Path:
    """The file of profile ``name``: a path when it ends in .yaml/.yml, else a shipped profile."""
    return Path(name) if name.endswith((".yaml", ".yml")) else PROFILE_DIR / f"{name}.yaml"


def load_profile(name: str) -> dict[str, Any]:
    """Read a profile YAML by name (or by path) and return its raw tree."""
    path = profile_path(name)
    if not path.is_file():
        raise ConfigError(
            f"unknown profile {name!r} (looked for {path}); valid profiles: "
            f"{', '.join(available_profiles())}"
        )
    tree = read_yaml_file(path)
    if not isinstance(tree, dict):
        raise ConfigError(f"profile file {path} must hold a mapping at top level")
    tree.setdefault("profile", path.stem)
    return tree


def read_yaml_file(path: Path) -> Any:
    """The YAML document in ``path`` ({} when empty); a syntax error names the file, line and
    column."""
    try:
        with open(path) as fh:
            return read_yaml(fh) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML in {where}: {problem}; fix the file (YAML syntax: "
                          "`key: value`, two-space indents, no tabs)") from None


def parse_value(text: str) -> Any:
    """Parse an override's right-hand side with YAML rules (``3``, ``0.2``, ``3e-2``, ``true``,
    ``[1,2]``)."""
    try:
        return read_yaml(text) if text != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse value {text!r}: {exc}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``a.b.c=value`` into the dotted key and its parsed value."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"malformed --set {item!r}: expected dotted.key=value, e.g. --set pretrain.epochs=3"
        )
    return key, parse_value(value.strip())


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Leaves of a config tree by dotted key (``{"pretrain.epochs": 20, ...}``); sequences
    become lists."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = list(value) if isinstance(value, (list, tuple)) else value
    return flat


def apply_override(tree: dict[str, Any], key: str, value: Any,
                   may_add: Callable[[str], bool] | None = None) -> None:
    """Set ``key`` (dotted) in ``tree``; an unknown key is an error listing close matches,
    unless its section exists and ``may_add(key)`` says the key is a setting left at its
    default there (a task's setting the profile does not list)."""
    node: Any = tree
    parts = key.split(".")
    for depth, part in enumerate(parts):
        addable = depth == len(parts) - 1 and isinstance(node, dict) and may_add is not None
        if addable and part not in node and may_add(key):
            node[part] = value
            return
        if not isinstance(node, dict) or part not in node:
            close = difflib.get_close_matches(key, list(flatten(tree)), n=5, cutoff=0.5)
            hint = f"; did you mean: {', '.join(close)}" if close else ""
            raise ConfigError(f"unknown config key {key!r} in --set{hint}")
        if depth == len(parts) - 1:
            old = node[part]
            if isinstance(old, dict) and not isinstance(value, dict):
                raise ConfigError(f"--set {key}: {key!r} is a section; set one of its keys instead")
            node[part] = value
        else:
            node = node[part]


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


class FrozenDict(Mapping[str, Any]):
    """Read-only mapping with attribute access (``cfg.pretrain.epochs``)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]):
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise TypeError("configuration is frozen; override values with --set when resolving")

    def __repr__(self) -> str:
        return f"FrozenDict({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (self._data,))

    def to_dict(self) -> dict[str, Any]:
        """A deep, mutable copy as plain dicts and lists."""
        return _thaw(self)


def config_hash(tree: Mapping[str, Any], length: int = 12) -> str:
    """Stable hash of a config tree: sha256 of its canonical JSON (sorted keys)."""
    canonical = json.dumps(_thaw(tree), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunConfig:
    """The resolved configuration of one run, frozen; ``hash`` identifies it."""

    tree: FrozenDict

    def __getattr__(self, key: str) -> Any:
        tree = self.__dict__.get("tree")  # absent while unpickling
        if tree is None or key not in tree:
            raise AttributeError(key)
        return tree[key]

    def __getitem__(self, key: str) -> Any:
        return self.tree[key]

    @property
    def hash(self) -> str:
        return config_hash(self.tree)

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> "RunConfig":
        """Freeze a plain tree (e.g. one read back from a record or a checkpoint)."""
        return cls(_freeze(tree))

    def to_dict(self) -> dict[str, Any]:
        return self.tree.to_dict()


def resolve(
    profile: str,
    method: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    may_add: Callable[[str], bool] | None = None,
) -> RunConfig:
    """Build the RunConfig of ``method`` under ``profile`` with ``--set`` overrides applied
    (``may_add``: which keys absent from the profile an override may add, see
    :func:`apply_override`)."""
    raw = load_profile(profile)
    tree = copy.deepcopy(raw)
    methods = _method_blocks(tree)
    tree.pop("methods", None)
    if method is not None:
        if method not in methods:
            raise ConfigError(
                f"profile {tree['profile']!r} has no defaults for method {method!r}; "
                f"methods it configures: {', '.join(sorted(methods))}"
            )
        block = copy.deepcopy(methods[method] or {})
        method_sets = block.pop("set", None) or {}
        if not isinstance(method_sets, Mapping):
            raise ConfigError(f"profile {tree['profile']!r}: methods.{method}.set must map dotted keys to "
                              f"values, e.g. set: {{model.head: mlp}}")
        tree["method"] = {"name": method, **block}
        for key, value in method_sets.items():
            apply_override(tree, str(key), value)
    if seed is not None:
        tree["seed"] = seed
    for item in overrides:
        key, value = parse_override(item)
        apply_override(tree, key, value, may_add)
    return RunConfig(_freeze(tree))


def _method_blocks(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's per-method defaults: inline, or ``methods: <name>`` naming
    ``profiles/methods/<name>.yaml`` (one file shared by profiles of the same recipe family)."""
    blocks = tree.get("methods") or {}
    if isinstance(blocks, str):
        path = PROFILE_DIR / "methods" / f"{safe_name(blocks, 'methods')}.yaml"
        if not path.is_file():
            raise ConfigError(f"profile {tree.get('profile')!r}: methods file {path} not found")
        blocks = read_yaml_file(path)
    return copy.deepcopy(dict(blocks))


def method_defaults(profile: str) -> dict[str, dict[str, Any]]:
    """Per-method default blocks of a profile (for ``benchmark list --methods -v``)."""
    return _method_blocks(load_profile(profile))
