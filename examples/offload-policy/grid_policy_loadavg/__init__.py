"""An offload policy in a dozen lines: hold the head while its 1-minute load average per core is
above `hold_at` (default 0.8), release it once it is below `release_at` (default 0.5).

Install it (`pip install examples/offload-policy`) and select it:
    grid offload auto --enable --policy loadavg
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grid_core.hookspecs import hookimpl
from grid_core.types import ControllerState, GridOffloadPolicy, NodeView, OffloadDecision


class LoadAveragePolicy:
    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.hold_at = float(settings.get("hold_at", 0.8))
        self.release_at = float(settings.get("release_at", 0.5))

    def decide(self, nodes: Sequence[NodeView], state: ControllerState) -> OffloadDecision:
        head = next((n for n in nodes if n.name == state.head), None)
        if head is None or head.metrics is None or not head.metrics.cpu_count:
            return OffloadDecision(state.held, "no load reading from the head")
        per_core = head.metrics.load1 / head.metrics.cpu_count
        workers = tuple(n.name for n in nodes if n.name != state.head)
        if per_core >= self.hold_at:
            return OffloadDecision(True, f"load {per_core:.2f} per core >= {self.hold_at}", ("cpu",), workers)
        if state.held and per_core > self.release_at:
            return OffloadDecision(True, f"load {per_core:.2f} per core still > {self.release_at}", (), workers)
        return OffloadDecision(False, f"load {per_core:.2f} per core", (), workers)


@hookimpl
def grid_offload_policies():  # type: ignore[no-untyped-def]
    yield GridOffloadPolicy(name="loadavg", summary="hold the head while its load average per core is high",
                            factory=LoadAveragePolicy)
