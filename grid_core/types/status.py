"""`grid cluster status`'s records: each node as the compute engine sees it, and the rows shown."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from grid_core.record import record
from grid_core.types.plugins import PluginDrift
from grid_core.types.readings import GpuInfo, NodeMetrics

__all__ = ("ClusterStatus", "EngineNode", "NodeStatus", "ResourceUse")


@record(kw_only=True)
class ResourceUse:
    """One of a node's logical resources as the engine schedules it: in all, free and held."""

    total: float
    available: float
    used: float


@record(kw_only=True)
class EngineNode:
    """One node as the compute engine sees it (`Backend.status`); None where the engine cannot say."""

    alive: bool = False
    cpus: float | None = None
    gpus: float | None = None
    memory_bytes: int | None = None
    resources: Mapping[str, ResourceUse] = attrs.field(factory=dict)
    address: str | None = None  # the node's address in the engine
    node_id: str | None = None
    error: str | None = None  # why it is not alive, or the engine could not be asked
    # The node's latest reading as the cluster took it, and its age in seconds, where fresh.
    metrics: NodeMetrics | None = None
    metrics_age: float | None = None
    metrics_from: str | None = None  # "agent": the node's own agent sent it; "head": the service read it
    # The head's: grid-core and the plugin distributions the cluster's service started with.
    service_plugins: Mapping[str, str] | None = None


@record(kw_only=True)
class NodeStatus:
    """One row of `grid cluster status`: the transport's and metrics' view, then the engine's."""

    name: str
    host: str
    role: str
    transport: str
    reachable: bool
    error: str | None = None  # why the transport or the metrics failed
    alive: bool | None = None  # None: the engine could not be asked
    # The engine's figures where it has them, else the configured ones, else the metrics'.
    cpus: float | None = None
    gpus: float | None = None
    memory_bytes: int | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    swap_percent: float | None = None
    load1: float | None = None
    gpu_percent: float | None = None
    metrics_source: str | None = None
    metrics_age: float | None = None  # seconds, where the reading is the cluster's; None: read by this command
    metrics_from: str | None = None  # the cluster's reading: "agent" (the node's own) or "head" (the service's)
    resources: Mapping[str, ResourceUse] = attrs.field(factory=dict)
    address: str | None = None
    node_id: str | None = None
    engine_error: str | None = None  # EngineNode.error, or why the engine could not be asked
    gpu_models: tuple[GpuInfo, ...] = ()  # its GPUs: read from NVML or nvidia-smi, else the config's
    gpu_note: str | None = None  # where the config's `gpus` and what the driver says disagree
    gpu_claims: tuple[str, ...] = ()  # the node's GPUs that jobs of other clusters hold, in words
    service_plugins: Mapping[str, str] | None = None  # EngineNode.service_plugins (the head's)


@record(kw_only=True)
class ClusterStatus:
    """What `grid cluster status` shows: the cluster, its config file and one row per node."""

    cluster: str
    source: str
    nodes: tuple[NodeStatus, ...] = ()
    plugins_changed: PluginDrift | None = None  # this machine's plugins since the service started
