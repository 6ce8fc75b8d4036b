"""`@record` (grid_core/record.py) behaves as attrs.frozen does, with shared methods."""

from __future__ import annotations

import pickle

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_core.record import record
from grid_core.types import Boost, ControllerStatus, NodeMetrics, OffloadStatus


def _pair(**options: bool) -> tuple[type, type]:
    def fields() -> dict[str, object]:
        return {"__annotations__": {"name": "str", "size": "int | None", "tags": "tuple[str, ...]"},
                "size": None, "tags": ()}

    return (record(type("Entry", (), fields()), **options),
            attrs.frozen(type("Entry", (), fields()), **options))


values = st.tuples(st.text(max_size=5), st.none() | st.integers(), st.lists(st.text(max_size=2)).map(tuple))


@pytest.mark.parametrize("kw_only", [False, True])
@given(a=values, b=values)
def test_repr_eq_and_hash_are_attrs_own(kw_only: bool, a: tuple[object, ...], b: tuple[object, ...]) -> None:
    ours, theirs = _pair(kw_only=kw_only)

    def make(cls: type, value: tuple[object, ...]) -> object:
        return cls(**dict(zip(("name", "size", "tags"), value, strict=True)))

    assert repr(make(ours, a)) == repr(make(theirs, a))
    assert (make(ours, a) == make(ours, b)) == (make(theirs, a) == make(theirs, b)) == (a == b)
    assert (make(ours, a) != make(ours, b)) == (a != b)
    assert hash(make(ours, a)) == hash(make(ours, a))
    assert make(ours, a) != make(theirs, a)  # another class with equal fields is not equal


def test_a_field_s_repr_eq_and_hash_options_are_attrs_own() -> None:
    def fields() -> dict[str, object]:
        return {"__annotations__": {"name": "str", "secret": "str", "seen": "float"},
                "secret": attrs.field(repr=False, default=""), "seen": attrs.field(eq=False, default=0.0)}

    ours, theirs = record(type("Entry", (), fields())), attrs.frozen(type("Entry", (), fields()))
    for cls in (ours, theirs):
        assert repr(cls("a", "token", 1.0)) == "Entry(name='a', seen=1.0)"
        assert cls("a", "x", 1.0) == cls("a", "x", 2.0) and hash(cls("a", "x", 1.0)) == hash(cls("a", "x", 2.0))
        assert cls("a", "x") != cls("a", "y")
    nan = float("nan")
    assert ours("a", "x", nan) == ours("a", "x", nan)  # the same float object, as in attrs' tuples
    with pytest.raises(TypeError, match=r"attrs\.frozen"):
        record(type("Own", (), {"__annotations__": {"name": "str"}, "__repr__": lambda self: "own"}))
    with pytest.raises(TypeError, match=r"attrs\.frozen"):
        record(type("Keyed", (), {"__annotations__": {"name": "str"}, "name": attrs.field(eq=str.lower)}))


def test_records_stay_frozen_picklable_and_unequal_across_subclasses() -> None:
    boost = Boost("b1", "head", "w1", "cpu", 2.0, "high", 1.0, None)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        boost.amount = 3.0  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(boost)) == boost
    assert {boost, attrs.evolve(boost)} == {boost}
    assert ControllerStatus() != attrs.evolve(ControllerStatus(), enabled=True)
    assert OffloadStatus() != ControllerStatus()
    metrics = NodeMetrics("psutil", 1.0, 2.0)
    assert repr(metrics).startswith("NodeMetrics(source='psutil', cpu_percent=1.0, memory_percent=2.0, ")


def test_every_name_of_grid_core_types_is_where_the_facade_says() -> None:
    import importlib

    from grid_core import types

    for module, names in types.MODULES.items():
        assert set(importlib.import_module(f"grid_core.types.{module}").__all__) == set(names), module
    assert not set(types.MODULES) & set(types._HOME)  # a module named as a name would shadow it once imported
    assert callable(types.wire) and set(types.__all__) == set(types._HOME)
    assert types.ControllerStatus is importlib.import_module("grid_core.types.offload").ControllerStatus
    with pytest.raises(AttributeError):
        types.NoSuchRecord  # noqa: B018


def test_a_name_loads_only_its_own_module() -> None:
    """What a status command gains from the split: `jobs list` builds no offload records."""
    import subprocess
    import sys

    probe = ("import sys\nfrom grid_core.types import JobRecord, NodeMetrics\n"
             "print(sorted(m for m in sys.modules if m.startswith('grid_core.types.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['grid_core.types.jobs', 'grid_core.types.readings']"
