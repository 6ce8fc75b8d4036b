"""The built-in scheduler, `fifo` (also called `least-loaded`, its name before the queue): the
waiting jobs by priority, then in submission order, each on the fitting node with the lowest load."""

from __future__ import annotations

from collections.abc import Sequence

from grid_core.hookspecs import hookimpl
from grid_core.types import GridScheduler, JobRecord, NodeView, WorkRequest


def load_score(node: NodeView) -> float:
    """Lower is better: the busier of CPU and memory, with GPU load counted when present."""
    m = node.metrics
    if m is None:
        return 50.0  # unknown load sorts between idle and busy nodes
    return max(m.cpu_percent, m.memory_percent, m.gpu_percent or 0.0)


def fits(request: WorkRequest, node: NodeView) -> bool:
    """Whether the node's available logical resources cover the request (unknown: assume yes)."""
    avail = node.available
    if not avail:
        return True
    return (
        avail.get("CPU", 0.0) >= request.cpus
        and avail.get("GPU", 0.0) >= request.gpus
        and avail.get("memory", float("inf")) >= request.memory_bytes
    )


class LeastLoaded:
    """Picks the fitting node with the lowest load; held nodes only when nothing else fits.

    Many placements are made against one snapshot of the cluster, so the order is computed once
    per snapshot (a tuple, which cannot change under us) and each placement walks it to the
    first node that fits.
    """

    def __init__(self) -> None:
        self._snapshot: tuple[NodeView, ...] | None = None
        self._order: list[NodeView] = []

    def order(self, jobs: Sequence[JobRecord]) -> list[JobRecord]:
        from grid_core.queue.plan import default_order

        return default_order(jobs)

    def choose(self, request: WorkRequest, nodes: Sequence[NodeView]) -> NodeView | None:
        if not (isinstance(nodes, tuple) and nodes is self._snapshot):
            self._order = sorted(nodes, key=lambda n: (n.held, load_score(n)))
            self._snapshot = nodes if isinstance(nodes, tuple) else None
        return next((node for node in self._order if fits(request, node)), None)


@hookimpl
def grid_schedulers():  # type: ignore[no-untyped-def]
    yield GridScheduler(name="fifo", summary="priority, then submission; the fitting node with the lowest load",
                        factory=LeastLoaded)
    yield GridScheduler(name="least-loaded", summary="the same as fifo (its name before the queue)",
                        factory=LeastLoaded)
