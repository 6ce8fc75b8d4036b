"""Boost placement, preemption, limits and durations, as pure rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_core.boost import Boost, expired, parse_duration, plan, share_limits
from grid_core.config import load_file
from grid_core.errors import GridError
from tests.test_config import REPO

FREE = {"head": {"cpu": 8.0}, "w1": {"cpu": 1.0}, "w2": {"cpu": 3.0}}


def boost(source: str, amount: float, priority: str, created: float = 0.0) -> Boost:
    return Boost(f"b{created}", "head", source, "cpu", amount, priority, created, None)


def test_the_source_with_most_room_and_never_the_target() -> None:
    assert plan("head", "cpu", 2, "normal", FREE, []).source == "w2"
    assert plan("head", "cpu", 1, "normal", FREE, [], source="w1").source == "w1"


def test_higher_priority_preempts_lower_when_short_and_says_which() -> None:
    low = boost("w2", 2, "low", created=1)
    chosen = plan("head", "cpu", 3, "high", {**FREE, "w2": {"cpu": 1.0}}, [low])
    assert chosen.source == "w2" and chosen.preempt == (low,)


def test_equal_priority_does_not_preempt() -> None:
    with pytest.raises(GridError, match="no node can lend 3 cpu to head at priority low"):
        plan("head", "cpu", 3, "low", {**FREE, "w2": {"cpu": 1.0}}, [boost("w2", 2, "low")])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"resource": "disk"}, "unknown resource 'disk'"),
    ({"amount": 0}, "positive"),
    ({"amount": float("nan")}, "positive"),
    ({"priority": "urgent"}, "unknown priority 'urgent'"),
    ({"source": "nope"}, "no node named 'nope'"),
    ({"source": "head"}, "cannot borrow from itself"),
    ({"amount": 64}, "most free: w2 with 3"),
])
def test_impossible_requests_are_clear(kwargs: dict[str, object], message: str) -> None:
    args = {"target": "head", "resource": "cpu", "amount": 1.0, "priority": "normal", "free": FREE, "active": []}
    with pytest.raises(GridError, match=message):
        plan(**{**args, **kwargs})  # type: ignore[arg-type]


def test_seed_sharing_limits_cap_what_a_node_lends() -> None:
    limits = share_limits(load_file(REPO / "config" / "my-cluster-enhanced.yaml"))
    assert limits["gpu-worker-1"] == {"cpu": 6.0, "gpu": 1.0, "memory": 24.0}
    free = {"gpu-master": {"cpu": 16.0}, "gpu-worker-1": {"cpu": 8.0}}
    assert plan("gpu-master", "cpu", 6, "normal", free, [], limits=limits).source == "gpu-worker-1"
    with pytest.raises(GridError):
        plan("gpu-master", "cpu", 7, "normal", free, [], limits=limits)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("1d", 86400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@given(st.text(max_size=10))
def test_duration_parser_never_crashes(text: str) -> None:
    try:
        assert parse_duration(text) > 0
    except GridError as exc:
        assert "duration" in str(exc)


def test_expiry() -> None:
    b = Boost("x", "head", "w1", "cpu", 1, "normal", 0, expires_at=10)
    assert expired([b], 9) == [] and expired([b], 10) == [b]


@given(st.dictionaries(st.sampled_from(["w1", "w2", "w3"]), st.floats(0, 16), min_size=1),
       st.floats(0.1, 16), st.sampled_from(["low", "normal", "high", "critical"]))
def test_a_plan_always_fits(free_cpu: dict[str, float], amount: float, priority: str) -> None:
    free = {"head": {"cpu": 0.0}, **{n: {"cpu": c} for n, c in free_cpu.items()}}
    try:
        chosen = plan("head", "cpu", amount, priority, free, [])
    except GridError:
        assert all(c < amount for c in free_cpu.values())
    else:
        assert chosen.source != "head" and free[chosen.source]["cpu"] >= amount
