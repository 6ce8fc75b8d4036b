"""A scheduler in twenty lines: the queue's order and each job's node, for a lab whose GPU boxes
are scarce.

- Order: priority first; then jobs that ask for GPUs (they wait for the scarce boxes), then the
  smallest jobs, then submission order.
- Place: a job without GPUs goes to a node with no GPUs (declared, found, or tagged `gpu`) while
  one has room; only then to a GPU box. Among the fitting nodes, the one with the most CPUs free.

Install it on the cluster (`grid plugins install examples/scheduler`) and select it in the config:
    [scheduler]
    name = "gpu-boxes-last"
"""

from __future__ import annotations

from collections.abc import Sequence

from grid_core.hookspecs import hookimpl
from grid_core.types import GridScheduler, JobRecord, NodeView, WorkRequest


def gpu_box(node: NodeView) -> bool:
    return bool(node.gpus) or "gpu" in node.tags


class GpuBoxesLast:
    def order(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        return sorted(jobs, key=lambda j: (-j.priority, -j.gpus, j.cpus, j.seq))

    def choose(self, request: WorkRequest, nodes: Sequence[NodeView]) -> NodeView | None:
        fits = [n for n in nodes if n.available.get("CPU", 0.0) >= request.cpus
                and n.available.get("GPU", 0.0) >= request.gpus
                and n.available.get("memory", float("inf")) >= request.memory_bytes]
        plain = [n for n in fits if not gpu_box(n)]
        pool = plain if plain and not request.gpus else fits
        return max(pool, key=lambda n: n.available.get("CPU", 0.0), default=None)


@hookimpl
def grid_schedulers():  # type: ignore[no-untyped-def]
    yield GridScheduler(name="gpu-boxes-last", summary="GPU jobs first, then the smallest; CPU jobs off the GPU boxes",
                        factory=GpuBoxesLast)
