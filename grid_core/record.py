"""`@record`: grid's frozen attrs classes, sharing one `__repr__`, `__eq__` and `__hash__`.

attrs compiles every class's own copies of those methods when its module is imported, about
0.2 ms a class of the 0.3 ms it costs in all; a status command imports some forty classes (the
config's and the records it answers with). The shared ones behave as attrs' do: fields in order,
a field's `repr=False`, `eq=False` and `hash=` respected, and a record equal only to a record of
the same class. A class that needs its own (or a field's custom repr or eq function) uses
attrs.frozen. Records have no __slots__: a slotted class is built twice, which cost the config's
and a status command's classes 1.7 ms in all, and a command holds few records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs


def _methods(cls: type) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    fields = attrs.fields(cls)
    if any(callable(a.repr) or a.eq_key is not None for a in fields):
        raise TypeError(f"{cls.__qualname__}: a field's own repr or eq function needs attrs.frozen, not @record")
    shown = tuple(a.name for a in fields if a.repr)
    compared = tuple(a.name for a in fields if a.eq)
    hashed = tuple(a.name for a in fields if (a.eq if a.hash is None else a.hash))

    def __repr__(self: Any) -> str:
        return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in shown)})"

    def __eq__(self: Any, other: Any) -> Any:
        if other.__class__ is not self.__class__:
            return NotImplemented
        # Tuples, as attrs compares: an element is equal to itself first (a reading of nan, too).
        return tuple(getattr(self, n) for n in compared) == tuple(getattr(other, n) for n in compared)

    def __hash__(self: Any) -> int:
        return hash((self.__class__, *(getattr(self, n) for n in hashed)))

    return __repr__, __eq__, __hash__


if TYPE_CHECKING:  # to type checkers (and attrs' mypy plugin), exactly attrs.frozen
    from attrs import frozen as record
else:
    def record(maybe_cls: type | None = None, /, **options: Any) -> Any:
        """attrs.frozen(**options), with the shared methods."""

        def build(cls: type) -> type:
            own = [m for m in ("__repr__", "__eq__", "__hash__") if m in cls.__dict__]
            if own:
                raise TypeError(f"{cls.__qualname__} defines {', '.join(own)}: use attrs.frozen, not @record")
            made = attrs.frozen(cls, repr=False, eq=False, slots=False, **options)
            made.__repr__, made.__eq__, made.__hash__ = _methods(made)
            return made

        return build if maybe_cls is None else build(maybe_cls)
