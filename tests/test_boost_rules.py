"""Boost placement, preemption, limits and durations, as pure rules."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_core.boost import expired, expires_at, parse_duration, plan, share_limits
from grid_core.config import load_file, structure
from grid_core.errors import GridError
from grid_core.types import Boost, GpuReading, NodeMetrics
from tests.conftest import SEED_FILE
from tests.test_config import EVERY_KEY

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
    limits = share_limits(load_file(SEED_FILE))
    assert limits["gpu1"] == {"cpu": 8.0, "gpu": 1.0, "memory": 8.0, "priority": 0.8}
    assert limits["gpu-master"] == {"cpu": 0.0, "gpu": 0.0, "memory": 0.0, "priority": 1.0}  # can_share: false
    free = {"gpu-master": {"cpu": 16.0}, "gpu1": {"cpu": 10.0}}
    assert plan("gpu-master", "cpu", 8, "normal", free, [], limits=limits).source == "gpu1"
    with pytest.raises(GridError):
        plan("gpu-master", "cpu", 9, "normal", free, [], limits=limits)


def test_higher_priority_sources_are_chosen_first() -> None:
    limits = share_limits(load_file(SEED_FILE))
    free = {"gpu-master": {"cpu": 8.0}, "gpu1": {"cpu": 6.0}, "gpu2": {"cpu": 2.0}}
    assert plan("gpu-master", "cpu", 2, "normal", free, [], limits=limits).source == "gpu2"  # 0.9 over 0.8
    assert plan("gpu-master", "cpu", 3, "normal", free, [], limits=limits).source == "gpu1"  # gpu2 has too little
    assert plan("gpu1", "cpu", 1, "normal", free, [], limits=limits).source == "gpu2"  # the master lends nothing


def _every_key_limits() -> dict[str, dict[str, float]]:
    return share_limits(load_file(EVERY_KEY))


def test_a_source_serves_at_most_max_per_source_boosts() -> None:
    limits = _every_key_limits()  # max_offers_per_node: 3
    assert limits["gpu2"]["max_boosts"] == 3
    free = {"gpu-master": {"cpu": 0.0}, "gpu1": {"cpu": 0.5, "memory": 8.0}, "gpu2": {"cpu": 4.0, "memory": 8.0}}
    three = [Boost(f"b{i}", "gpu-master", "gpu2", "cpu", 0.1, "normal", i, None) for i in range(3)]
    assert plan("gpu-master", "cpu", 1, "normal", free, three[:2], limits=limits).source == "gpu2"
    with pytest.raises(GridError, match=r"gpu2 may not lend: it serves 3 boosts already"):
        plan("gpu-master", "cpu", 1, "normal", free, three, limits=limits)
    with pytest.raises(GridError, match=r"gpu2 cannot lend now: it serves 3 boosts already "
                                        r"\(boost.max_per_source = 3\)"):
        plan("gpu-master", "cpu", 1, "normal", free, three, source="gpu2", limits=limits)


def test_the_lend_rules_decide_when_a_node_may_lend() -> None:
    limits = _every_key_limits()  # cpu_percent_max 30, cpu_min_cores 1, gpu_memory_min_mb 1024 ...
    free = {"gpu-master": {"cpu": 0.0, "memory": 8.0}, "gpu1": {"cpu": 4.0, "memory": 8.0},
            "gpu2": {"cpu": 0.5, "memory": 8.0}}
    # gpu2 has under cpu_min_cores free, and gpu1 is busier than cpu_percent_max:
    busy = {"gpu1": NodeMetrics("test", cpu_percent=45.0, memory_percent=10.0)}
    with pytest.raises(GridError, match=r"gpu1 may not lend: 45% CPU in use \(boost.lend.cpu_percent_max = 30\); "
                                        r"gpu2 may not lend: 0.5 CPUs free \(boost.lend.cpu_min_free = 1\)"):
        plan("gpu-master", "cpu", 0.5, "normal", free, [], limits=limits, metrics=busy)
    idle = {"gpu1": NodeMetrics("test", cpu_percent=5.0, memory_percent=10.0)}
    assert plan("gpu-master", "cpu", 2, "normal", free, [], limits=limits, metrics=idle).source == "gpu1"
    full_gpu = GpuReading(0, "g", util_percent=5.0, memory_used_bytes=15 * 2**30, memory_total_bytes=int(15.5 * 2**30))
    gpu_busy = {"gpu1": NodeMetrics("test", cpu_percent=5.0, memory_percent=10.0, gpus=(full_gpu,))}
    with pytest.raises(GridError, match=r"gpu1 cannot lend now: 512 MB of GPU memory free"):
        plan("gpu-master", "cpu", 1, "normal", free, [], source="gpu1", limits=limits, metrics=gpu_busy)
    # What a node's own boosts hold counts as idle, so preemption still works under a min-free rule.
    lent = Boost("x", "gpu-master", "gpu2", "cpu", 1.5, "low", 0, None)
    chosen = plan("gpu-master", "cpu", 1, "high", free, [lent], source="gpu2", limits=limits)
    assert chosen.preempt == (lent,)


def test_boosts_off_is_a_clear_refusal() -> None:
    cfg = structure({"nodes": [{"name": "a"}], "resource_sharing": {"enabled": False}}, "off.yaml")
    with pytest.raises(GridError, match=r"boosts are off in off.yaml \(boost.enabled = false\)"):
        share_limits(cfg)


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
    b = Boost("x", "head", "w1", "cpu", 1, "normal", 0, expires_at=expires_at(0, 10))
    assert expired([b], 9) == [] and expired([b], 10) == [b]
    assert expires_at(5, None) is None and expired([Boost("y", "head", "w1", "cpu", 1, "normal", 0, None)], 1e12) == []
    assert expired([attrs.evolve(b, state="released")], 10) == []  # only active boosts expire


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


@given(st.dictionaries(st.sampled_from(["w1", "w2", "w3"]), st.tuples(st.floats(0, 16), st.floats(0, 1)), min_size=1),
       st.floats(0.1, 16), st.floats(0, 4), st.floats(0, 100))
def test_a_plan_keeps_the_lend_rules_and_prefers_priority(nodes: dict[str, tuple[float, float]], amount: float,
                                                          min_free: float, cpu_max: float) -> None:
    free = {"head": {"cpu": 0.0}, **{n: {"cpu": c} for n, (c, _) in nodes.items()}}
    limits = {n: {"priority": p, "cpu_min_free": min_free, "cpu_percent_max": cpu_max} for n, (_, p) in nodes.items()}
    readings = {n: NodeMetrics("test", cpu_percent=10.0 * i, memory_percent=0.0) for i, n in enumerate(nodes)}
    fit = [n for n, (c, _) in nodes.items() if c >= amount and c >= min_free and readings[n].cpu_percent <= cpu_max]
    try:
        chosen = plan("head", "cpu", amount, "normal", free, [], limits=limits, metrics=readings)
    except GridError:
        assert not fit
    else:
        assert chosen.source in fit
        assert nodes[chosen.source][1] == max(nodes[n][1] for n in fit)
