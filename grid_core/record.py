"""`@record`: grid's frozen attrs classes, sharing one `__repr__`, `__eq__` and `__hash__`.

attrs compiles every class's own copies of those methods when its module is imported: about
0.2 ms a class, and a status command imports some sixty classes (the config's and the records
it answers with), a tenth of its run. The shared ones behave as attrs' do: fields in order, and
a record equals only a record of the same class with equal fields.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, a.name) for a in self.__attrs_attrs__)


def _repr(self: Any) -> str:
    fields = ", ".join(f"{a.name}={getattr(self, a.name)!r}" for a in self.__attrs_attrs__)
    return f"{type(self).__qualname__}({fields})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash((self.__class__, *_values(self)))


if TYPE_CHECKING:  # to type checkers (and attrs' mypy plugin), exactly attrs.frozen
    from attrs import frozen as record
else:
    def record(maybe_cls: type | None = None, /, **options: Any) -> Any:
        """attrs.frozen(**options), with the shared methods."""

        def build(cls: type) -> type:
            made = attrs.frozen(cls, repr=False, eq=False, **options)
            made.__repr__, made.__eq__, made.__hash__ = _repr, _eq, _hash
            return made

        return build if maybe_cls is None else build(maybe_cls)
