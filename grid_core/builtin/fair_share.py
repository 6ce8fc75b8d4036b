"""The built-in `fair-share` scheduler: the waiting jobs of whoever used the cluster least lately
first (grid_core/queue/share.py), then by priority, then in submission order; each on the fitting
node with the lowest load, as `fifo` places them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from grid_core.builtin.least_loaded import LeastLoaded
from grid_core.hookspecs import hookimpl
from grid_core.types import GridScheduler, JobRecord, UserUsage


class FairShare(LeastLoaded):
    def order(self, jobs: Sequence[JobRecord], usage: Mapping[str, UserUsage]) -> list[JobRecord]:  # type: ignore[override]
        from grid_core.queue.share import fair_order

        return fair_order(jobs, usage)


@hookimpl
def grid_schedulers():  # type: ignore[no-untyped-def]
    yield GridScheduler(name="fair-share", summary="whoever used the cluster least lately first, then priority",
                        factory=FairShare)
