"""The offload controller's rules without Ray: a fake engine (Mechanics) and the real threshold policy."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cattrs
import pytest

from grid_core.config import ClusterConfig, structure
from grid_core.errors import GridError
from grid_core.types import ControllerState, ControllerStatus, NodeMetrics, NodeView, OffloadDecision
from grid_plugin_ray_backend.rules import GB, ControllerError, Policy, Rules, RulesState
from grid_plugin_threshold_offload.policy import ThresholdPolicy

NODES = [{"name": "head", "role": "head"}, {"name": "w1"}, {"name": "w2"}]
OFFLOAD = {"interval_seconds": 5.0, "cooldown_seconds": 10.0, "window": 2}


def config(nodes: list[dict[str, Any]] = NODES, **offload: Any) -> ClusterConfig:
    return structure({"name": "lab", "nodes": nodes, "offload": {**OFFLOAD, **offload}}, "test.toml")


class FakeEngine:
    """Mechanics over fixed capacities: a reservation holds its amounts until removed."""

    def __init__(self, capacity: Mapping[str, Mapping[str, float]]) -> None:
        self.capacity = {n: dict(c) for n, c in capacity.items()}
        self.groups: dict[str, tuple[str, dict[str, float]]] = {}
        self.log: list[tuple[str, str]] = []
        self.refuse = False  # every reservation fails, as when the engine cannot place it in time

    def reserve(self, name: str, node: str, amounts: Mapping[str, float], displacing: Sequence[str] = ()) -> bool:
        self.log.append(("reserve", name))
        assert all(d in self.groups for d in displacing), "the displaced are still there when the new is asked"
        free = self.available()[node]
        room = {k: free.get(k, 0.0) + sum(self.groups[d][1].get(k, 0.0) for d in displacing) for k in amounts}
        if self.refuse or any(amounts[k] > room[k] + 1e-9 for k in amounts):
            return False
        self.groups[name] = (node, dict(amounts))
        return True

    def unreserve(self, name: str) -> None:
        self.log.append(("unreserve", name))
        self.groups.pop(name, None)

    def exists(self, name: str) -> bool:
        return name in self.groups

    def reservations(self) -> list[str]:
        return list(self.groups)

    def available(self) -> dict[str, dict[str, float]]:
        free = {n: dict(c) for n, c in self.capacity.items()}
        for node, amounts in self.groups.values():
            for k, v in amounts.items():
                free[node][k] = free[node].get(k, 0.0) - v
        return free

    def held_on(self, node: str) -> dict[str, float]:
        total: dict[str, float] = {}
        for where, amounts in self.groups.values():
            if where == node:
                for k, v in amounts.items():
                    total[k] = total.get(k, 0.0) + v
        return total


def policies(name: str, settings: Mapping[str, Any]) -> Policy:
    if name != "threshold":
        raise GridError(f"no offload policy named {name!r}")
    return ThresholdPolicy(settings)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(cfg: ClusterConfig | None = None, engine: FakeEngine | None = None) -> tuple[Rules, FakeEngine, Clock]:
    engine = engine or FakeEngine({"head": {"CPU": 4.0, "GPU": 1.0}, "w1": {"CPU": 4.0, "memory": 8 * GB},
                                   "w2": {"CPU": 2.0}})
    clock = Clock()
    ids = iter(f"id{i}" for i in range(1000))
    return Rules(cfg or config(), engine, policies, clock=clock, new_id=lambda: next(ids)), engine, clock


def reading(cpu: float, memory: float = 10.0) -> NodeMetrics:
    return NodeMetrics("test", cpu_percent=cpu, memory_percent=memory)


def kinds(rules: Rules, node: str | None = None) -> list[str]:
    return [e.kind for e in rules.events if node is None or e.node == node]


# --------------------------------------------------------------------------- holds and hysteresis


def test_the_threshold_policy_holds_once_and_releases_after_the_cooldown() -> None:
    rules, engine, clock = make()
    rules.configure(enabled=True, high={"cpu": 80.0})
    held = []
    for cpu in [95, 95, 70, 70, 50, 50, 50, 50]:  # between the marks changes nothing; release after 10 s calm
        clock.now += 5
        rules.tick({"head": reading(cpu), "w1": reading(10)}, clock.now)
        held.append("head" in rules.holds)
    assert held == [False, True, True, True, True, True, False, False]
    assert kinds(rules, "head") == ["hold", "release"]
    assert "below the low-water marks for 10 s" in next(e.reason for e in rules.events if e.kind == "release")
    assert engine.groups == {}  # the reservations went with the hold


def test_a_hold_reserves_what_is_free_and_tops_up_what_frees_later() -> None:
    rules, engine, _ = make()
    engine.capacity["w1"]["CPU"] = 2.0
    status = rules.hold("w1", "disk swap")
    hold = status.held["w1"]
    assert hold.manual and hold.reason == "manual: disk swap" and len(hold.groups) == 1
    assert engine.held_on("w1") == {"CPU": 2.0}
    engine.capacity["w1"]["CPU"] = 3.0  # a job there ended
    rules.tick({})
    assert len(rules.holds["w1"].groups) == 2 and engine.held_on("w1") == {"CPU": 3.0}
    rules.tick({})  # nothing new free: no new reservation, and none asked for
    assert len(rules.holds["w1"].groups) == 2 and engine.log.count(("reserve", "grid-hold-w1-id2")) == 0
    with pytest.raises(ControllerError, match="already held: manual: disk swap"):
        rules.hold("w1", "again")
    rules.release("w1")
    assert engine.groups == {} and "w1" not in rules.holds
    with pytest.raises(ControllerError, match="not held"):
        rules.release("w1")
    with pytest.raises(ControllerError, match=r"no node named 'nope' \(nodes: head, w1, w2\)"):
        rules.hold("nope", "x")


class Scripted:
    """A policy that answers from a script, one decision an interval."""

    def __init__(self, decisions: list[OffloadDecision]) -> None:
        self.decisions = decisions
        self.seen: list[ControllerState] = []

    def decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision:
        self.seen.append(state)
        return self.decisions.pop(0)


def test_gpu_pressure_reserves_the_head_s_gpus_and_disabling_frees_an_automatic_hold() -> None:
    script = Scripted([OffloadDecision(True, "gpu hot", ("gpu",), ("w1",)), OffloadDecision(True, "still hot")])
    rules, engine, _ = make()
    rules.policies = lambda name, settings: script
    rules.configure(enabled=True)
    decision = rules.tick({})
    assert decision is not None and decision.hold and decision.targets == ("w1",) and decision.pressure == ("gpu",)
    assert engine.held_on("head") == {"CPU": 4.0, "GPU": 1.0}
    rules.tick({})
    assert script.seen[-1].held is True  # the policy is told the head is held (automatically)
    rules.configure(enabled=False)
    assert "head" not in rules.holds and engine.groups == {}
    assert rules.events[-2].kind == "release" and rules.events[-2].reason == "automatic offload disabled"


def test_a_manual_hold_of_the_head_is_not_released_by_the_policy() -> None:
    rules, engine, _ = make()
    script = Scripted([OffloadDecision(False, "calm")])
    rules.policies = lambda name, settings: script
    rules.hold("head", "maintenance")
    rules.configure(enabled=True)
    rules.tick({})
    assert rules.holds["head"].manual and engine.held_on("head") and script.seen[0].held is False


# --------------------------------------------------------------------------- settings


def test_run_time_settings_win_over_the_file_until_the_file_changes_them() -> None:
    rules, _, _ = make()
    status = rules.configure(enabled=True, high={"cpu": 60.0})
    assert status.thresholds["cpu"] == 60.0 and status.low["cpu"] == 45.0  # the band kept below a new high mark
    assert status.origin["high.cpu"] == "run time" and status.origin["low.cpu"] == "run time"
    assert status.origin["enabled"] == "run time" and status.origin["high.memory"] == "file"
    # A new revision that leaves those values alone keeps the run-time ones ...
    assert rules.adopt(config(window=3))
    assert rules.settings.thresholds["cpu"] == 60.0 and rules.settings.enabled and rules.settings.window == 3
    assert rules.settings.origin["window"] == "file"
    # ... one that changes a value in the file wins for that value only.
    assert rules.adopt(config(window=3, high={"cpu": 85.0}))
    assert rules.settings.thresholds["cpu"] == 85.0 and rules.settings.low["cpu"] == 60.0
    assert rules.settings.origin["high.cpu"] == "file" and rules.settings.enabled
    assert "replace" in rules.events[-1].reason and rules.events[-1].kind == "config"
    assert not rules.adopt(config(window=3, high={"cpu": 85.0}))  # the same revision again: nothing to do


def test_an_unknown_policy_changes_nothing() -> None:
    rules, _, _ = make()
    before = rules.to_state()
    with pytest.raises(ControllerError, match="no offload policy named 'nope'"):
        rules.configure(enabled=True, policy="nope", high={"cpu": 50.0})
    assert rules.to_state() == before and rules.settings.policy == "threshold" and not rules.settings.enabled


def test_the_policy_is_built_again_when_its_settings_change() -> None:
    built: list[Mapping[str, Any]] = []

    def counting(name: str, settings: Mapping[str, Any]) -> Policy:
        built.append(settings)
        return ThresholdPolicy(settings)

    rules, _, _ = make()
    rules.policies = counting
    rules.configure(enabled=True)
    rules.tick({})
    rules.tick({})
    rules.configure(high={"memory": 50.0})
    rules.tick({})
    assert len(built) == 2 and built[-1]["high"]["memory"] == 50.0 and built[-1]["low"]["memory"] == 37.5


# --------------------------------------------------------------------------- config revisions


def test_a_node_added_to_the_config_can_be_held_and_a_removed_one_lets_go() -> None:
    rules, engine, _ = make()
    engine.capacity["w3"] = {"CPU": 8.0}
    with pytest.raises(ControllerError, match="no node named 'w3'"):
        rules.hold("w3", "x")
    assert rules.adopt(config([*NODES, {"name": "w3"}]))
    revision = rules.revision
    assert rules.hold("w3", "new disk").revision == revision and engine.held_on("w3") == {"CPU": 8.0}
    made = rules.boost("head", "cpu", 1.0, "normal", source="w1")
    assert rules.adopt(config([NODES[0], NODES[2], {"name": "w3"}]))  # w1 removed
    ended = next(b for b in rules.boosts if b.id == made.id)
    assert ended.state == "released" and "node w1 left the config" in ended.note
    assert not engine.exists(made.group) and "w3" in rules.holds
    assert "nodes removed: w1" in next(e.reason for e in rules.events if e.kind == "config" and "w1" in e.reason)


def test_sharing_limits_follow_the_config_in_force() -> None:
    rules, _, _ = make()
    rules.boost("head", "cpu", 3.0, "normal", source="w1")
    limited: list[dict[str, Any]] = [NODES[0], {"name": "w1", "resource_sharing": {"can_share": False}}, NODES[2]]
    rules.adopt(config(limited))
    with pytest.raises(ControllerError, match="no node can lend"):
        rules.boost("head", "cpu", 1.0, "normal", source="w1")


# --------------------------------------------------------------------------- boosts


def test_boosts_expire_in_one_place() -> None:
    rules, engine, clock = make()
    made = rules.boost("head", "memory", 2.0, "normal", duration=30.0)
    assert made.source == "w1" and made.expires_at == clock.now + 30.0
    assert engine.held_on("w1") == {"memory": 2 * GB}
    rules.tick({}, now=clock.now + 29)
    assert rules.boosts[0].state == "active"
    rules.tick({}, now=clock.now + 30)
    assert rules.boosts[0].state == "expired" and engine.groups == {}
    assert rules.events[-1].kind == "boost-expired" and rules.events[-1].time == clock.now + 30


def test_the_config_s_default_duration_applies() -> None:
    cfg = structure({"name": "lab", "nodes": NODES, "boost": {"default_duration_seconds": 60}}, "t.toml")
    rules, _, clock = make(cfg)
    assert rules.boost("head", "cpu", 1.0, "normal").expires_at == clock.now + 60


def test_a_preemption_happens_only_once_the_new_reservation_holds() -> None:
    rules, engine, _ = make()
    low = rules.boost("head", "cpu", 3.0, "low", source="w1")
    made = rules.boost("head", "cpu", 3.0, "high", source="w1")  # 1 free: the low one must go
    assert made.note == f"preempted {low.id}"
    assert engine.log.index(("reserve", made.group)) < engine.log.index(("unreserve", low.group))
    assert next(b for b in rules.boosts if b.id == low.id).state == "preempted"
    assert engine.held_on("w1") == {"CPU": 3.0}
    with pytest.raises(ControllerError, match="already preempted"):
        rules.boost_release(low.id)


def test_a_boost_that_cannot_be_reserved_changes_nothing() -> None:
    rules, engine, _ = make()
    low = rules.boost("head", "cpu", 3.0, "low", source="w1")
    before, log = rules.to_state(), len(engine.log)
    engine.refuse = True
    with pytest.raises(ControllerError, match="could not reserve 3 cpu on w1; nothing was reserved"):
        rules.boost("head", "cpu", 3.0, "high", source="w1")
    assert rules.to_state() == before and engine.exists(low.group)
    assert [step for step in engine.log[log:] if step[0] == "unreserve"] == []
    with pytest.raises(ControllerError, match="no node can lend 64 cpu"):
        rules.boost("head", "cpu", 64.0, "high")
    assert rules.to_state() == before


def test_a_victim_whose_room_was_taken_by_a_failed_request_is_recorded_as_preempted() -> None:
    rules, engine, _ = make()
    low = rules.boost("head", "cpu", 3.0, "low", source="w1")

    def take_room_then_fail(name: str, node: str, amounts: Mapping[str, float], displacing: Sequence[str] = ()) -> bool:
        for victim in displacing:
            engine.unreserve(victim)
        return False

    engine.reserve = take_room_then_fail  # type: ignore[method-assign]
    with pytest.raises(ControllerError):
        rules.boost("head", "cpu", 3.0, "high", source="w1")
    assert next(b for b in rules.boosts if b.id == low.id).state == "preempted"
    assert rules.events[-1].kind == "boost-preempted"


def test_a_change_carries_who_asked_and_the_policy_s_own_carry_no_one() -> None:
    rules, _, _ = make()
    rules.by = "ann"
    made = rules.boost("head", "cpu", 1.0, "normal")
    assert made.user == "ann" and (rules.events[-1].kind, rules.events[-1].user) == ("boost", "ann")
    rules.by = ""
    rules.boost_release(made.id)
    assert (rules.events[-1].kind, rules.events[-1].user) == ("boost-released", "")
    assert cattrs.structure(cattrs.unstructure(rules.to_state()), RulesState).boosts[0].user == "ann"


def test_releasing_a_boost_twice_says_it_is_already_released() -> None:
    rules, engine, _ = make()
    made = rules.boost("head", "cpu", 1.0, "normal")
    assert rules.boost_release(made.id).state == "released" and engine.groups == {}
    with pytest.raises(ControllerError, match=f"boost {made.id} is already released"):
        rules.boost_release(made.id)
    with pytest.raises(ControllerError, match="no boost 'zz'"):
        rules.boost_release("zz")


# --------------------------------------------------------------------------- restarts


def test_recover_keeps_what_exists_reserves_lost_boosts_again_and_says_what_was_lost() -> None:
    rules, engine, clock = make()
    rules.hold("w2", "x")
    kept = rules.boost("head", "cpu", 1.0, "normal", source="w1")
    lost = rules.boost("head", "cpu", 1.0, "normal", source="w1")
    unplaceable = rules.boost("head", "memory", 1.0, "normal", source="w1")
    ends = rules.boost("head", "cpu", 1.0, "normal", source="w1", duration=60.0)
    for gone in (rules.holds["w2"].groups[0], lost.group, unplaceable.group, ends.group):
        engine.groups.pop(gone)  # as after a restart of the whole cluster: the state came from the head's disk
    engine.groups["grid-boost-stray-for-head"] = ("w1", {"CPU": 1.0})  # left by a service that stopped mid-way
    engine.capacity["w1"]["memory"] = 0.0  # the memory boost's room is no longer there
    clock.now += 61.0
    rules.recover()
    assert rules.holds["w2"].groups == () and "hold-lost" in kinds(rules, "w2")
    states = {b.id: b.state for b in rules.boosts}
    assert states == {kept.id: "active", lost.id: "active", unplaceable.id: "released", ends.id: "expired"}
    assert engine.exists(kept.group) and engine.exists(lost.group) and not engine.exists("grid-boost-stray-for-head")
    assert "boost-restored" in kinds(rules, "w1")
    assert "2 boost(s) recovered" in rules.events[-1].reason and "removed 1 reservation" in rules.events[-1].reason
    rules.tick({})  # the held node reserves again
    assert len(rules.holds["w2"].groups) == 1


def test_state_round_trips_through_json() -> None:
    rules, engine, clock = make()
    rules.configure(enabled=True, high={"cpu": 70.0})
    rules.hold("w2", "disk")
    rules.boost("head", "cpu", 1.0, "high", duration=60.0, source="w1")
    rules.boost_release(rules.boost("head", "memory", 1.0, "low").id)
    wire = json.loads(json.dumps(cattrs.unstructure(rules.to_state())))
    again = Rules.from_state(wire, engine, policies, clock=clock)
    assert again.to_state() == rules.to_state()
    assert again.status() == rules.status()
    assert isinstance(cattrs.structure(wire, RulesState), RulesState)


def test_status_is_the_record_the_cli_reads() -> None:
    rules, _, _ = make()
    rules.hold("w1", "disk")
    rules.tick({"head": reading(20.0)})
    status = rules.status()
    wire = json.loads(json.dumps(cattrs.unstructure(status)))
    assert {"enabled", "thresholds", "low", "held", "events", "last_event", "nodes", "boosts", "revision",
            "origin"} <= set(wire)
    assert wire["held"]["w1"]["manual"] is True and wire["held"]["w1"]["groups"]
    assert wire["last_event"]["kind"] == "hold" and wire["last_event"]["node"] == "w1"
    assert cattrs.structure(wire, ControllerStatus) == status
    head = next(n for n in status.nodes if n.name == "head")
    assert head.cpu_percent == 20.0 and head.hold is None and head.role == "head"
    assert next(n for n in status.nodes if n.name == "w1").hold == "manual: disk"


def test_events_are_bounded() -> None:
    rules, _, _ = make()
    for _ in range(150):
        rules.hold("w1", "x")
        rules.release("w1")
    assert len(rules.events) == 100 and len(rules.status().events) == 20
    assert attrs.asdict(rules.status().last_event or rules.events[0])["kind"] == "release"


# --------------------------------------------------------------------------- eviction


def test_eviction_is_due_once_the_hold_lasts_evict_after_and_never_without_it() -> None:
    rules, _, clock = make(config(evict_after=30.0))
    rules.configure(enabled=True, high={"cpu": 80.0})
    for _ in range(2):
        clock.now += 5
        rules.tick({"head": reading(95), "w1": reading(10)}, clock.now)
    assert "head" in rules.holds and rules.decision is not None and rules.decision.evict_after == 30.0
    assert not rules.evict_due("head", clock.now + 29) and rules.evict_due("head", clock.now + 30)
    assert not rules.evict_due("w1", clock.now + 100)  # not held
    manual, _, clock = make(config())  # evict_after unset: lowered, never stopped
    manual.hold("head", "owner busy")
    assert not manual.evict_due("head", clock.now + 10**6)
    manual, _, clock = make(config(evict_after=0.0))  # a hold by hand follows the config
    manual.hold("head", "owner busy")
    assert manual.evict_due("head", clock.now)


def test_the_held_head_s_step_and_work_are_in_its_row() -> None:
    from grid_core.types import HeldWork

    rules, _, clock = make()
    rules.hold("head", "owner busy")
    rules.lowered = {"head": 3}
    kept = HeldWork(pid=7, name="Spinner", kind="actor", action="kept", reason="an actor")
    rules.work = {"head": (kept,)}
    rules.tick({}, clock.now)
    head = next(n for n in rules.status().nodes if n.name == "head")
    assert (head.step, head.lowered, head.work) == ("lowered", 3, (kept,))
    rules.work = {"head": (kept, attrs.evolve(kept, pid=8, name="train", kind="task", action="evicted"))}
    rules.tick({}, clock.now)
    assert next(n for n in rules.status().nodes if n.name == "head").step == "evicting"
    row = cattrs.unstructure(rules.status())["nodes"][0]
    assert row["work"][0] == {"pid": 7, "name": "Spinner", "kind": "actor", "action": "kept", "reason": "an actor"}


class HoldsThenRaises:
    """A policy that holds the head once, then raises inside every later decide."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.calls = 0

    def decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision:
        self.calls += 1
        if self.calls == 1:
            return OffloadDecision(True, "held by a buggy policy", ("cpu",))
        raise ZeroDivisionError("policy bug")


def test_a_policy_that_raises_in_decide_is_an_error_event_and_the_head_is_released() -> None:
    buggy = HoldsThenRaises({})
    rules = Rules(config(), FakeEngine({"head": {"CPU": 4.0}, "w1": {"CPU": 4.0}, "w2": {"CPU": 2.0}}),
                  lambda name, settings: buggy if name == "buggy" else policies(name, settings), clock=Clock())
    rules.configure(enabled=True, policy="buggy")
    rules.tick({"head": reading(95)})
    assert "head" in rules.holds
    for _ in range(3):
        rules.tick({"head": reading(95)})
    assert "head" not in rules.holds and buggy.calls == 4
    errors = [e for e in rules.events if e.kind == "error"]
    assert len(errors) == 1 and errors[0].node == "head"  # said once, not every interval
    assert errors[0].reason == "policy 'buggy' failed: ZeroDivisionError: policy bug"
    assert rules.decision is not None and not rules.decision.hold and "policy bug" in rules.decision.reason
    assert kinds(rules, "head") == ["hold", "error", "release"]
