"""Declarative config fields: a type and a constraint per value, and the checks that enforce them.

A schema is a tree of specs, e.g. ``Section({"epochs": Int(ge=1), "lr": Float(gt=0)})``.
``spec.check(value, key, fix)`` raises a ConfigError that names the dotted key, the expected
value and the bad one, followed by ``fix`` (a hint, ``{key}`` stands for the dotted key). Specs
declare types and constraints only, never defaults: the profiles hold every value.

``safe_name`` is the one check of every value that becomes a file or folder name.
"""
from __future__ import annotations

import difflib
import math
import re
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Mapping, Sequence


class ConfigError(ValueError):
    """A configuration problem the user can fix; the message names the key or file and the fix."""


class Spec(ABC):
    """What one config value must be."""

    @abstractmethod
    def expected(self) -> str:
        """The valid values in words, e.g. ``a positive integer``."""

    @abstractmethod
    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (with everything nested in it) is valid."""

    def check(self, value: Any, key: str, fix: str = "") -> None:
        """Raise a ConfigError naming ``key`` unless ``value`` is valid."""
        if not self.accepts(value):
            fail(f"{key} must be {self.expected()}, got {value!r}", key, fix)


def fail(message: str, key: str, fix: str) -> None:
    """Raise ``message`` followed by the ``fix`` hint (``{key}``: the key without list indices)."""
    hint = fix.format(key=key.split("[", 1)[0]) if fix else ""
    raise ConfigError(f"{message}{'; ' + hint if hint else ''}")


class Anything(Spec):
    """Any value (checked elsewhere, e.g. a method's own settings)."""

    def expected(self) -> str:
        return "any value"

    def accepts(self, value: Any) -> bool:
        return True


class Bool(Spec):
    def expected(self) -> str:
        return "true or false"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)


class Number(Spec):
    """A finite real number (ints included, bools not), optionally bounded."""

    integer = False

    def __init__(self, ge: float | None = None, gt: float | None = None,
                 le: float | None = None, lt: float | None = None):
        self.ge, self.gt, self.le, self.lt = ge, gt, le, lt

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        return (math.isfinite(value)
                and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))

    def expected(self) -> str:
        noun = "an integer" if self.integer else "a number"
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if self.integer and self.ge == 1 and high is None:
            return "a positive integer"
        if low is not None and high is not None:
            return (f"{noun} in {'[' if self.ge is not None else '('}{low:g}, {high:g}"
                    f"{']' if self.le is not None else ')'}")
        if low is not None:
            return f"{noun} {'>=' if self.ge is not None else '>'} {low:g}"
        if high is not None:
            return f"{noun} {'<=' if self.le is not None else '<'} {high:g}"
        return noun


class Int(Number):
    """An integer (not a float with an integral value), optionally bounded."""

    integer = True


class Float(Number):
    """A real number, optionally bounded (ints are accepted as the same number)."""


class Text(Spec):
    def expected(self) -> str:
        return "a string"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str)


class Pattern(Spec):
    """A string matching ``regex`` in full; ``description`` says what it is."""

    def __init__(self, regex: str, description: str):
        self.regex, self.description = re.compile(regex), description

    def expected(self) -> str:
        return self.description

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and self.regex.fullmatch(value) is not None


class Name(Pattern):
    """A name that is used as one file or folder name: it can never leave its folder."""

    def __init__(self) -> None:
        super().__init__(r"[A-Za-z0-9_.-]+",
                         "a safe name (letters, digits, '_', '.' and '-'; not '.' or '..')")

    def accepts(self, value: Any) -> bool:
        return super().accepts(value) and value not in (".", "..")


class Parses(Spec):
    """A string that ``parser`` accepts (raises ValueError otherwise)."""

    def __init__(self, parser: Callable[[str], Any], description: str):
        self.parser, self.description = parser, description

    def expected(self) -> str:
        return self.description

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            self.parser(value)
        except ValueError:
            return False
        return True


class Choice(Spec):
    """One of ``options``: a sequence, or a function returning it (a registry read when checked)."""

    def __init__(self, options: Sequence[str] | Callable[[], Iterable[str]]):
        self.options = options

    def valid(self) -> list[str]:
        return list(self.options() if callable(self.options) else self.options)

    def expected(self) -> str:
        return f"one of {', '.join(self.valid())}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.valid()


class Nullable(Spec):
    """``spec`` or null."""

    def __init__(self, spec: Spec):
        self.spec = spec

    def expected(self) -> str:
        return f"{self.spec.expected()} or null"

    def accepts(self, value: Any) -> bool:
        return value is None or self.spec.accepts(value)

    def check(self, value: Any, key: str, fix: str = "") -> None:
        if value is not None:
            self.spec.check(value, key, fix)


