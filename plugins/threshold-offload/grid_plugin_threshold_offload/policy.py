"""The `threshold` offload policy: high-water marks hold the head, low-water marks free it.

Hysteresis comes from three rules: a hold needs `window` consecutive readings over a high mark
(one spike is not pressure), a release needs every reading below the low marks for
`cooldown_seconds`, and readings between the marks change nothing.

The head's pressure is its owner's: CPU is the owner's share (`owner_cpu_percent`, the node's use
less the cluster's own processes) where the metrics source tells them apart, else the node's total;
memory is the total (memory cannot be shared out); GPU is the busiest GPU's use by all but the
cluster (`owner_gpu_percent`, from NVML's processes) where known, else the busiest GPU's total. So
the cluster's own load alone never holds the head. With `owner_idle_seconds` set, presence decides where it is known:
held while the owner used a terminal or the desktop more recently than that, released (after the
cooldown) once idle that long, whatever the load. While the head is held, its decisions carry
`evict_after` from the config (off unless set), so the cluster's retriable tasks still running
there are stopped after that long and run again on workers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from grid_core.types import ControllerState, NodeMetrics, NodeView, OffloadDecision

METRICS = ("cpu", "memory", "gpu")
DEFAULT_HIGH = {"cpu": 80.0, "memory": 70.0, "gpu": 90.0}
DEFAULT_LOW = {"cpu": 60.0, "memory": 55.0, "gpu": 70.0}


def readings(m: NodeMetrics) -> dict[str, float]:
    """A node's total load per metric (what a worker has left for more work)."""
    values = {"cpu": m.cpu_percent, "memory": m.memory_percent}
    if m.gpu_percent is not None:
        values["gpu"] = m.gpu_percent
    return values


def owner_readings(m: NodeMetrics) -> dict[str, float]:
    """The head's pressure on its owner: the owner's CPU and GPU where known, total memory."""
    values = readings(m)
    if m.owner_cpu_percent is not None:
        values["cpu"] = m.owner_cpu_percent
    if m.owner_gpu_percent is not None:
        values["gpu"] = m.owner_gpu_percent
    return values


def _label(metric: str, m: NodeMetrics) -> str:
    owner = {"cpu": m.owner_cpu_percent, "gpu": m.owner_gpu_percent}.get(metric)
    return f"owner {metric}" if owner is not None else metric


class ThresholdPolicy:
    """Stateful across intervals: it keeps the head's last `window` readings."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.high = {**DEFAULT_HIGH, **settings.get("high", {})}
        self.low = {**DEFAULT_LOW, **settings.get("low", {})}
        for metric in METRICS:  # a low mark above the high one would flap; clamp it
            self.low[metric] = min(self.low[metric], self.high[metric])
        self.window = max(1, int(settings.get("window", 2)))
        self.cooldown = float(settings.get("cooldown_seconds", 30.0))
        idle = settings.get("owner_idle_seconds")
        self.owner_idle = float(idle) if idle is not None else None  # None: presence is not used
        evict = settings.get("evict_after")
        self.evict_after = float(evict) if evict is not None else None  # None: never stop running tasks
        self._recent: deque[dict[str, float]] = deque(maxlen=self.window)
        self._calm_since: float | None = None
        self._snapshot: tuple[Sequence[NodeView], str, tuple[str, ...], NodeView | None] | None = None

    def decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision:
        decided = self._decide(nodes, state)
        # Graduated steps while held: lowered at once (the controller), stopped after evict_after.
        return attrs.evolve(decided, evict_after=self.evict_after) if decided.hold else decided

    def _decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision:
        head, targets = self._survey(nodes, state.head)
        if head is None or head.metrics is None:
            return OffloadDecision(state.held, "no reading from the head; keeping the current state", (), targets)
        now = owner_readings(head.metrics)
        self._recent.append(now)
        pressure = tuple(
            m for m in METRICS
            if len(self._recent) == self.window and all(r.get(m, 0.0) >= self.high[m] for r in self._recent)
        )
        idle = head.metrics.owner_idle_seconds
        if self.owner_idle is not None and idle is not None:
            return self._presence(idle, self.owner_idle, pressure, state, targets)
        if pressure:
            self._calm_since = None
            what = ", ".join(f"{_label(m, head.metrics)} {now[m]:.0f}% >= {self.high[m]:.0f}%" for m in pressure)
            return OffloadDecision(True, f"{what} for {self.window} readings", pressure, targets)
        calm = all(now.get(m, 0.0) < self.low[m] for m in METRICS)
        if not state.held:
            return OffloadDecision(False, "below the high-water marks", (), targets)
        if not calm:
            self._calm_since = None
            return OffloadDecision(True, "still above a low-water mark", (), targets)
        return self._cool_down(state, "below the low-water marks", targets)

    def _cool_down(self, state: ControllerState, why: str, targets: tuple[str, ...]) -> OffloadDecision:
        """Held and calm: released once calm for the cooldown."""
        self._calm_since = self._calm_since if self._calm_since is not None else state.now
        waited = state.now - self._calm_since
        if waited >= self.cooldown:
            self._calm_since = None
            return OffloadDecision(False, f"{why} for {waited:.0f} s", (), targets)
        return OffloadDecision(True, f"cooling down: {why} for {waited:.0f}/{self.cooldown:.0f} s", (), targets)

    def _presence(self, idle: float, limit: float, pressure: tuple[str, ...], state: ControllerState,
                  targets: tuple[str, ...]) -> OffloadDecision:
        """Presence decides: held while the owner is active, whatever the load (the metrics over
        their marks are still named, so GPU pressure still reserves the GPUs); released after the
        cooldown once the owner has been idle long enough, whatever the load."""
        if idle < limit:
            self._calm_since = None
            return OffloadDecision(True, f"owner active: idle {idle:.0f} s < {limit:.0f} s", pressure, targets)
        if not state.held:
            return OffloadDecision(False, f"owner idle for {idle:.0f} s", (), targets)
        return self._cool_down(state, f"owner idle ({idle:.0f} s >= {limit:.0f} s)", targets)

    def _survey(self, nodes: Sequence[NodeView], head: str) -> tuple[NodeView | None, tuple[str, ...]]:
        """The head's view and the targets, computed once per snapshot (a tuple cannot change)."""
        cached = self._snapshot
        if cached is not None and cached[0] is nodes and cached[1] == head:
            return cached[3], cached[2]
        found = next((n for n in nodes if n.name == head), None)
        targets = self._targets(nodes, head)
        if isinstance(nodes, tuple):
            self._snapshot = (nodes, head, targets, found)
        return found, targets

    def _targets(self, nodes: Sequence[NodeView], head: str) -> tuple[str, ...]:
        """Workers not themselves over a high mark, least loaded first."""

        def load(n: NodeView) -> float:
            return max(readings(n.metrics).values()) if n.metrics else 50.0

        ok = [n for n in nodes if n.name != head and not n.held
              and not (n.metrics and any(v >= self.high[m] for m, v in readings(n.metrics).items()))]
        return tuple(n.name for n in sorted(ok, key=load))
