"""The offload controller: it keeps the head responsive, and holds boosts (inside the grid service).

A thin Ray adapter around rules.py, which holds the settings, holds, boosts, expiry, hysteresis
and events. Every interval the actor samples each node through grid's metrics sources and hands
the readings to the rules; `RayMechanics` does what the rules ask of Ray: a hold or a boost is a
placement group pinned to its node (Ray's scheduler then puts new tasks elsewhere, and a boost's
group is used only by its target's jobs), and the rules' state lives in the GCS's key-value store,
so a restarted service (Ray restarts it) carries on where it stopped.

The service hands it each request's config (`adopt`); a new revision is adopted at once.
Answers are the cattrs unstructure of the rules' records (grid_core.types).
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from grid_core.priority import Lowering
from grid_plugin_ray_backend.head_work import Eviction
from grid_plugin_ray_backend.rules import GROUP_PREFIXES, ControllerError, Policy, Rules

__all__ = ["ControllerError", "OffloadController", "RayMechanics"]

STATE_KEY = b"grid-offload-state"
RESERVE_TIMEOUT = 10.0
DISPLACE_AFTER = 1.0  # seconds a displacing reservation waits before the displaced ones are removed
PIN = 0.01  # of a node's grid-node-<name> resource (1000 in all): room for jobs inside a bundle
WATCHED_SECONDS = 30.0
REPORT_FRESH = 3.0  # intervals an agent's reading stays current
IDLE_REPORT_SECONDS = 5.0  # how often agents check in while nobody needs readings


class RayMechanics:
    """The rules' Mechanics on Ray: placement groups, available resources, the key-value store."""

    def __init__(self, namespace: str, state_file: str | None = None) -> None:
        self.namespace, self.state_file = namespace, state_file
        self.saved = b""
        self.before_unreserve: Callable[[str], None] | None = None  # the service ends the jobs inside first

    # ------------------------------------------------------------------ persistence

    def load(self) -> dict[str, Any] | None:
        """The state in the GCS (a restarted service), else on the head's disk (a restarted cluster)."""
        from ray.experimental.internal_kv import _internal_kv_get

        raw = _internal_kv_get(STATE_KEY, namespace=self.namespace)
        if not raw and self.state_file and os.path.exists(self.state_file):
            with open(self.state_file, "rb") as f:
                raw = f.read()
        return json.loads(raw) if raw else None

    def save(self, state: Any) -> None:
        """Into the GCS and onto the head's disk, when it changed."""
        import cattrs
        from ray.experimental.internal_kv import _internal_kv_put

        data = json.dumps(cattrs.unstructure(state)).encode()
        if data == self.saved:
            return
        _internal_kv_put(STATE_KEY, data, overwrite=True, namespace=self.namespace)
        if self.state_file:
            from pathlib import Path

            from grid_core.state import write_atomic

            write_atomic(Path(self.state_file), data.decode())
        self.saved = data

    # ------------------------------------------------------------------ Mechanics

    @staticmethod
    def _group(name: str) -> Any:
        from ray.util.placement_group import get_placement_group

        try:
            return get_placement_group(name)
        except ValueError:
            return None

    def reserve(self, name: str, node: str, amounts: Mapping[str, float], displacing: Sequence[str] = ()) -> bool:
        """A placement group pinned to node holding `amounts`; False (and nothing left) if it cannot.
        With `displacing`, the new group is asked for first, and the displaced groups are removed
        only when it is not placed at once, so it comes first for what they free."""
        from ray.util.placement_group import placement_group, remove_placement_group

        from grid_plugin_ray_backend.layout import node_resource

        bundle = {k: float(v) for k, v in amounts.items() if v > 0}
        if not bundle:
            return False
        bundle[node_resource(node)] = PIN
        group = placement_group([bundle], strategy="STRICT_PACK", name=name, lifetime="detached")
        if displacing and not group.wait(DISPLACE_AFTER):
            for victim in displacing:
                self.unreserve(victim)
        if group.wait(RESERVE_TIMEOUT):
            return True
        remove_placement_group(group)
        return False

    def unreserve(self, name: str) -> None:
        from ray.util.placement_group import remove_placement_group

        group = self._group(name)
        if group is not None:
            if self.before_unreserve is not None:
                self.before_unreserve(name)
            remove_placement_group(group)

    def exists(self, name: str) -> bool:
        return self._group(name) is not None

    def reservations(self) -> list[str]:
        from ray.util import placement_group_table

        try:
            table = placement_group_table()
        except Exception:  # the sweep is a tidy-up; a failure to list must not stop the controller
            return []
        return [str(info["name"]) for info in table.values()
                if str(info.get("name") or "").startswith(GROUP_PREFIXES) and info.get("state") != "REMOVED"]

    def available(self) -> dict[str, dict[str, float]]:
        """Each grid node's available logical resources, by grid name."""
        import ray
        from ray._private.state import available_resources_per_node

        from grid_plugin_ray_backend.layout import grid_names

        names = grid_names(n for n in ray.nodes() if n["Alive"])
        per_node = available_resources_per_node()
        return {names[i]: {k: float(v) for k, v in res.items()} for i, res in per_node.items() if i in names}


