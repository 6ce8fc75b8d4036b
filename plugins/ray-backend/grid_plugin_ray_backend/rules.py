"""The offload controller's rules: settings, holds, boosts, expiry, hysteresis and events, without Ray.

The controller (controller.py) is a thin Ray adapter around `Rules`: it samples the nodes, calls
these methods under one lock and saves `to_state()`. All the rules ask of the engine goes through
`Mechanics` (reserve capacity on a node, remove a reservation, whether one exists, what each node
has free), and the offload policy is built by a factory passed in, so the rules run and are
tested without a cluster. Every answer is a record of grid_core.types.

Settings: the config in force gives every offload value; `configure` (`grid offload auto`) sets
some at run time, and those win over the file until the file's own value for them changes (a
newer config revision that edits `offload.high.cpu` wins over an earlier `--threshold cpu=...`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import cattrs

from grid_core import boost as lending
from grid_core.config import METRICS, ClusterConfig, structure, unstructure
from grid_core.errors import GridError
from grid_core.offload import banded_low, file_values, policy_settings
from grid_core.record import record
from grid_core.types import (
    Boost,
    BoostState,
    ControllerState,
    ControllerStatus,
    Decision,
    Event,
    HeldWork,
    Hold,
    NodeMetrics,
    NodeState,
    NodeView,
    OffloadDecision,
    OffloadInForce,
)

HOLD_GROUP = "grid-hold-{node}-{n}"
BOOST_GROUP = "grid-boost-{id}-for-{target}"  # the target in the name: `grid run` finds it in the GCS
GROUP_PREFIXES = ("grid-hold-", "grid-boost-")
CONFIG_SOURCE = "the cluster config"
FILE, RUN_TIME = "file", "run time"
MAX_EVENTS = 100  # kept, and saved
STATUS_EVENTS = 20  # in a status answer
MAX_ENDED_BOOSTS = 100  # released, expired and preempted boosts kept for `boost status`
MIN_TOP_UP = 0.5  # a held node's free CPUs or GPUs worth a new reservation
GB = 10**9  # a boost's memory is in GB; the engine's in bytes
# NodeView.available's names for a boost's resources (memory in bytes).
ENGINE_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}


class ControllerError(Exception):
    """A request the controller refuses; the message says why."""


class Mechanics(Protocol):
    """What the rules ask of the engine. Amounts and free resources use NodeView.available's names
    (`CPU`, `GPU`, `memory` in bytes); nodes are grid's node names."""

    def reserve(self, name: str, node: str, amounts: Mapping[str, float], displacing: Sequence[str] = ()) -> bool:
        """Reserve `amounts` on `node` as reservation `name`; True once it holds them. The
        reservations in `displacing` may be removed to make room, but only once the new one has
        been asked for (so it comes first for what they free). False, and no new reservation,
        when it cannot be placed."""
        ...

    def unreserve(self, name: str) -> None:
        """Remove a reservation; nothing happens when it is gone already."""
        ...

    def exists(self, name: str) -> bool:
        """Whether reservation `name` still exists."""
        ...

    def reservations(self) -> list[str]:
        """Every reservation with one of grid's names (GROUP_PREFIXES) that exists now."""
        ...

    def available(self) -> dict[str, dict[str, float]]:
        """Each node's free logical resources, by grid node name."""
        ...


class Policy(Protocol):
    """An offload policy (a grid_offload_policies factory's product)."""

    def decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision: ...


PolicyFactory = Callable[[str, Mapping[str, Any]], Policy]
"""`policies(name, settings)`: the named policy built with `settings`; GridError for an unknown name."""


@record(kw_only=True)
class RulesState:
    """What the rules keep across a restart of the controller; plain data through cattrs."""

    config: Mapping[str, Any]  # the config in force, as grid_core.config.unstructure writes it
    overrides: Mapping[str, Any] = attrs.field(factory=dict)  # run-time values, by OffloadInForce.origin's keys
    holds: Mapping[str, Hold] = attrs.field(factory=dict)
    boosts: tuple[Boost, ...] = ()
    events: tuple[Event, ...] = ()


def config_data(config: ClusterConfig) -> dict[str, Any]:
    """The config as plain data, without what is not read from the file (its path, notes)."""
    data = unstructure(config)
    data.pop("source", None)
    data.pop("notes", None)
    return data


