"""How a CLI reads the records the cluster answers with, and writes `--json`: plain fields, tuples
and mappings, which cattrs reads back as well (`cattrs.structure(data, Record)`)."""

from __future__ import annotations

import functools
import typing
from collections.abc import Mapping
from types import UnionType
from typing import Any, Literal

import attrs

__all__ = ("Wire", "wire")


class Wire:
    """How a CLI reads answers and writes `--json`: records from plain data, and back with attrs'
    asdict. The same as cattrs (tests/test_watch_render.py checks both ways, records of every
    shape) for what records hold: attrs classes, tuples, lists, mappings, optional values and
    literals of plain ones; keys a record does not have are ignored. A CLI process reads one
    answer, and importing cattrs cost it more than reading it (10 ms against 0.4)."""

    def __init__(self) -> None:
        self.fields: dict[type, list[tuple[str, Any, str]]] = {}

    def _fields(self, kind: type) -> list[tuple[str, Any, str]]:
        """(name, type, init argument) of each field, its string annotation resolved once."""
        if kind not in self.fields:
            attrs.resolve_types(kind)
            self.fields[kind] = [(f.name, f.type, f.alias) for f in attrs.fields(kind) if f.init]
        return self.fields[kind]

    def structure(self, data: Any, kind: Any) -> Any:
        if isinstance(kind, type) and attrs.has(kind):
            return kind(**{alias: self.structure(data[name], hint)
                           for name, hint, alias in self._fields(kind) if name in data})
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is typing.Union or origin is UnionType:
            if data is None and type(None) in args:
                return None
            values = [a for a in args if a is not type(None)]
            if len(values) != 1:
                raise TypeError(f"a record field may be one type or None, not {kind}")
            return self.structure(data, values[0])
        if origin is Literal:
            if data not in args:
                raise ValueError(f"{data!r} is not one of {args}")
            return data
        if origin is tuple:
            if args[-1] is Ellipsis:
                return tuple(self.structure(item, args[0]) for item in data)
            return tuple(self.structure(item, arg) for item, arg in zip(data, args, strict=True))
        if origin is list:
            return [self.structure(item, args[0]) for item in data]
        if origin in (dict, Mapping):
            return {self.structure(k, args[0]): self.structure(v, args[1]) for k, v in data.items()}
        if kind is Any:
            return data
        if kind in (str, int, float, bool):
            return kind(data)
        raise TypeError(f"no rule to read {kind}")

    @staticmethod
    def unstructure(record: Any) -> Any:
        """A record, or a list of records, as plain data (tuples as lists)."""
        import attr

        if isinstance(record, list):
            return [attr.asdict(r, retain_collection_types=False) for r in record]
        return attr.asdict(record, retain_collection_types=False)


@functools.cache
def wire() -> Wire:
    return Wire()
