"""Resumable state declared once: a class names its state attributes, and ``to``, ``state_dict``
and ``load_state_dict`` follow from those names.

A :class:`Stateful` class lists the attributes it adds in ``state_names`` (a subclass lists only
its own; they add to its bases'). Each attribute holds a tensor, a nested ``Stateful`` part
(saved as a nested dict), a host scalar (int, bool, float), a str (a setting the state records:
loading checks that it equals this run's), or None (not computed yet). The state dict's keys are
the names.

Loading wants exactly the declared keys. A tensor must have the shape of the one it replaces
(this run's, allocated when the object was built), hold finite values if it is floating, and is
cast to that tensor's dtype and device. An attribute that is None takes a loaded value through
``state_template(name)``, an empty tensor or part of the shape the value must have; None loads
only where the attribute may be None.
"""
from __future__ import annotations

import copy
from typing import Any, ClassVar, Mapping

import torch

RESUME_FIX = "resume with the same options and data subset (or start afresh with --resume never)"


class Stateful:
    """An object whose resumable state is the attributes named in ``state_names``."""

    state_names: ClassVar[tuple[str, ...]] = ()
    state_shapes: ClassVar[str] = "its shapes follow the options and the data"  # for error messages

    @classmethod
    def declared_state(cls) -> tuple[str, ...]:
        """Every state name of the class, its bases' first."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            names += [name for name in vars(klass).get("state_names", ()) if name not in names]
        return tuple(names)

    def state_template(self, name: str) -> torch.Tensor | Stateful | None:
        """An empty value for state ``name`` while it is None (loading fills it); None when
        ``name`` is never None or never holds a value in this run."""
        return None

    def initial_tensor(self, name: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` as the initial tensor of attribute ``name`` (float32 on its device); a
        ValueError unless it has the shape allocated at build (``state_shapes`` says why)."""
        current = getattr(self, name)
        if tuple(value.shape) != tuple(current.shape):
            raise ValueError(f"initial {name} of shape {tuple(value.shape)} given, but {self.state_shapes} = "
                             f"{tuple(current.shape)}")
        return value.to(current.device, torch.float32)

    def check_loaded_state(self) -> None:
        """Raise ValueError when loaded values do not fit together (beyond shapes and dtypes)."""

    def to(self, device: torch.device | str) -> Any:
        """Move every state tensor (and part) to ``device``; returns self."""
        for name in self.declared_state():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
            elif isinstance(value, Stateful):
                value.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """The state by name: tensors as CPU copies, parts as nested dicts, scalars as they are."""
        return {name: _saved(getattr(self, name)) for name in self.declared_state()}

    def load_state_dict(self, state: Mapping[str, Any], prefix: str = "") -> None:
        """Restore what ``state_dict`` returned, checking keys, shapes and values (ValueError
        naming the entry and the fix otherwise, leaving the object as it was); ``prefix`` names
        this part in messages."""
        names = self.declared_state()
        where = prefix.rstrip(".") or "of the method"
        if not isinstance(state, Mapping):
            raise ValueError(f"checkpoint state {where} is a {type(state).__name__}, not a mapping; {RESUME_FIX}")
        missing, unexpected = [n for n in names if n not in state], sorted(set(state) - set(names))
        if missing or unexpected:
            raise ValueError(f"checkpoint state {where} lacks {[prefix + n for n in missing]} and has unexpected "
                             f"{[prefix + n for n in unexpected]}; {RESUME_FIX}")
        loaded = {name: self._loaded_entry(name, state[name], prefix + name) for name in names}
        before = {name: getattr(self, name) for name in names}
        self._assign(loaded)
        try:
            self.check_loaded_state()
        except ValueError:
            self._assign(before)
            raise

    def _assign(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if not isinstance(value, str):  # a recorded setting is checked, never set
                setattr(self, name, value)

    def _loaded_entry(self, name: str, value: Any, path: str) -> Any:
        """What attribute ``name`` becomes when it loads ``value`` (nothing is changed yet)."""
        current = getattr(self, name)
        template = self.state_template(name) if current is None else current
        if value is None:
            if current is not None and self.state_template(name) is None:
                raise ValueError(f"checkpoint has no {path!r}, which this run keeps; {RESUME_FIX}")
            return None
        if template is None:
            raise ValueError(f"checkpoint holds {path!r}, which this run does not keep; {RESUME_FIX}")
        if isinstance(template, Stateful):
            part = copy.copy(template)  # loaded apart, so that a failure leaves the original intact
            part.load_state_dict(value, path + ".")
            return part
        if isinstance(template, torch.Tensor):
            return self._loaded_tensor(value, template, path)
        if isinstance(template, str) and value != template:
            raise ValueError(f"checkpoint {path!r} is {value!r} but this run's is {template!r}; {RESUME_FIX}")
        if type(value) is not type(template):
            raise ValueError(f"checkpoint {path!r} holds {value!r} ({type(value).__name__}) where this run keeps "
                             f"a {type(template).__name__}; {RESUME_FIX}")
        return value

    def _loaded_tensor(self, value: Any, template: torch.Tensor, path: str) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"checkpoint {path!r} holds a {type(value).__name__}, not a tensor; {RESUME_FIX}")
        if tuple(value.shape) != tuple(template.shape):
            raise ValueError(f"checkpoint {path!r} has shape {tuple(value.shape)} but this run's has "
                             f"{tuple(template.shape)} ({self.state_shapes}); {RESUME_FIX}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"checkpoint {path!r} holds NaN/inf values; resume from an earlier checkpoint")
        return value.to(template.device, template.dtype, copy=True)


def _saved(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, Stateful):
        return value.state_dict()
    return value