def config_revision(config: ClusterConfig) -> str:
    """A short digest of the config's content: equal configs have equal revisions wherever they were read."""
    text = json.dumps(config_data(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _new_id() -> str:
    return secrets.token_hex(3)


class Rules:
    """The controller's state machine. Not thread-safe: the controller calls it under one lock."""

    def __init__(self, config: ClusterConfig, mechanics: Mechanics, policies: PolicyFactory, *,
                 clock: Callable[[], float] = time.time, new_id: Callable[[], str] = _new_id) -> None:
        self.mechanics, self.policies, self.clock, self.new_id = mechanics, policies, clock, new_id
        self.config = config
        self.revision = config_revision(config)
        self.overrides: dict[str, Any] = {}
        self.holds: dict[str, Hold] = {}
        self.boosts: list[Boost] = []
        self.events: deque[Event] = deque(maxlen=MAX_EVENTS)
        self.nodes: tuple[NodeState, ...] = ()
        self.lowered: dict[str, int] = {}  # node: how many of the cluster's processes the service lowered
        self.work: dict[str, tuple[HeldWork, ...]] = {}  # node: the cluster's work the service found there
        self.readings: dict[str, NodeMetrics] = {}  # each node's last reading: boost.lend's rules read them
        self.decision: Decision | None = None
        self._policy: tuple[str, Policy] | None = None
        self._now: float | None = None  # the interval's time while tick() runs
        self.by = ""  # who asked for the change being made ("": the controller's own doing)
        self.settings = self._settings()

    # ------------------------------------------------------------------ persistence

    def to_state(self) -> RulesState:
        return RulesState(config=config_data(self.config), overrides=dict(self.overrides), holds=dict(self.holds),
                          boosts=tuple(self.boosts), events=tuple(self.events))

    @classmethod
    def from_state(cls, state: RulesState | Mapping[str, Any], mechanics: Mechanics, policies: PolicyFactory, *,
                   clock: Callable[[], float] = time.time, new_id: Callable[[], str] = _new_id) -> Rules:
        """Rules as saved by to_state() (the record or its cattrs unstructure); ConfigError or a
        cattrs error when the data is not such a state."""
        if not isinstance(state, RulesState):
            state = cattrs.structure(state, RulesState)
        rules = cls(structure(dict(state.config), CONFIG_SOURCE), mechanics, policies, clock=clock, new_id=new_id)
        rules.overrides = {k: v for k, v in state.overrides.items() if k in rules._file()}
        rules.holds = dict(state.holds)
        rules.boosts = list(state.boosts)
        rules.events.extend(state.events)
        rules.settings = rules._settings()
        return rules

    # ------------------------------------------------------------------ settings

    def _file(self) -> dict[str, Any]:
        return file_values(self.config.offload)

    def _settings(self) -> OffloadInForce:
        """The values in force: the file's, less what was set at run time; a low mark beside a
        run-time high one keeps the hysteresis band (the one place it is adjusted)."""
        file = self._file()
        values = {**file, **self.overrides}
        origin = {key: RUN_TIME if key in self.overrides else FILE for key in file}
        for m in METRICS:
            if origin[f"high.{m}"] == RUN_TIME and f"low.{m}" not in self.overrides:
                low = banded_low(values[f"high.{m}"], file[f"low.{m}"])
                if low != file[f"low.{m}"]:
                    values[f"low.{m}"], origin[f"low.{m}"] = low, RUN_TIME
        return OffloadInForce(
            enabled=bool(values["enabled"]), policy=str(values["policy"]),
            thresholds={m: float(values[f"high.{m}"]) for m in METRICS},
            low={m: float(values[f"low.{m}"]) for m in METRICS},
            interval_seconds=float(values["interval_seconds"]), cooldown_seconds=float(values["cooldown_seconds"]),
            window=int(values["window"]), origin=origin)

    def _policy_settings(self, settings: OffloadInForce) -> dict[str, Any]:
        return {"enabled": settings.enabled, "policy": settings.policy,
                **policy_settings(settings, self.config.offload.owner_idle_seconds, self.config.offload.evict_after)}

    def policy(self) -> Policy:
        """The configured policy, built again whenever the settings it gets change."""
        given = self._policy_settings(self.settings)
        key = json.dumps(given, sort_keys=True)
        if self._policy is None or self._policy[0] != key:
            self._policy = (key, self.policies(self.settings.policy, given))
        return self._policy[1]

    def configure(self, enabled: bool | None = None, policy: str | None = None,
                  high: Mapping[str, float] | None = None) -> ControllerStatus:
        """Run-time settings (`grid offload auto`): they win over the file until its values change."""
        changes: dict[str, Any] = {}
        for metric, mark in (high or {}).items():
            if metric not in METRICS:
                raise ControllerError(f"unknown metric {metric!r} (use {', '.join(METRICS)})")
            changes[f"high.{metric}"] = float(mark)
        if policy is not None:
            changes["policy"] = policy
        if enabled is not None:
            changes["enabled"] = bool(enabled)
        before = (dict(self.overrides), self.settings)
        self.overrides.update(changes)
        self.settings = self._settings()
        if policy is not None:
            try:
                self.policy()  # an unknown policy, or one that cannot start, changes nothing
            except Exception as exc:
                self.overrides, self.settings = before
                why = str(exc) if isinstance(exc, GridError) else f"policy {policy!r} failed to start: {exc!r}"
                raise ControllerError(why) from None
        if not self.settings.enabled:
            self._release_automatic("automatic offload disabled")
        s = self.settings
        self._event("settings", None, f"auto {'on' if s.enabled else 'off'}, policy {s.policy}, "
                    f"high marks {dict(s.thresholds)}")
        return self.status()

    def adopt(self, config: ClusterConfig) -> bool:
        """Run with a new config revision: nodes added or removed, offload values, sharing limits.
        A run-time value stays unless the new file changes that value. False when nothing changed."""
        revision = config_revision(config)
        if revision == self.revision:
            return False
        old_file, new_file = self._file(), file_values(config.offload)
        old_names, new_names = [n.name for n in self.config.nodes], [n.name for n in config.nodes]
        self.config, self.revision = config, revision
        notes = [f"revision {revision} in force"]
        added = [n for n in new_names if n not in old_names]
        removed = [n for n in old_names if n not in new_names]
        if added:
            notes.append(f"nodes added: {', '.join(added)}")
        if removed:
            notes.append(f"nodes removed: {', '.join(removed)}")
        replaced = [k for k in self.overrides if old_file.get(k) != new_file.get(k)]
        for key in replaced:
            del self.overrides[key]
        if replaced:
            notes.append(f"the file's new {', '.join(replaced)} replace{'s' if len(replaced) == 1 else ''} "
                         "the run-time value")
        changed = [k for k in new_file if old_file.get(k) != new_file[k] and k not in self.overrides]
        if changed:
            notes.append("offload values from the file: " + ", ".join(f"{k} = {new_file[k]}" for k in changed))
        self._event("config", None, "; ".join(notes))
        for node in removed:
            if node in self.holds:
                self._release(node, f"node {node} left the config")
        for boost in [b for b in self.boosts if b.state == "active"]:
            gone = next((n for n in (boost.source, boost.target) if n in removed), None)
            if gone is not None:
                self._end_boost(boost, "released", f"node {gone} left the config")
        self.nodes = tuple(n for n in self.nodes if n.name in new_names)
        self.settings = self._settings()
        head = config.head.name
        for node, hold in list(self.holds.items()):
            if not hold.manual and node != head:
                self._release(node, f"{node} is no longer the head")
        if not self.settings.enabled:
            self._release_automatic("automatic offload disabled in the config")
        return True

    # ------------------------------------------------------------------ holds

    def _known(self, node: str) -> None:
        names = [n.name for n in self.config.nodes]
        if node not in names:
            raise ControllerError(f"no node named {node!r} (nodes: {', '.join(names)})")

    def hold(self, node: str, reason: str) -> ControllerStatus:
        """Hold a node by hand (a drain): its free CPUs and GPUs are reserved, now and as they free up."""
        self._known(node)
        if node in self.holds:
            raise ControllerError(f"node {node} is already held: {self.holds[node].reason}")
        self._hold(node, f"manual: {reason}", manual=True, gpus=True, available=self.mechanics.available())
        return self.status()

    def release(self, node: str) -> ControllerStatus:
        self._known(node)
        if node not in self.holds:
            raise ControllerError(f"node {node} is not held")
        self._release(node, "released by hand")
        return self.status()

    def _hold(self, node: str, reason: str, *, manual: bool, gpus: bool,
              available: dict[str, dict[str, float]]) -> None:
        self.holds[node] = Hold(node, reason, manual, self._time(), gpus)
        self._top_up(node, available)
        reserved = ", ".join(self.holds[node].groups) or "nothing free to reserve yet"
        self._event("hold", node, f"{reason} (reserved: {reserved})")

    def top_up(self, node: str) -> bool:
        """Reserve now what became free on a held node (not at the next interval); whether it did."""
        hold = self.holds.get(node)
        if hold is None:
            return False
        self._top_up(node, self.mechanics.available())
        return len(self.holds[node].groups) > len(hold.groups)

    def _top_up(self, node: str, available: dict[str, dict[str, float]]) -> None:
        """Reserve what became free on a held node; `available` is lowered by what was reserved."""
        hold = self.holds[node]
        free = available.setdefault(node, {})
        amounts = {"CPU": free.get("CPU", 0.0), "GPU": free.get("GPU", 0.0) if hold.gpus else 0.0}
        if all(v < MIN_TOP_UP for v in amounts.values()):
            return
        amounts = {k: v for k, v in amounts.items() if v > 0}
        name = HOLD_GROUP.format(node=node, n=self.new_id())
        if self.mechanics.reserve(name, node, amounts):
            self.holds[node] = attrs.evolve(hold, groups=(*hold.groups, name))
            for key, amount in amounts.items():
                free[key] = free.get(key, 0.0) - amount

    def _release(self, node: str, reason: str) -> None:
        hold = self.holds.pop(node, None)
        if hold is None:
            return
        for group in hold.groups:
            self.mechanics.unreserve(group)
        self._event("release", node, reason)

    def _release_automatic(self, reason: str) -> None:
        head = self.config.head.name
        hold = self.holds.get(head)
        if hold is not None and not hold.manual:
            self._release(head, reason)

    # ------------------------------------------------------------------ boosts

    def boost(self, target: str, resource: str, amount: float, priority: str, duration: float | None = None,
              source: str | None = None, metrics: Mapping[str, NodeMetrics | None] | None = None, *,
              gpu_types: tuple[str, ...] = (), gpu_memory_bytes: int = 0) -> Boost:
        """Lend `amount` of `resource` to `target`; GPUs, with `gpu_types` or `gpu_memory_bytes`,
        only from a node that has enough of that kind. A preemption happens only once the new
        reservation holds; a request that cannot be reserved changes nothing."""
        duration = duration or self.config.boost.default_duration_seconds  # the seed's allocation timeout
        self._known(target)
        if source is not None:
            self._known(source)
        lenders, kind = self._gpu_lenders(target, resource, amount, source, gpu_types, gpu_memory_bytes,
                                          self.readings if metrics is None else metrics)
        available = self.mechanics.available()
        free = {name: {"cpu": res.get("CPU", 0.0), "gpu": res.get("GPU", 0.0), "memory": res.get("memory", 0.0) / GB}
                for name, res in available.items()}
        active = [b for b in self.boosts if b.state == "active"]
        try:
            chosen = lending.plan(target, resource, amount, priority,
                                  free if lenders is None else {n: f for n, f in free.items() if n in lenders},
                                  active, source, lending.share_limits(self.config),
                                  metrics=self.readings if metrics is None else metrics)
        except GridError as exc:
            raise ControllerError(str(exc)) from None
        boost_id = self.new_id()
        while any(b.id == boost_id for b in self.boosts):
            boost_id = self.new_id()
        group = BOOST_GROUP.format(id=boost_id, target=target)
        engine_amount = amount * GB if resource == "memory" else amount
        victims = chosen.preempt
        if not self.mechanics.reserve(group, chosen.source, {ENGINE_NAMES[resource]: engine_amount},
                                      displacing=tuple(v.group for v in victims)):
            for victim in victims:  # made room, and then the new one could still not be placed
                if not self.mechanics.exists(victim.group):
                    self._end_boost(victim, "preempted", f"its reservation went to a {priority} request "
                                    f"from {target} that could then not be placed")
            raise ControllerError(f"could not reserve {amount:g} {resource} on {chosen.source}; nothing was reserved")
        for victim in victims:
            self._end_boost(victim, "preempted", f"preempted by a {priority} request from {target}")
        now = self._time()
        note = "; ".join(filter(None, (kind, f"preempted {', '.join(v.id for v in victims)}" if victims else "")))
        record = Boost(boost_id, target, chosen.source, resource, amount, priority, now,
                       lending.expires_at(now, duration), "active", note, group, self.by)
        self.boosts.append(record)
        self._event("boost", chosen.source, f"boost {boost_id}: {amount:g} {resource} for {target} ({priority})"
                    + (f"; {note}" if note else ""))
        self._prune()
        return record

    def _gpu_lenders(self, target: str, resource: str, amount: float, source: str | None, gpu_types: tuple[str, ...],
                     gpu_memory_bytes: int, metrics: Mapping[str, NodeMetrics | None]) -> tuple[set[str] | None, str]:
        """For a boost of a kind of GPU: the nodes that have enough GPUs of that kind (their readings'
        GPUs, else the config's), and the kind for the boost's note; (None, "") for any other boost."""
        if not (gpu_types or gpu_memory_bytes):
            return None, ""
        from grid_core import gpus
        from grid_core.types import WorkRequest

        if resource != "gpu":
            raise ControllerError("--gpu-type and --gpu-memory go with a boost of gpu")
        request = WorkRequest(gpus=amount, gpu_types=gpu_types, gpu_memory_bytes=gpu_memory_bytes)
        found = {n.name: gpus.read_or_declared(n, metrics.get(n.name))[0]
                 for n in self.config.nodes if n.name != target}
        lenders = {name for name, have in found.items() if gpus.satisfies(have, request)}
        if not lenders:
            raise ControllerError(gpus.shortfall(request, found) or "no node has such GPUs")
        if source is not None and source not in lenders:
            raise ControllerError(f"{source} does not have {gpus.describe(request)}: it has "
                                  f"{gpus.summary(found.get(source, ()))}")
        return lenders, gpus.describe(request)

    def boost_release(self, boost_id: str) -> Boost:
        record = next((b for b in self.boosts if b.id == boost_id), None)
        if record is None:
            raise ControllerError(f"no boost {boost_id!r}")
        if record.state != "active":
            raise ControllerError(f"boost {boost_id} is already {record.state}")
        return self._end_boost(record, "released", "released by hand")

    def _end_boost(self, boost: Boost, state: BoostState, reason: str) -> Boost:
        self.mechanics.unreserve(boost.group)
        ended = attrs.evolve(boost, state=state, note="; ".join(filter(None, (boost.note, reason))))
        self.boosts = [ended if b.id == boost.id else b for b in self.boosts]
        self._event(f"boost-{state}", boost.source, f"boost {boost.id} for {boost.target}: {reason}")
        return ended

    def _prune(self) -> None:
        ended = [b for b in self.boosts if b.state != "active"]
        if len(ended) > MAX_ENDED_BOOSTS:
            dropped = {b.id for b in ended[:len(ended) - MAX_ENDED_BOOSTS]}
            self.boosts = [b for b in self.boosts if b.id not in dropped]

    # ------------------------------------------------------------------ every interval

    def tick(self, readings: Mapping[str, NodeMetrics], now: float | None = None) -> Decision | None:
        """One interval: end expired boosts, ask the policy (when on) and hold or release the head,
        then reserve what became free on held nodes. `readings`: this interval's, by node."""
        now = self.clock() if now is None else now
        self._now = now
        try:
            return self._tick(readings, now)
        finally:
            self._now = None

    def _tick(self, readings: Mapping[str, NodeMetrics], now: float) -> Decision | None:
        if readings:
            self.readings = dict(readings)
        available = self.mechanics.available()
        for boost in lending.expired(self.boosts, now):
            self._end_boost(boost, "expired", "its duration ended")
        views = tuple(NodeView(n.name, "head" if n.is_head else "worker", readings.get(n.name),
                               available.get(n.name, {}), n.name in self.holds, tuple(n.tags))
                      for n in self.config.nodes)
        self.nodes = tuple(self._row(v) for v in views)
        if self.settings.enabled:
            head = self.config.head.name
            auto = self.holds.get(head)
            held = auto is not None and not auto.manual
            try:
                decided = self.policy().decide(views, ControllerState(head, held, now))
            except Exception as exc:  # a policy's bug: said once, and the head is not held on its word
                why = f"policy {self.settings.policy!r} failed: {type(exc).__name__}: {exc}"
                if self.decision is None or self.decision.reason != why:
                    self._event("error", head, why)
                self.decision = Decision(False, why, (), now)
                if held:
                    self._release(head, why)
            else:
                self.decision = Decision(decided.hold, decided.reason, tuple(decided.targets), now,
                                         tuple(decided.pressure), decided.evict_after)
                if decided.hold and auto is None:
                    self._hold(head, decided.reason, manual=False, gpus="gpu" in decided.pressure,
                               available=available)
                elif not decided.hold and held:
                    self._release(head, decided.reason)
        for node in list(self.holds):
            self._top_up(node, available)
        return self.decision

    def evict_due(self, node: str, now: float) -> bool:
        """Whether node's hold has lasted past its evict_after: the policy's for its own hold, the
        config's for one by hand; never when that is None."""
        hold = self.holds.get(node)
        if hold is None:
            return False
        own = not hold.manual and self.decision is not None and self.decision.hold
        after = self.decision.evict_after if own and self.decision else self.config.offload.evict_after
        return after is not None and now - hold.since >= after

    def _row(self, view: NodeView) -> NodeState:
        from grid_core.gpus import read_or_declared

        m = view.metrics
        hold = self.holds.get(view.name)
        lowered = self.lowered.get(view.name, 0)
        models, _ = read_or_declared(self.config.node(view.name), m)
        return NodeState(name=view.name, role=view.role, cpu_percent=m.cpu_percent if m else None,
                         memory_percent=m.memory_percent if m else None, gpu_percent=m.gpu_percent if m else None,
                         available={k: v for k, v in view.available.items() if k in ENGINE_NAMES.values()},
                         hold=hold.reason if hold else None, gpus=m.gpus if m else (),
                         owner_cpu_percent=m.owner_cpu_percent if m else None,
                         cluster_cpu_percent=m.cluster_cpu_percent if m else None,
                         owner_idle_seconds=m.owner_idle_seconds if m else None,
                         step=self._step(view.name, lowered), lowered=lowered, work=self.work.get(view.name, ()),
                         gpu_models=models, owner_gpu_percent=m.owner_gpu_percent if m else None,
                         gpu_claims=m.gpu_claims if m else ())

    def _step(self, node: str, lowered: int) -> str:
        if node not in self.holds:
            return "free"
        if any(w.action == "evicted" for w in self.work.get(node, ())):
            return "evicting"
        return "lowered" if lowered else "held"

    # ------------------------------------------------------------------ start and status

    def recover(self) -> None:
        """After a (re)start, also of the whole cluster with the state from the head's disk: keep
        the holds (a held node reserves again at the next interval); reserve again what an unexpired
        boost held, and end the boosts that expired meanwhile or cannot be placed; remove
        grid-named reservations that nothing here knows (left by a service stopped mid-request)."""
        for node, hold in list(self.holds.items()):
            kept = tuple(g for g in hold.groups if self.mechanics.exists(g))
            if len(kept) < len(hold.groups):
                self._event("hold-lost", node, f"{len(hold.groups) - len(kept)} of its reservations were gone "
                            "on restart; reserving again")
            self.holds[node] = attrs.evolve(hold, groups=kept)
        for boost in lending.expired(self.boosts, self._time()):
            self._end_boost(boost, "expired", "its duration ended while the service was down")
        known = {g for h in self.holds.values() for g in h.groups} | {b.group for b in self.boosts
                                                                      if b.state == "active"}
        strays = [name for name in self.mechanics.reservations() if name not in known]
        for name in strays:  # first: what they held is free for the boosts reserved again below
            self.mechanics.unreserve(name)
        for boost in [b for b in self.boosts if b.state == "active" and not self.mechanics.exists(b.group)]:
            amount = boost.amount * GB if boost.resource == "memory" else boost.amount
            if self.mechanics.reserve(boost.group, boost.source, {ENGINE_NAMES[boost.resource]: amount}):
                self._event("boost-restored", boost.source, f"boost {boost.id} for {boost.target} reserved again")
            else:
                self._end_boost(boost, "released", "its reservation was gone on restart and could not be made again")
        active = sum(1 for b in self.boosts if b.state == "active")
        self._event("controller", None, f"controller started; {len(self.holds)} hold(s) and {active} boost(s) "
                    "recovered" + (f"; removed {len(strays)} reservation(s) nothing knew of" if strays else ""))

    def status(self) -> ControllerStatus:
        events = tuple(self.events)
        return ControllerStatus(
            **attrs.asdict(self.settings, recurse=False), cluster=self.config.name, revision=self.revision,
            held=dict(self.holds), decision=self.decision, events=events[-STATUS_EVENTS:],
            last_event=events[-1] if events else None, nodes=self.nodes, boosts=tuple(self.boosts))

    def note(self, kind: str, node: str | None, reason: str) -> None:
        """An event from outside the rules (e.g. an interval that failed)."""
        self._event(kind, node, reason)

    def _time(self) -> float:
        return self.clock() if self._now is None else self._now

    def _event(self, kind: str, node: str | None, reason: str) -> None:
        self.events.append(Event(self._time(), kind, node, reason, self.by))