class AnyOf(Spec):
    """A value that at least one of ``specs`` accepts."""

    def __init__(self, *specs: Spec):
        self.specs = specs

    def expected(self) -> str:
        return " or ".join(spec.expected() for spec in self.specs)

    def accepts(self, value: Any) -> bool:
        return any(spec.accepts(value) for spec in self.specs)


class ListOf(Spec):
    """A list whose items ``item`` accepts, of at least ``min_len`` (exactly ``length``) items."""

    def __init__(self, item: Spec, min_len: int = 0, length: int | None = None):
        self.item, self.min_len, self.length = item, min_len, length

    def expected(self) -> str:
        size = (f"{self.length} items" if self.length is not None
                else f"at least {self.min_len} item{'s' * (self.min_len > 1)}" if self.min_len else "")
        return f"a list ({size + ', ' if size else ''}each {self.item.expected()})"

    def _sized(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) >= self.min_len
                and (self.length is None or len(value) == self.length))

    def accepts(self, value: Any) -> bool:
        return self._sized(value) and all(self.item.accepts(v) for v in value)

    def check(self, value: Any, key: str, fix: str = "") -> None:
        if not self._sized(value):
            fail(f"{key} must be {self.expected()}, got {value!r}", key, fix)
        for index, item in enumerate(value):
            self.item.check(item, f"{key}[{index}]", fix)


class Tuple(Spec):
    """A list of exactly one item per spec, in order (e.g. ``[start, stop, count]``)."""

    def __init__(self, *items: Spec):
        self.items = items

    def expected(self) -> str:
        return f"a list of {len(self.items)} items: {'; '.join(i.expected() for i in self.items)}"

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, (list, tuple)) and len(value) == len(self.items)
                and all(spec.accepts(v) for spec, v in zip(self.items, value)))


class MapOf(Spec):
    """A mapping whose keys ``keys`` accepts and whose values ``values`` accepts."""

    def __init__(self, keys: Spec, values: Spec):
        self.keys, self.values = keys, values

    def expected(self) -> str:
        return f"a mapping (each key {self.keys.expected()}, each value {self.values.expected()})"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping) and all(
            self.keys.accepts(k) and self.values.accepts(v) for k, v in value.items())

    def check(self, value: Any, key: str, fix: str = "") -> None:
        if not isinstance(value, Mapping):
            fail(f"{key} must be {self.expected()}, got {value!r}", key, fix)
        for name, item in value.items():
            if not self.keys.accepts(name):
                fail(f"{key}: key {name!r} must be {self.keys.expected()}", key, fix)
            self.values.check(item, f"{key}.{name}", fix)


class Section(Spec):
    """A mapping of known keys, each with its spec; a key it does not declare is refused unless
    the section is not ``closed`` (then only the declared keys are checked). An absent key is
    refused only when ``required`` names it."""

    def __init__(self, fields: Mapping[str, Spec], closed: bool = True,
                 required: Iterable[str] = ()):
        self.fields, self.closed, self.required = dict(fields), closed, tuple(required)

    def expected(self) -> str:
        keys = ", ".join(self.required or sorted(self.fields))
        return f"a mapping with keys {'' if self.required else 'among '}{keys}"

    def _unknown(self, value: Mapping[str, Any]) -> list[str]:
        return [] if not self.closed else sorted(str(k) for k in value if k not in self.fields)

    def accepts(self, value: Any) -> bool:
        return (isinstance(value, Mapping) and not self._unknown(value)
                and all(k in value for k in self.required)
                and all(self.fields[k].accepts(v) for k, v in value.items() if k in self.fields))

    def check(self, value: Any, key: str, fix: str = "") -> None:
        if not isinstance(value, Mapping):
            fail(f"{key} must be a mapping, got {value!r}", key, fix)
        unknown = self._unknown(value)
        if unknown:
            close = [m for k in unknown for m in difflib.get_close_matches(k, self.fields, n=2)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"{key or 'the config'}: unknown setting(s) {unknown}{hint}; "
                              f"valid: {', '.join(sorted(self.fields))}")
        missing = [k for k in self.required if k not in value]
        if missing:
            fail(f"{key or 'the config'} is missing {', '.join(missing)}",
                 f"{key}.{missing[0]}" if key else missing[0], fix)
        for name, item in value.items():
            if name in self.fields:
                self.fields[name].check(item, f"{key}.{name}" if key else str(name), fix)


def required(block: Mapping[str, Any], key: str, where: str) -> Any:
    """``block[key]``: a value every profile sets; a ConfigError naming ``where.key`` and the fix
    when ``block`` lacks it (code holds no default that a profile also holds)."""
    if key not in block:
        raise ConfigError(f"{where}.{key} is missing; set it in the profile's {where} section or with "
                          f"--set {where}.{key}=...")
    return block[key]


SAFE_NAME = Name()


def safe_name(value: Any, key: str, fix: str = "") -> str:
    """``value`` when it can be one file or folder name; else a ConfigError naming ``key``."""
    SAFE_NAME.check(value, key, fix)
    return value
