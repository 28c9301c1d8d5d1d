"""Typed settings dataclasses read from a config block, checked through ``core.fields``.

A settings class is a frozen dataclass whose every field is a :func:`setting`: its
:class:`~benchmark.core.fields.Spec` (type and constraint) and, for a task's declared defaults
only, a default. Method settings and launcher resources hold no default: the profile's
``methods.<name>`` and ``launcher`` blocks hold every value (docs/CONTRACTS.md); :func:`read_settings`
refuses a method block that lacks one, naming ``methods.<name>.<key>``. A :func:`block` field is a nested block of
another settings class (InvP's ``ramp``). :func:`settings_section` is the
:class:`~benchmark.core.fields.Section` the fields make and :func:`read_typed` checks a block
through it, so an unknown key (with close matches), a wrong type or a value out of range is the
same ConfigError as in every other config section, naming the dotted key and the fix. Method
options (:func:`read_settings`, the ``method`` block), the detector and its schedule
(``tasks.detection``) and launcher resources are declared this way. Rules across fields or
against the training set's size, which no single field can state, go through :func:`require`,
with the same wording.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from benchmark.core.fields import ConfigError, Float, ListOf, Section, Spec, Tuple, fail

T = TypeVar("T")
SPEC = "spec"  # field metadata key of a setting's Spec
BLOCK = "block"  # field metadata key of a nested block's settings class
METHOD_KEY = "method"  # the run config's block the settings come from


def setting(default: Any = dataclasses.MISSING, spec: Spec | None = None,
            factory: Any = dataclasses.MISSING) -> Any:
    """A settings field with the ``spec`` its values must meet and, for a task's declared default,
    ``default`` (or a ``factory`` of it, for a mutable one; neither: the key is
    required, as every method setting is)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={SPEC: spec})


def block(cls: type) -> Any:
    """A required field holding a nested block of settings class ``cls``."""
    return dataclasses.field(metadata={BLOCK: cls})


def _nested(field: dataclasses.Field) -> type | None:
    """The settings class of a nested block field, else None."""
    return field.metadata.get(BLOCK)


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def settings_section(cls: type, required: bool = True) -> Section:
    """The Section of settings class ``cls``: one spec per field (nested blocks recursively);
    ``required=False`` leaves absent keys to the caller."""
    specs: dict[str, Spec] = {}
    needed = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _nested(field)
        if nested is not None:
            specs[field.name] = settings_section(nested, required)
        elif field.metadata.get(SPEC) is not None:
            specs[field.name] = field.metadata[SPEC]
        else:
            raise TypeError(f"{cls.__name__}.{field.name} declares no Spec; use benchmark.core.settings.setting")
        if required and not _has_default(field):
            needed.append(field.name)
    return Section(specs, required=needed)


def defaulted_fields(cls: type, prefix: str = "") -> list[str]:
    """The dotted names of the fields of settings class ``cls`` (nested blocks recursively) that
    hold a default in code."""
    names = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _nested(field)
        if nested is not None:
            names += defaulted_fields(nested, f"{prefix}{field.name}.")
        elif _has_default(field):
            names.append(prefix + field.name)
    return names


def _require_present(cls: type, values: Mapping[str, Any], method: str, prefix: str = "") -> None:
    """A ConfigError naming ``methods.<method>.<key>`` for the first field of ``cls`` without a
    default that ``values`` lacks (nested blocks recursively)."""
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key, nested = prefix + field.name, _nested(field)
        if field.name not in values and not _has_default(field):
            raise ConfigError(f"methods.{method}.{key} is missing from the profile (the run's "
                              f"method.{key}); add it to the profile's methods.{method} block "
                              f"(benchmark/profiles/<profile>.yaml or the profiles/methods/ file it "
                              f"names) or --set method.{key}=...")
        if nested is not None:
            _require_present(nested, values[field.name], method, f"{key}.")


def settings_fix(method: str) -> str:
    """The fix hint of a method's settings errors (``{key}``: the dotted key)."""
    return f"fix it in the profile's methods.{method} block or with --set {{key}}=..."


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    """``cls`` from checked ``values``: nested blocks built, floats as float, lists as tuples."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name not in values:
            continue
        value, nested = values[field.name], _nested(field)
        if nested is not None:
            value = _build(nested, value)
        elif isinstance(field.metadata[SPEC], Float):
            value = float(value)
        elif isinstance(field.metadata[SPEC], (ListOf, Tuple)):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)


def read_typed(cls: type[T], values: Mapping[str, Any], key: str, fix: str = "") -> T:
    """The settings ``cls`` of the config block ``values`` at dotted ``key``, checked against the
    fields' specs (``fix``: the hint, as in ``core.fields``); absent keys keep their defaults
    (a field without one is required)."""
    settings_section(cls).check(values, key, fix)
    return _build(cls, values)


def read_settings(cls: type[T], config: Mapping[str, Any], method: str) -> T:
    """:func:`read_typed` of a method's ``config`` (the ``method`` block; its ``name`` is not a
    setting), with the fix pointing at the profile's ``methods.<method>`` block. Every field
    without a default must be in ``config``: a ConfigError names ``methods.<method>.<key>``."""
    values = {key: value for key, value in config.items() if key != "name"}
    settings_section(cls, required=False).check(values, METHOD_KEY, settings_fix(method))
    _require_present(cls, values, method)
    return _build(cls, values)


def require(condition: bool, method: str, key: str, expected: str, got: Any) -> None:
    """A rule across settings (or against the training set): unless ``condition`` holds, a
    ConfigError ``method.<key> must be <expected>, got <got>`` with the fix, as a field's."""
    if not condition:
        fail(f"{METHOD_KEY}.{key} must be {expected}, got {got!r}", f"{METHOD_KEY}.{key}",
             settings_fix(method))
