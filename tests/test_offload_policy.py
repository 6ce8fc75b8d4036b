"""The threshold policy's hysteresis and the --threshold parser, with property tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grid_core.errors import GridError
from grid_core.offload import parse_thresholds
from grid_core.plugins import PluginHost
from grid_core.types import ControllerState, NodeMetrics, NodeView
from grid_plugin_threshold_offload.policy import ThresholdPolicy

SETTINGS = {"high": {"cpu": 80.0, "memory": 70.0, "gpu": 90.0}, "low": {"cpu": 60.0, "memory": 55.0, "gpu": 70.0},
            "window": 2, "cooldown_seconds": 10.0}


def nodes(head_cpu: float, worker_cpu: float = 10.0) -> list[NodeView]:
    return [NodeView("head", "head", NodeMetrics("t", head_cpu, 20.0)),
            NodeView("w1", "worker", NodeMetrics("t", worker_cpu, 20.0)),
            NodeView("w2", "worker", NodeMetrics("t", 95.0, 20.0))]


def run(policy: ThresholdPolicy, cpus: list[float], step: float = 5.0) -> list[bool]:
    held, states = False, []
    for i, cpu in enumerate(cpus):
        held = policy.decide(nodes(cpu), ControllerState("head", held, i * step)).hold
        states.append(held)
    return states


def test_one_spike_does_not_hold_a_sustained_load_does() -> None:
    assert run(ThresholdPolicy(SETTINGS), [10, 95, 10, 10]) == [False] * 4
    assert run(ThresholdPolicy(SETTINGS), [10, 95, 95, 95]) == [False, False, True, True]


def test_release_needs_the_low_mark_for_the_cooldown() -> None:
    # held at t=10; 70 is between the marks (stays held); below 60 from t=20 (index 4), released at t=30 (index 6).
    states = run(ThresholdPolicy(SETTINGS), [95, 95, 70, 70, 50, 50, 50, 50])
    assert states == [False, True, True, True, True, True, False, False]


def test_decision_says_why_and_prefers_calm_workers() -> None:
    policy = ThresholdPolicy(SETTINGS)
    policy.decide(nodes(99), ControllerState("head", False, 0))
    decision = policy.decide(nodes(99), ControllerState("head", False, 5))
    assert decision.hold and decision.pressure == ("cpu",) and "cpu 99% >= 80%" in decision.reason
    assert decision.targets == ("w1",)  # w2 is over its own mark


def test_gpu_pressure_is_named() -> None:
    from grid_core.types import GpuReading

    policy = ThresholdPolicy(SETTINGS)
    gpu = (GpuReading(0, "x", 99.0, 1, 2),)
    hot = [NodeView("head", "head", NodeMetrics("t", 10.0, 10.0, gpus=gpu))]
    policy.decide(hot, ControllerState("head", False, 0))
    assert policy.decide(hot, ControllerState("head", False, 1)).pressure == ("gpu",)


def transitions(states: list[bool]) -> tuple[int, int]:
    pairs = list(zip([False, *states], states, strict=False))
    return sum(1 for a, b in pairs if b and not a), sum(1 for a, b in pairs if a and not b)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=60), st.booleans(), st.floats(0.1, 30))
def test_monotone_inputs_hold_and_release_at_most_once(values: list[float], rising: bool, step: float) -> None:
    series = sorted(values, reverse=not rising)
    holds, releases = transitions(run(ThresholdPolicy(SETTINGS), series, step))
    assert holds <= 1 and releases <= 1


@given(st.lists(st.floats(0, 100), min_size=1, max_size=60))
def test_never_holds_below_the_high_mark(values: list[float]) -> None:
    assert not any(run(ThresholdPolicy(SETTINGS), [min(v, 79.9) for v in values]))


def test_the_policy_is_registered_by_its_plugin() -> None:
    registration = PluginHost().get("grid_offload_policies", "threshold")
    assert isinstance(registration.factory(SETTINGS), ThresholdPolicy)


@pytest.mark.parametrize(("args", "expected"), [
    (["70"], {"memory": 70.0}),
    (["cpu=80", "memory=65", "gpu=90"], {"cpu": 80.0, "memory": 65.0, "gpu": 90.0}),
    (["CPU = 50.5"], {"cpu": 50.5}),
])
def test_thresholds_parse(args: list[str], expected: dict[str, float]) -> None:
    assert parse_thresholds(args) == expected


@pytest.mark.parametrize(("args", "message"), [
    (["cpu=180"], "at most 100"), (["gpu=x"], "'x' is not a number"), (["disk=5"], "unknown metric 'disk'"),
    (["cpu=nan"], "percentage"), (["cpu=1", "cpu=2"], "given twice"), (["0"], "above 0"),
])
def test_bad_thresholds_are_clear(args: list[str], message: str) -> None:
    with pytest.raises(GridError, match=message):
        parse_thresholds(args)


@given(st.lists(st.text(max_size=12), max_size=4))
def test_threshold_parser_never_crashes(args: list[str]) -> None:
    try:
        marks = parse_thresholds(args)
    except GridError as exc:
        assert str(exc).startswith("--threshold")
    else:
        assert all(0 < v <= 100 for v in marks.values())


# --------------------------------------------------------------------------- the owner's load and presence


def owner_nodes(total: float, cluster: float, memory: float = 20.0, idle: float | None = None,
                worker_cpu: float = 10.0) -> list[NodeView]:
    """A head whose CPU is `total`, `cluster` of it the cluster's own processes, the rest the owner's."""
    head = NodeMetrics("t", total, memory, cluster_cpu_percent=cluster, owner_cpu_percent=max(0.0, total - cluster),
                       cluster_memory_percent=memory / 2, owner_memory_percent=memory / 2, owner_idle_seconds=idle)
    return [NodeView("head", "head", head), NodeView("w1", "worker", NodeMetrics("t", worker_cpu, 20.0)),
            NodeView("w2", "worker", NodeMetrics("t", 90.0, 20.0, cluster_cpu_percent=85.0, owner_cpu_percent=5.0))]


def drive(policy: ThresholdPolicy, readings: list[list[NodeView]], step: float = 5.0) -> list[bool]:
    held, states = False, []
    for i, views in enumerate(readings):
        held = policy.decide(views, ControllerState("head", held, i * step)).hold
        states.append(held)
    return states


def test_the_clusters_own_flood_alone_never_holds_the_head() -> None:
    assert drive(ThresholdPolicy(SETTINGS), [owner_nodes(100.0, 97.0)] * 6) == [False] * 6


def test_the_owners_burner_holds_the_head() -> None:
    policy = ThresholdPolicy(SETTINGS)
    assert drive(policy, [owner_nodes(100.0, 10.0)] * 3) == [False, True, True]
    decision = policy.decide(owner_nodes(100.0, 10.0), ControllerState("head", True, 20))
    assert decision.pressure == ("cpu",) and "owner cpu 90% >= 80%" in decision.reason


def test_a_held_head_is_released_once_only_the_cluster_is_busy() -> None:
    # The owner's burner holds it; the owner stops while the cluster's work fills the CPUs: released
    # after the cooldown (10 s at 5 s a reading) although the node stays at 100%.
    states = drive(ThresholdPolicy(SETTINGS), [owner_nodes(100.0, 5.0)] * 2 + [owner_nodes(100.0, 98.0)] * 4)
    assert states == [False, True, True, True, False, False]


def test_memory_is_the_total_even_where_the_clusters_share_is_known() -> None:
    policy = ThresholdPolicy(SETTINGS)
    assert drive(policy, [owner_nodes(10.0, 5.0, memory=90.0)] * 2) == [False, True]
    assert policy.decide(owner_nodes(10.0, 5.0, memory=90.0), ControllerState("head", True, 10)).pressure == ("memory",)


def test_targets_are_ranked_by_their_total_load() -> None:
    policy = ThresholdPolicy(SETTINGS)
    # w2 is over its mark on its total (90%), though little of that is its owner's: no target.
    assert policy.decide(owner_nodes(100.0, 10.0), ControllerState("head", False, 0)).targets == ("w1",)


PRESENCE = {**SETTINGS, "owner_idle_seconds": 300.0}


def test_presence_holds_while_the_owner_is_active_whatever_the_load() -> None:
    policy = ThresholdPolicy(PRESENCE)
    decision = policy.decide(owner_nodes(0.0, 0.0, idle=12.0), ControllerState("head", False, 0))
    assert decision.hold and "owner active: idle 12 s < 300 s" in decision.reason
    assert drive(ThresholdPolicy(PRESENCE), [owner_nodes(5.0, 0.0, idle=1.0)] * 3) == [True] * 3


def test_presence_releases_once_idle_long_enough_whatever_the_load_after_the_cooldown() -> None:
    busy_active = owner_nodes(100.0, 5.0, idle=30.0)
    busy_idle = owner_nodes(100.0, 5.0, idle=400.0)  # the owner's own processes are busy, but nobody is there
    states = drive(ThresholdPolicy(PRESENCE), [busy_active, busy_active, busy_idle, busy_idle, busy_idle, busy_idle])
    assert states == [True, True, True, True, False, False]  # idle from t=10, released at t=20 (10 s cooldown)
    policy = ThresholdPolicy(PRESENCE)
    assert not policy.decide(busy_idle, ControllerState("head", False, 0)).hold
    assert not policy.decide(busy_idle, ControllerState("head", False, 5)).hold
    # The owner comes back: held at once.
    assert policy.decide(owner_nodes(0.0, 0.0, idle=0.0), ControllerState("head", False, 10)).hold


def test_presence_unknown_or_off_falls_back_to_the_load() -> None:
    # The setting on, but the source cannot tell presence: the marks decide, as without it.
    assert drive(ThresholdPolicy(PRESENCE), [owner_nodes(100.0, 97.0)] * 3) == [False] * 3
    assert drive(ThresholdPolicy(PRESENCE), [owner_nodes(100.0, 5.0)] * 3) == [False, True, True]
    # The setting off: an active owner alone holds nothing.
    assert drive(ThresholdPolicy(SETTINGS), [owner_nodes(0.0, 0.0, idle=1.0)] * 3) == [False] * 3


def test_presence_keeps_naming_gpu_pressure() -> None:
    from grid_core.types import GpuReading

    gpu = (GpuReading(0, "x", 99.0, 1, 2),)
    hot = [NodeView("head", "head", NodeMetrics("t", 10.0, 10.0, gpus=gpu, owner_idle_seconds=5.0))]
    policy = ThresholdPolicy(PRESENCE)
    policy.decide(hot, ControllerState("head", False, 0))
    assert policy.decide(hot, ControllerState("head", True, 5)).pressure == ("gpu",)
