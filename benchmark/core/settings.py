"""Typed settings dataclasses read from a config block, checked through ``core.fields``.

A settings class is a frozen dataclass whose every field is a :func:`setting`: its default (for a
method, the official code's value, docs/methods/*.md §Hyperparameters; none: a required key) and
its :class:`~benchmark.core.fields.Spec` (type and constraint). A field whose default is itself
such a dataclass is a nested block (InvP's ``ramp``). :func:`settings_section` is the
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

from benchmark.core.fields import Float, ListOf, Section, Spec, Tuple, fail

T = TypeVar("T")
SPEC = "spec"  # field metadata key of a setting's Spec
METHOD_KEY = "method"  # the run config's block the settings come from


def setting(default: Any = dataclasses.MISSING, spec: Spec | None = None,
            factory: Any = dataclasses.MISSING) -> Any:
    """A settings field with ``default`` (or a ``factory`` of it, for a mutable one; neither: the
    key is required) and the ``spec`` its values must meet."""
    return dataclasses.field(default=default, default_factory=factory, metadata={SPEC: spec})


def _nested(field: dataclasses.Field) -> type | None:
    """The settings class of a nested block field, else None."""
    return type(field.default) if dataclasses.is_dataclass(field.default) else None


def settings_section(cls: type) -> Section:
    """The Section of settings class ``cls``: one spec per field (nested blocks recursively)."""
    specs: dict[str, Spec] = {}
    required = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        nested = _nested(field)
        if nested is not None:
            specs[field.name] = settings_section(nested)
        elif field.metadata.get(SPEC) is not None:
            specs[field.name] = field.metadata[SPEC]
        else:
            raise TypeError(f"{cls.__name__}.{field.name} declares no Spec; use benchmark.core.settings.setting")
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            required.append(field.name)
    return Section(specs, required=required)


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
    fields' specs (``fix``: the hint, as in ``core.fields``); absent keys keep their defaults."""
    settings_section(cls).check(values, key, fix)
    return _build(cls, values)


def read_settings(cls: type[T], config: Mapping[str, Any], method: str) -> T:
    """:func:`read_typed` of a method's ``config`` (the ``method`` block; its ``name`` is not a
    setting), with the fix pointing at the profile's ``methods.<method>`` block."""
    values = {key: value for key, value in config.items() if key != "name"}
    return read_typed(cls, values, METHOD_KEY, settings_fix(method))


def require(condition: bool, method: str, key: str, expected: str, got: Any) -> None:
    """A rule across settings (or against the training set): unless ``condition`` holds, a
    ConfigError ``method.<key> must be <expected>, got <got>`` with the fix, as a field's."""
    if not condition:
        fail(f"{METHOD_KEY}.{key} must be {expected}, got {got!r}", f"{METHOD_KEY}.{key}",
             settings_fix(method))
