"""The `scripted` metrics source, for tests: readings come from the JSON file named by
$GRID_SCRIPTED_METRICS ({"node": {"cpu_percent": 95, "memory_percent": 10}, ...}).

A node missing from the file (or no file) gets None, so the next source answers for it. The
variable reaches the offload controller through the environment its raylet was started with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from grid_core.hookspecs import hookimpl
from grid_core.types import GridMetricsSource, NodeMetrics

ENV = "GRID_SCRIPTED_METRICS"


class ScriptedSource:
    def sample(self, node: Any, transport: Any) -> NodeMetrics | None:
        try:
            with open(os.environ[ENV], encoding="utf-8") as f:
                reading = json.load(f).get(node.name)
        except (KeyError, OSError, ValueError):
            return None
        return None if reading is None else NodeMetrics(source="scripted", **reading)


@hookimpl
def grid_metrics_sources() -> Iterator[GridMetricsSource]:
    yield GridMetricsSource(name="scripted", summary="readings a test writes to $GRID_SCRIPTED_METRICS",
                            factory=ScriptedSource)
