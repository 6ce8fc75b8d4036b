"""Sampling nodes through the metrics sources, and the readings formats sources share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from grid_core.types import GpuReading, MetricsSource, NodeMetrics, Transport

if TYPE_CHECKING:
    from grid_core.config import NodeConfig

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
]
MIB = 1024 * 1024


def parse_nvidia_smi(text: str) -> tuple[GpuReading, ...]:
    """Parse the CSV of NVIDIA_SMI_QUERY; lines that do not parse are skipped."""
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            index, name, util, used, total = int(parts[0]), parts[1], float(parts[2]), float(parts[3]), float(parts[4])
            gpus.append(GpuReading(index, name, util, int(used * MIB), int(total * MIB)))
        except (ValueError, OverflowError):  # "[N/A]", nan, inf: a GPU that cannot report
            continue
    return tuple(gpus)


def sample(node: NodeConfig, transport: Transport, sources: dict[str, MetricsSource]) -> NodeMetrics | None:
    """The first reading any source gives for the node, or None."""
    for source in sources.values():
        reading = source.sample(node, transport)
        if reading is not None:
            return reading
    return None
