"""Sampling nodes through the metrics sources, and the readings formats sources share."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import attrs

from grid_core.record import record
from grid_core.types import GpuProcess, GpuReading, MetricsSource, NodeMetrics, Transport

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,uuid",
    "--format=csv,noheader,nounits",
]
MIB = 1024 * 1024
RAY_PREFIX = "ray::"  # Ray sets each worker's process title to ray::<task or actor class>
JOB_RUNNER = "ray::JobRunner"  # the actor that runs a grid job's command as its child


def parse_nvidia_smi(text: str) -> tuple[GpuReading, ...]:
    """Parse the CSV of NVIDIA_SMI_QUERY (or its first five or seven columns); lines that do not parse are skipped."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) not in (5, 7, 8):
            continue
        try:
            index, name, util, used, total = int(parts[0]), parts[1], float(parts[2]), float(parts[3]), float(parts[4])
            extra = [_optional(p) for p in parts[5:7]] + [None, None]
            uuid = parts[7] if len(parts) == 8 and parts[7].startswith(("GPU-", "MIG-")) else None
            gpus.append(GpuReading(index, name, util, int(used * MIB), int(total * MIB), extra[0], extra[1],
                                   uuid=uuid))
        except (ValueError, OverflowError):  # "[N/A]", nan, inf: a GPU that cannot report
            continue
    return tuple(gpus)


def _optional(field: str) -> float | None:
    """A reading a GPU may not support ("[N/A]", "[Not Supported]"): None rather than the whole GPU."""
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@record
class ProcessEntry:
    """What ownership needs of one process: its parent and its title (argv[0], as Ray rewrites it)."""

    pid: int
    ppid: int
    title: str


def owner_of(pid: int, lookup: Callable[[int], ProcessEntry | None],
             max_depth: int = 64) -> tuple[str, int | None]:
    """Who a process belongs to, from it and its ancestors: ("grid job", the job command's pid)
    below a job runner, ("ray <task>", None) in or below another Ray worker, else ("", None)."""
    child: int | None = None
    current, seen = pid, set[int]()
    while current > 0 and current not in seen and len(seen) < max_depth:
        seen.add(current)
        entry = lookup(current)
        if entry is None:
            break
        if entry.title.startswith(JOB_RUNNER):
            return "grid job", child  # None when the runner itself holds the GPU
        if entry.title.startswith(RAY_PREFIX):
            return f"ray {entry.title[len(RAY_PREFIX):].strip() or 'worker'}", None
        child, current = current, entry.ppid
    return "", None


def label_processes(processes: Iterable[GpuProcess],
                    lookup: Callable[[int], ProcessEntry | None]) -> tuple[GpuProcess, ...]:
    """The processes with `owner` and `job_pid` filled in from the process table."""
    return tuple(attrs.evolve(p, owner=owner, job_pid=job_pid)
                 for p in processes for owner, job_pid in [owner_of(p.pid, lookup)])


def sample(node: NodeConfig, transport: Transport, sources: dict[str, MetricsSource]) -> NodeMetrics | None:
    """The first reading any source gives for the node, or None."""
    for source in sources.values():
        reading = source.sample(node, transport)
        if reading is not None:
            return reading
    return None
