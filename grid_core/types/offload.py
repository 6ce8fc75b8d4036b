"""The offload controller's records: settings in force, holds, boosts, decisions, events and
each node's row (`grid offload auto --status`, `grid boost list`, `grid offload watch`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import attrs

from grid_core.record import record
from grid_core.types.readings import GpuInfo, GpuReading

__all__ = (
    "Boost",
    "BoostState",
    "ControllerStatus",
    "Decision",
    "Event",
    "HeldWork",
    "Hold",
    "NodeState",
    "OffloadInForce",
    "OffloadStatus",
)


BoostState = Literal["active", "released", "expired", "preempted"]


@record
class Event:
    """Something the controller did or saw: when, what kind, on which node (None: the cluster), why,
    and at whose request ("": the controller's own doing, e.g. its policy)."""

    time: float
    kind: str  # hold, release, boost, boost-expired, boost-released, boost-preempted, boost-restored, settings, ...
    node: str | None
    reason: str
    user: str = ""


@record
class Hold:
    """A node kept free of new work: why, by hand or by the policy, since when, and its reservations."""

    node: str
    reason: str
    manual: bool
    since: float
    gpus: bool = False  # its free GPUs are reserved too, not only its CPUs
    groups: tuple[str, ...] = ()  # the engine's reservations that do it


@record
class Boost:
    """A node borrowing capacity on another: a reservation on `source` that only `target`'s work uses."""

    id: str
    target: str
    source: str
    resource: str  # cpu, gpu or memory (GB)
    amount: float
    priority: str  # low, normal, high, critical
    created: float
    expires_at: float | None  # None: until released
    state: BoostState = "active"
    note: str = ""  # e.g. which boosts it preempted, or how it ended
    group: str = ""  # the engine's reservation
    user: str = ""  # who requested it, as the service saw them


@record(kw_only=True)
class OffloadInForce:
    """The offload settings the controller runs with, and where each value came from."""

    enabled: bool = False
    policy: str = "threshold"
    thresholds: Mapping[str, float] = attrs.field(factory=dict)  # high-water marks, percent per metric
    low: Mapping[str, float] = attrs.field(factory=dict)  # low-water marks
    interval_seconds: float = 5.0
    cooldown_seconds: float = 30.0
    window: int = 3
    # Per value ("enabled", "policy", "high.cpu", "low.cpu", ..., "window"): "file" (the config in
    # force) or "run time" (`offload auto`, which wins until the file's own value changes).
    origin: Mapping[str, str] = attrs.field(factory=dict)


@record
class Decision:
    """The offload policy's last answer and when it was given."""

    hold: bool
    reason: str
    targets: tuple[str, ...] = ()  # preferred nodes for the head's work, best first
    time: float = 0.0
    pressure: tuple[str, ...] = ()  # the metrics over their marks
    evict_after: float | None = None  # OffloadDecision's


@record(kw_only=True)
class HeldWork:
    """The cluster's work found running on a held node, and what the controller does with it."""

    pid: int
    name: str  # the engine's name for it: a task's function, an actor's class
    kind: str  # "task" (the engine runs it again elsewhere if stopped), "actor", or "gpu" (a process on its GPU)
    action: str  # "lowered" (lowest priority), "evicted" (stopped), "kept" (lowered, never stopped)
    reason: str = ""


@record(kw_only=True)
class NodeState:
    """One node as the controller last saw it: its readings, free resources and hold."""

    name: str
    role: str = "worker"
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    available: Mapping[str, float] = attrs.field(factory=dict)  # the engine's free logical resources
    hold: str | None = None  # the hold's reason, None when free
    gpus: tuple[GpuReading, ...] = ()
    # The owner's load beside the cluster's, and presence (NodeMetrics; None where unknown).
    owner_cpu_percent: float | None = None
    cluster_cpu_percent: float | None = None
    owner_idle_seconds: float | None = None
    # free, held, lowered (the cluster's processes there at the lowest priority), evicting (its
    # tasks are being stopped so they run elsewhere)
    step: str = "free"
    lowered: int = 0  # how many of the cluster's processes are lowered
    work: tuple[HeldWork, ...] = ()  # while held: the cluster's work running there
    gpu_models: tuple[GpuInfo, ...] = ()  # its GPUs, as the driver reports them, else the config's
    owner_gpu_percent: float | None = None  # NodeMetrics'
    gpu_claims: tuple[str, ...] = ()  # NodeMetrics': its GPUs that jobs of other clusters hold


@record(kw_only=True)
class OffloadStatus(OffloadInForce):
    """What `grid offload auto` shows: the settings in force, the config revision, holds, decision, events."""

    cluster: str = ""
    revision: str = ""  # of the config the controller runs with
    held: Mapping[str, Hold] = attrs.field(factory=dict)
    decision: Decision | None = None
    events: tuple[Event, ...] = ()  # the most recent, oldest first
    last_event: Event | None = None


@record(kw_only=True)
class ControllerStatus(OffloadStatus):
    """Everything the controller answers `status` with: OffloadStatus, each node's row and every boost."""

    nodes: tuple[NodeState, ...] = ()
    boosts: tuple[Boost, ...] = ()
    plugins: Mapping[str, str] = attrs.field(factory=dict)  # the service's grid-core and plugins, as it started
