"""The offload controller: a detached actor on the head that keeps it responsive, and holds boosts.

Every interval it samples each node through grid's metrics sources, asks the configured offload
policy, and acts on Ray itself: holding a node means placement groups pinned to it reserve its
free CPUs (and GPUs under GPU pressure), so Ray's scheduler puts new tasks elsewhere; releasing
removes them. A boost is a placement group on the source node that only the target's jobs use.

Settings, holds, boosts and recent events live in the GCS's key-value store, and placement groups
have names, so a restarted controller (Ray restarts it) carries on where it stopped.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import traceback
from collections import deque
from typing import Any

CONTROLLER = "grid-offload"
STATE_KEY = b"grid-offload-state"
HOLD_GROUP = "grid-hold-{node}-{n}"
BOOST_GROUP = "grid-boost-{id}-for-{target}"  # the target in the name: `grid run` finds it in the GCS
RESERVE_TIMEOUT = 10.0
PIN = 0.01  # of a node's grid-node-<name> resource (1000 in all): room for jobs inside a bundle
RAY_GB = 10**9
WATCHED_SECONDS = 30.0


class ControllerError(Exception):
    """A request the controller refuses; the message says why."""


class OffloadController:
    """Runs on the head; all state changes go through `self.lock` and are saved at once."""

    def __init__(self, config_data: dict[str, Any], namespace: str) -> None:
        from grid_core.config import structure
        from grid_core.offload import policy_settings

        self.namespace = namespace
        saved = self._load()
        self.config = structure(saved.get("config") or config_data, "the cluster config")
        offload = self.config.offload
        self.settings: dict[str, Any] = saved.get("settings") or {
            "enabled": offload.enabled, "policy": offload.policy, **policy_settings(offload)}
        self.holds: dict[str, dict[str, Any]] = saved.get("holds", {})
        self.boosts: list[dict[str, Any]] = saved.get("boosts", [])
        self.events: deque[dict[str, Any]] = deque(saved.get("events", []), maxlen=100)
        self.nodes: list[dict[str, Any]] = []
        self.readings: dict[str, Any] = {}  # each node's last NodeMetrics: boost.lend's rules read them
        self.decision: dict[str, Any] | None = None
        self.lock = threading.RLock()
        self.policy: Any = None
        self.started = time.time()
        self.asked = self.started
        self._cluster: Any = None
        self._recover()
        threading.Thread(target=self._loop, name="grid-offload", daemon=True).start()

    # ------------------------------------------------------------------ persistence

    def _load(self) -> dict[str, Any]:
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(STATE_KEY, namespace=self.namespace)
        return json.loads(raw) if raw else {}

    def _save(self) -> None:
        from ray.experimental.internal_kv import _internal_kv_put

        from grid_core.config import unstructure

        data = {"config": unstructure(self.config), "settings": self.settings, "holds": self.holds,
                "boosts": self.boosts, "events": list(self.events)}
        _internal_kv_put(STATE_KEY, json.dumps(data).encode(), overwrite=True, namespace=self.namespace)

    def _recover(self) -> None:
        """Keep the holds and boosts whose placement groups still exist; a lost one is an event."""
        for hold in self.holds.values():
            hold["groups"] = [g for g in hold.get("groups", []) if self._group(g) is not None]
        for boost in self.boosts:
            if boost["state"] == "active" and self._group(boost["group"]) is None:
                boost["state"] = "released"
                self._event("boost-lost", boost["source"], f"boost {boost['id']}'s reservation was gone on restart")
        self._event("controller", None, f"controller started; {len(self.holds)} hold(s) recovered")
        self._save()

    def _event(self, kind: str, node: str | None, reason: str) -> None:
        self.events.append({"time": time.time(), "kind": kind, "node": node, "reason": reason})

    # ------------------------------------------------------------------ Ray mechanics

    @staticmethod
    def _group(name: str) -> Any:
        from ray.util.placement_group import get_placement_group

        try:
            return get_placement_group(name)
        except ValueError:
            return None

    def _reserve(self, name: str, node: str, amounts: dict[str, float]) -> bool:
        """A placement group pinned to node holding `amounts`; False (and nothing left) if it cannot."""
        from ray.util.placement_group import placement_group, remove_placement_group

        from grid_plugin_ray_backend.layout import node_resource

        bundle = {k: v for k, v in amounts.items() if v > 0}
        if not bundle:
            return False
        bundle[node_resource(node)] = PIN
        group = placement_group([bundle], strategy="STRICT_PACK", name=name, lifetime="detached")
        if group.wait(RESERVE_TIMEOUT):
            return True
        remove_placement_group(group)
        return False

    def _unreserve(self, name: str) -> None:
        from ray.util.placement_group import remove_placement_group

        group = self._group(name)
        if group is not None:
            remove_placement_group(group)

    def _available(self) -> dict[str, dict[str, float]]:
        """Each grid node's available logical resources, by grid name."""
        import ray
        from ray._private.state import available_resources_per_node

        from grid_plugin_ray_backend.layout import NODE_RESOURCE

        prefix = NODE_RESOURCE.format("")
        names = {n["NodeID"]: k[len(prefix):] for n in ray.nodes() if n["Alive"]
                 for k in n["Resources"] if k.startswith(prefix)}
        per_node = available_resources_per_node()
        return {names[i]: {k: float(v) for k, v in res.items()} for i, res in per_node.items() if i in names}

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # one bad interval must not end the controller
                with self.lock:
                    self._event("error", None, traceback.format_exc(limit=3).strip().splitlines()[-1])
            interval = float(self.settings.get("interval_seconds", 5.0))
            time.sleep(max(0.05, interval - (time.monotonic() - started)))

    def _sample(self) -> dict[str, Any]:
        """Each node's reading; connections and metrics sources are kept from one interval to the next."""
        import attrs

        from grid_core import plugins
        from grid_core.cluster import Cluster

        if self._cluster is None:
            head = self.config.head
            # This actor runs on the head: read it directly, the others through their transports.
            nodes = [attrs.evolve(n, transport="local") if n.name == head.name else n for n in self.config.nodes]
            self._cluster = Cluster(attrs.evolve(self.config, nodes=nodes), plugins.host())
        cluster = self._cluster
        return {name: out.value for name, out in cluster.sample(cluster.config.nodes).items() if out.error is None}

    def tick(self) -> None:
        from grid_core.types import ControllerState, NodeView

        now = time.time()
        # Sampling costs the nodes a little every interval: do it while offload is on or while
        # someone is looking (status, watch), not for an idle cluster.
        watched = now - self.asked < WATCHED_SECONDS
        readings = self._sample() if self.settings["enabled"] or watched else {}
        self.readings = readings or self.readings
        available = self._available()
        head = self.config.head.name
        with self.lock:
            for boost in self.boosts:
                if boost["state"] == "active" and boost["expires_at"] and boost["expires_at"] <= now:
                    self._end_boost(boost, "expired", "its duration ended")
            views = [NodeView(n.name, "head" if n.is_head else "worker", readings.get(n.name),
                              available.get(n.name, {}), n.name in self.holds, tuple(n.tags))
                     for n in self.config.nodes]
            self.nodes = [self._row(v) for v in views]
            auto = self.holds.get(head)
            if self.settings["enabled"]:
                policy = self._policy()
                held = auto is not None and not auto.get("manual")
                decision = policy.decide(views, ControllerState(head, held, now))
                self.decision = {"hold": decision.hold, "reason": decision.reason, "targets": list(decision.targets),
                                 "time": now}
                if decision.hold and auto is None:
                    self._hold(head, decision.reason, manual=False, gpus="gpu" in decision.pressure,
                               available=available)
                elif not decision.hold and held:
                    self._release(head, decision.reason)
            for node, hold in self.holds.items():
                self._top_up(node, hold, available)
            self._save()

    def _row(self, view: Any) -> dict[str, Any]:
        import cattrs

        m = view.metrics
        hold = self.holds.get(view.name)
        return {"name": view.name, "role": view.role, "cpu_percent": m.cpu_percent if m else None,
                "memory_percent": m.memory_percent if m else None, "gpu_percent": m.gpu_percent if m else None,
                "available": dict(view.available), "hold": hold["reason"] if hold else None,
                "gpus": cattrs.unstructure(m.gpus) if m else []}

    def _policy(self) -> Any:
        from grid_core import plugins

        key = json.dumps(self.settings, sort_keys=True)
        if self.policy is None or self.policy[0] != key:
            registration = plugins.host().get("grid_offload_policies", self.settings["policy"])
            self.policy = (key, registration.factory(self.settings))
        return self.policy[1]

    def _hold(self, node: str, reason: str, *, manual: bool, gpus: bool, available: dict[str, Any]) -> None:
        groups: list[str] = []
        hold = {"reason": reason, "manual": manual, "since": time.time(), "gpus": gpus, "groups": groups}
        self.holds[node] = hold
        self._top_up(node, hold, available)
        reserved = ", ".join(groups) or "nothing free to reserve yet"
        self._event("hold", node, f"{reason} (reserved: {reserved})")

    def _top_up(self, node: str, hold: dict[str, Any], available: dict[str, dict[str, float]]) -> None:
        """Reserve whatever became free on a held node since the last interval."""
        free = available.get(node, {})
        amounts = {"CPU": free.get("CPU", 0.0), "GPU": free.get("GPU", 0.0) if hold.get("gpus") else 0.0}
        if amounts["CPU"] < 0.5 and amounts["GPU"] < 0.5:
            return
        name = HOLD_GROUP.format(node=node, n=secrets.token_hex(3))
        if self._reserve(name, node, amounts):
            hold["groups"].append(name)

    def _release(self, node: str, reason: str) -> None:
        hold = self.holds.pop(node, None)
        if hold is None:
            return
        for group in hold.get("groups", []):
            self._unreserve(group)
        self._event("release", node, reason)

    def _end_boost(self, boost: dict[str, Any], state: str, reason: str) -> None:
        self._unreserve(boost["group"])
        boost["state"] = state
        self._event(f"boost-{state}", boost["source"], f"boost {boost['id']} for {boost['target']}: {reason}")

    # ------------------------------------------------------------------ requests (one at a time)

    def status(self) -> dict[str, Any]:
        with self.lock:
            self.asked = time.time()
            s = self.settings
            return {"cluster": self.config.name, "enabled": s["enabled"], "policy": s["policy"],
                    "thresholds": s["high"], "low": s["low"], "interval_seconds": s["interval_seconds"],
                    "cooldown_seconds": s["cooldown_seconds"], "window": s["window"],
                    "held": {n: {k: v for k, v in h.items()} for n, h in self.holds.items()},
                    "nodes": list(self.nodes), "boosts": list(self.boosts), "decision": self.decision,
                    "events": list(self.events)[-20:],
                    "last_event": self.events[-1] if self.events else None}

    def configure(self, enabled: bool | None = None, policy: str | None = None,
                  high: dict[str, float] | None = None) -> dict[str, Any]:
        from grid_core import plugins
        from grid_core.errors import GridError

        with self.lock:
            if policy is not None:
                try:
                    plugins.host().get("grid_offload_policies", policy)
                except GridError:
                    plugins.configure()  # a policy pip-installed since this process loaded its plugins
                    try:
                        plugins.host().get("grid_offload_policies", policy)
                    except GridError as exc:
                        raise ControllerError(str(exc)) from None
                self.settings["policy"] = policy
            for metric, mark in (high or {}).items():
                self.settings["high"][metric] = mark
                # Keep the hysteresis band: a low mark above the new high one would flap.
                self.settings["low"][metric] = min(self.settings["low"][metric], mark * 0.75)
            if enabled is not None:
                self.settings["enabled"] = enabled
                head = self.config.head.name
                hold = self.holds.get(head)
                if not enabled and hold and not hold.get("manual"):
                    self._release(head, "automatic offload disabled")
            self._event("settings", None, f"auto {'on' if self.settings['enabled'] else 'off'}, policy "
                        f"{self.settings['policy']}, high marks {self.settings['high']}")
            self._save()
        return self.status()

    def hold(self, node: str, reason: str) -> dict[str, Any]:
        with self.lock:
            self._known(node)
            if node in self.holds:
                raise ControllerError(f"node {node} is already held: {self.holds[node]['reason']}")
            self._hold(node, f"manual: {reason}", manual=True, gpus=True, available=self._available())
            self._save()
        return self.status()

    def release(self, node: str) -> dict[str, Any]:
        with self.lock:
            self._known(node)
            if node not in self.holds:
                raise ControllerError(f"node {node} is not held")
            self._release(node, "released by hand")
            self._save()
        return self.status()

    def _known(self, node: str) -> None:
        names = [n.name for n in self.config.nodes]
        if node not in names:
            raise ControllerError(f"no node named {node!r} (nodes: {', '.join(names)})")

    def boost(self, target: str, resource: str, amount: float, priority: str, duration: float | None,
              source: str | None) -> dict[str, Any]:
        from grid_core import boost as rules
        from grid_core.errors import GridError

        duration = duration or self.config.boost.default_duration_seconds  # the seed's allocation timeout
        with self.lock:
            self._known(target)
            if source is not None:
                self._known(source)
            available = self._available()
            free = {name: {"cpu": res.get("CPU", 0.0), "gpu": res.get("GPU", 0.0),
                           "memory": res.get("memory", 0.0) / RAY_GB} for name, res in available.items()}
            active = [rules.Boost(**{k: v for k, v in b.items() if k != "group"}) for b in self.boosts
                      if b["state"] == "active"]
            try:
                chosen = rules.plan(target, resource, amount, priority, free, active, source,
                                    rules.share_limits(self.config), metrics=self.readings)
            except GridError as exc:
                raise ControllerError(str(exc)) from None
            preempted = []
            for victim in chosen.preempt:
                record = next(b for b in self.boosts if b["id"] == victim.id)
                self._end_boost(record, "preempted", f"preempted by a {priority} request from {target}")
                preempted.append(victim.id)
            boost_id = secrets.token_hex(3)
            group = BOOST_GROUP.format(id=boost_id, target=target)
            ray_amount = amount * RAY_GB if resource == "memory" else amount
            if not self._reserve(group, chosen.source, {rules.RAY_NAMES[resource]: ray_amount}):
                self._save()
                raise ControllerError(f"could not reserve {amount:g} {resource} on {chosen.source} within "
                                      f"{RESERVE_TIMEOUT:.0f} s; nothing was reserved")
            now = time.time()
            record = {"id": boost_id, "target": target, "source": chosen.source, "resource": resource,
                      "amount": amount, "priority": priority, "created": now,
                      "expires_at": now + duration if duration else None, "state": "active",
                      "note": f"preempted {', '.join(preempted)}" if preempted else "", "group": group}
            self.boosts.append(record)
            self._event("boost", chosen.source, f"boost {boost_id}: {amount:g} {resource} for {target} "
                        f"({priority}){'; ' + record['note'] if preempted else ''}")
            self._save()
            return dict(record)

    def boost_release(self, boost_id: str) -> dict[str, Any]:
        with self.lock:
            record = next((b for b in self.boosts if b["id"] == boost_id), None)
            if record is None:
                raise ControllerError(f"no boost {boost_id!r}")
            if record["state"] != "active":
                raise ControllerError(f"boost {boost_id} is already {record['state']}")
            self._end_boost(record, "released", "released by hand")
            self._save()
            return dict(record)

    def boosts_for(self, target: str) -> list[dict[str, Any]]:
        """Active boosts a job from `target` may use, highest priority first."""
        from grid_core.boost import PRIORITIES

        with self.lock:
            mine = [dict(b) for b in self.boosts if b["state"] == "active" and b["target"] == target]
        return sorted(mine, key=lambda b: -PRIORITIES[b["priority"]])
