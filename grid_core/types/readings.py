"""A node's live readings, and what schedulers and offload policies see and answer."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from grid_core.record import record

__all__ = ("ControllerState", "GpuInfo", "GpuProcess", "GpuReading", "NodeMetrics", "NodeView", "OffloadDecision",
           "WorkRequest")


@record
class GpuProcess:
    """A process on a GPU, its GPU memory, and the grid job or Ray task it belongs to."""

    pid: int
    memory_used_bytes: int | None  # None where the driver cannot say (it hides other users' figures)
    kind: str = "compute"  # or "graphics"
    command: str = ""
    owner: str = ""  # "grid job", "ray <task>" or "" for anything else
    job_pid: int | None = None  # the pid of the grid job's own command, to match a job's recorded pid
    util_percent: float | None = None  # its share of the GPU's time, where the driver samples it per process


@record
class GpuReading:
    """One GPU's utilisation and memory, in percent and bytes; temperature and power where known."""

    index: int
    name: str
    util_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None = None
    power_watts: float | None = None
    processes: tuple[GpuProcess, ...] = ()
    uuid: str | None = None  # the driver's, e.g. GPU-5f2c...; None where the source cannot say

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


@record
class GpuInfo:
    """One GPU a node has: what grid_core/gpus.py reads from NVML or nvidia-smi, else the config."""

    index: int
    model: str  # as the driver names it ("NVIDIA GeForce RTX 3090") or the config; "" where unknown
    memory_bytes: int  # total; 0 where unknown
    uuid: str | None = None
    source: str = "config"  # "driver" (NVML or nvidia-smi) or "config"


@record
class NodeMetrics:
    """A node's live readings. Percentages are 0-100; `source` names the metrics source."""

    source: str
    cpu_percent: float
    memory_percent: float
    swap_percent: float = 0.0
    load1: float = 0.0
    cpu_count: int = 0
    memory_total_bytes: int = 0
    gpus: tuple[GpuReading, ...] = ()
    # The cluster's own processes on the node apart from the rest (the owner's): each None where
    # the source cannot tell them apart. CPU percentages, like cpu_percent, are of the node's
    # allowed CPUs (affinity and cgroup quota), and cpu_count is their number.
    cluster_cpu_percent: float | None = None
    owner_cpu_percent: float | None = None  # cpu_percent less the cluster's, never below 0
    cluster_memory_bytes: int | None = None  # the cluster's processes' private resident memory
    cluster_memory_percent: float | None = None  # of memory_total_bytes
    owner_memory_percent: float | None = None  # memory_percent less the cluster's, never below 0
    # The busiest GPU's utilisation counting only what is not the cluster's (gpus.owner_gpu_percent).
    owner_gpu_percent: float | None = None
    owner_idle_seconds: float | None = None  # since a terminal or the desktop was last used
    # The node's GPUs that jobs of other clusters hold now, in words (grid_core/gpu_claims.py).
    gpu_claims: tuple[str, ...] = ()

    @property
    def gpu_percent(self) -> float | None:
        """The busiest GPU's utilisation, or None without GPUs."""
        return max((g.util_percent for g in self.gpus), default=None)


@record
class NodeView:
    """What a scheduler or offload policy sees of one node."""

    name: str
    role: str
    metrics: NodeMetrics | None = None
    available: Mapping[str, float] = attrs.field(factory=dict)
    held: bool = False
    tags: tuple[str, ...] = ()
    gpus: tuple[GpuInfo, ...] = ()  # its GPUs, where known (grid_core/gpus.py)


@record
class WorkRequest:
    """A piece of work to place: the resources it asks for and where it came from."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    origin: str | None = None
    gpu_types: tuple[str, ...] = ()  # models the GPUs may be, any of them (`--gpu-type 4090,3090`); (): any
    gpu_memory_bytes: int = 0  # the least total memory of each GPU (`--gpu-memory 20G`)


@record
class OffloadDecision:
    """A policy's answer for one interval: hold the head or not, why, and where work should go."""

    hold: bool
    reason: str
    pressure: tuple[str, ...] = ()  # the metrics over their marks, e.g. ("cpu", "gpu")
    targets: tuple[str, ...] = ()  # preferred nodes for the head's work, best first
    # While held: seconds after which the cluster's tasks still running on the head are stopped so
    # the engine runs them again elsewhere (what it would not retry is never stopped); None: never.
    evict_after: float | None = None


@record
class ControllerState:
    """What the controller tells a policy about itself."""

    head: str
    held: bool
    now: float
