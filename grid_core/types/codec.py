"""How a CLI reads the records the cluster answers with, and writes `--json`: plain fields, tuples
and mappings, which cattrs reads back as well (`cattrs.structure(data, Record)`)."""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable, Mapping
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
        self.readers: dict[Any, Callable[[Any], Any]] = {}

    def _fields(self, kind: type) -> list[tuple[str, Any, str]]:
        """(name, type, init argument) of each field, its string annotation resolved once."""
        if kind not in self.fields:
            attrs.resolve_types(kind)
            self.fields[kind] = [(f.name, f.type, f.alias) for f in attrs.fields(kind) if f.init]
        return self.fields[kind]

    def structure(self, data: Any, kind: Any) -> Any:
        return self._reader(kind)(data)

    def _reader(self, kind: Any) -> Callable[[Any], Any]:
        """A function that reads plain data as `kind`, made once per type: a listing of 1,000 jobs
        reads each field of each record with it (76 ms when each value looked its type up anew)."""
        reader = self.readers.get(kind)
        if reader is None:
            reader = self.readers[kind] = self._make_reader(kind)
        return reader

    def _make_reader(self, kind: Any) -> Callable[[Any], Any]:
        if isinstance(kind, type) and attrs.has(kind):
            fields = [(name, alias, self._reader(hint)) for name, hint, alias in self._fields(kind)]
            return lambda data: kind(**{alias: read(data[name]) for name, alias, read in fields if name in data})
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is typing.Union or origin is UnionType:
            values = [a for a in args if a is not type(None)]
            if len(values) != 1:
                raise TypeError(f"a record field may be one type or None, not {kind}")
            inner, optional = self._reader(values[0]), type(None) in args
            return lambda data: None if data is None and optional else inner(data)
        if origin is Literal:
            def literal(data: Any) -> Any:
                if data not in args:
                    raise ValueError(f"{data!r} is not one of {args}")
                return data
            return literal
        if origin is tuple:
            if args[-1] is Ellipsis:
                item = self._reader(args[0])
                return lambda data: tuple(item(x) for x in data)
            items = [self._reader(a) for a in args]
            return lambda data: tuple(read(x) for x, read in zip(data, items, strict=True))
        if origin is list:
            item = self._reader(args[0])
            return lambda data: [item(x) for x in data]
        if origin in (dict, Mapping):
            key, value = self._reader(args[0]), self._reader(args[1])
            return lambda data: {key(k): value(v) for k, v in data.items()}
        if kind is Any:
            return lambda data: data
        if kind in (str, int, float, bool):
            return kind  # type: ignore[no-any-return]
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