def _policy(name: str, settings: Mapping[str, Any]) -> Policy:
    """The named offload policy from grid's plugins; GridError when none has that name."""
    from grid_core import plugins
    from grid_core.errors import GridError

    try:
        registration = plugins.host().get("grid_offload_policies", name)
    except GridError:
        plugins.configure()  # a policy pip-installed since this process loaded its plugins
        registration = plugins.host().get("grid_offload_policies", name)
    policy: Policy = registration.factory(settings)
    return policy


class OffloadController:
    """Runs on the head; every request and interval goes through `self.lock` and is saved at once."""

    def __init__(self, config_data: dict[str, Any], namespace: str, state_file: str | None = None,
                 head_marker: str | None = None) -> None:
        """`head_marker` names the head's own Ray processes (its Ray temp dir), apart from other
        raylets on the same machine; None: the cluster markers of this process's environment."""
        from grid_core.config import structure
        from grid_plugin_ray_backend.rules import CONFIG_SOURCE

        self.namespace, self.head_marker = namespace, head_marker
        self.mechanics = RayMechanics(namespace, state_file)
        self.lock = threading.RLock()
        saved, problem = self.mechanics.load(), None
        rules: Rules | None = None
        if saved:  # newer than config_data when Ray restarts the actor: requests bring newer ones
            try:
                rules = Rules.from_state(saved, self.mechanics, _policy)
            except Exception as exc:  # a state from another grid version, or damaged
                problem = f"the saved state could not be read ({type(exc).__name__}: {exc}); starting afresh"
        self.rules = rules or Rules(structure(config_data, CONFIG_SOURCE), self.mechanics, _policy)
        if problem:
            self.rules.note("error", None, problem)
        self.rules.recover()
        self._save()
        self.asked = time.time()
        self.last_config: dict[str, Any] | None = None
        self.lowering = Lowering()
        self.eviction = Eviction()
        self.reports: dict[str, tuple[float, Any]] = {}  # node: (when, NodeMetrics) from its agent
        self.taken: dict[str, tuple[float, Any]] = {}  # node: (when, NodeMetrics) read here
        self._cluster: tuple[str, Any] | None = None
        threading.Thread(target=self._loop, name="grid-offload", daemon=True).start()

    def _save(self) -> None:
        self.mechanics.save(self.rules.to_state())

    def adopt(self, config: dict[str, Any]) -> None:
        """The caller's config, when it is a new revision."""
        from grid_core.config import structure
        from grid_core.errors import GridError
        from grid_plugin_ray_backend.rules import CONFIG_SOURCE

        with self.lock:
            if config == self.last_config:  # most requests: the same file as the last one
                return
            try:
                adopted = self.rules.adopt(structure(config, CONFIG_SOURCE))
            except GridError as exc:
                raise ControllerError(f"the config sent with the request is not valid: {exc}") from None
            self.last_config = config
            if adopted:
                self._save()

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self._tick()
            except Exception:  # one bad interval must not end the controller
                with self.lock:
                    self.rules.note("error", None, traceback.format_exc(limit=3).strip().splitlines()[-1])
            interval = self.rules.settings.interval_seconds
            time.sleep(max(0.05, interval - (time.monotonic() - started)))

    def _sample(self) -> dict[str, Any]:
        """Each node's reading; connections and metrics sources are kept while the config stays."""
        import attrs

        from grid_core import plugins
        from grid_core.cluster import Cluster

        config, revision = self.rules.config, self.rules.revision
        if self._cluster is None or self._cluster[0] != revision:
            head = config.head
            # This actor runs on the head: read it directly, the others through their transports.
            nodes = [attrs.evolve(n, transport="local") if n.name == head.name else n for n in config.nodes]
            if self._cluster is not None:
                self._cluster[1].close()
            self._cluster = (revision, Cluster(attrs.evolve(config, nodes=nodes), plugins.host()))
        cluster = self._cluster[1]
        # A node's agent (agent.py) sends its readings; only nodes without a recent one are read here.
        fresh = time.time() - REPORT_FRESH * self.rules.settings.interval_seconds
        reported = {name: m for name, (when, m) in self.reports.items() if when >= fresh}
        rest = [n for n in cluster.config.nodes if n.name not in reported]
        sampled = {name: out.value for name, out in cluster.sample(rest).items() if out.error is None} if rest else {}
        if config.head.name in sampled:  # read here, on the head: the GPUs other clusters hold here too
            from grid_core.gpu_claims import with_claims

            sampled[config.head.name] = with_claims(sampled[config.head.name], config.name, config.head.gpu_total)
        now = time.time()
        self.taken.update({name: (now, m) for name, m in sampled.items()})
        return {**sampled, **reported}

    def fresh_readings(self) -> dict[str, tuple[float, Any, str]]:
        """Each node's reading, (age in seconds, NodeMetrics, "agent" or "head": who read it), where
        it is at most REPORT_FRESH intervals old; asking counts as looking, so the next intervals
        read the nodes."""
        now = time.time()
        self.asked = now
        oldest = now - REPORT_FRESH * self.rules.settings.interval_seconds
        newest = {name: (when, m, "head") for name, (when, m) in self.taken.items()}
        for name, (when, m) in self.reports.items():  # an agent's report, where newer than a read here
            if when >= newest.get(name, (0.0, None, ""))[0]:
                newest[name] = (when, m, "agent")
        return {name: (now - when, m, by) for name, (when, m, by) in newest.items() if when >= oldest}

    def report(self, node: str, data: dict[str, Any]) -> float:
        """A reading from a node's agent; the seconds until the next is wanted."""
        import cattrs

        from grid_core.types import NodeMetrics

        if data is not None:
            self.reports[node] = (time.time(), cattrs.structure(data, NodeMetrics))
        wanted = self.rules.settings.enabled or time.time() - self.asked < WATCHED_SECONDS
        return self.rules.settings.interval_seconds if wanted else IDLE_REPORT_SECONDS

    def _tick(self) -> None:
        now = time.time()
        # Sampling costs the nodes a little every interval: do it while offload is on or while
        # someone is looking (status, watch), not for an idle cluster.
        watched = now - self.asked < WATCHED_SECONDS
        readings = self._sample() if self.rules.settings.enabled or watched else {}
        with self.lock:
            self.rules.tick(readings, now)
            head = self.rules.config.head.name
            held, due = head in self.rules.holds, self.rules.evict_due(head, now)
            never_evict = self.rules.config.offload.never_evict
            reading = self.rules.readings.get(head)
        work, events, stopped = self._step_aside(held, due, never_evict, reading.gpus if reading else ())
        if stopped:
            self._reserve_freed(head)
        with self.lock:
            for kind, event in events:
                self.rules.note(kind, head, event)
            self.rules.lowered = {head: len(self.lowering)} if len(self.lowering) else {}
            self.rules.work = {head: work} if work else {}
            self._save()

    def _step_aside(self, held: bool, due: bool, never_evict: Sequence[str],
                    gpus: Sequence[Any] = ()) -> tuple[tuple[Any, ...], list[tuple[str, str]], int]:
        """While the head is held, the cluster's work there runs at the lowest CPU priority, so the
        owner's programs win at once, and once `due` its tasks are stopped to run elsewhere
        (head_work.py); on release it gets its priority back (grid_core/priority.py). This runs on
        the head, among the cluster's processes (markers from `ray start`). Returns the work rows,
        the events (kind, sentence) to record and how many tasks were stopped. The cluster's
        processes on the head's GPUs (`gpus`, its last reading) are listed among the rows."""
        from grid_core.builtin.psutil_metrics import markers_from_env, with_descendants
        from grid_core.priority import sessions_of
        from grid_plugin_ray_backend.head_work import gpu_work, process_table, working

        markers = (self.head_marker,) if self.head_marker else markers_from_env()
        if not held or markers is None:
            problems = self.lowering.restore() if len(self.lowering) or self.lowering.sessions else []
            self.eviction.pending.clear()
            return (), [("priority", p) for p in problems], 0
        table, cluster = process_table(markers)
        workers = working(table, cluster)
        lowered = with_descendants(table, workers)
        self.lowering.lower(lowered, sessions_of(cluster, table))
        work, evicted, stopped = self.eviction.step(table, workers, due, never_evict)
        return work + gpu_work(gpus, cluster, lowered), [("evict", e) for e in evicted], stopped

    def _reserve_freed(self, node: str) -> None:
        """Reserve for the hold what stopped tasks freed on node, before Ray places their retries
        (after layout.RETRY_DELAY_MS): Ray sees the freed CPUs a moment after the processes end."""
        from grid_plugin_ray_backend.layout import RETRY_DELAY_MS

        deadline = time.monotonic() + RETRY_DELAY_MS / 2000
        while True:
            with self.lock:
                reserved = self.rules.top_up(node)
            if reserved or time.monotonic() > deadline:
                return
            time.sleep(0.05)

    # ------------------------------------------------------------------ requests (one at a time, under the lock)

    def status(self) -> dict[str, Any]:
        import cattrs

        with self.lock:
            self.asked = time.time()
            return dict(cattrs.unstructure(self.rules.status()))

    def request(self, action: str, by: str, **params: Any) -> dict[str, Any]:
        """A change that `by` asked for (configure, hold, release, boost, boost_release): the events
        it makes, and a boost it makes, carry that user."""
        import cattrs

        if "gpu_types" in params:
            params["gpu_types"] = tuple(params["gpu_types"])
        with self.lock:
            self.rules.by = by
            try:
                return dict(cattrs.unstructure(getattr(self.rules, action)(**params)))
            finally:
                self.rules.by = ""
                self._save()  # a refused boost may still have ended boosts whose room it took
