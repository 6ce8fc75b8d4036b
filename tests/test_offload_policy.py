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
