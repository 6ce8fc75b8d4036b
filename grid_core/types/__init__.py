"""The core's types: what plugins yield from their hooks, the interfaces their objects implement,
and the records the cluster answers with (what `--json` prints).

- registrations: what hooks yield (GridTransport, GridBackend, GridCommand, ...);
- interfaces: Transport, MetricsSource and Scheduler, their errors and results;
- backend: Backend, the compute engine's interface (it takes the whole cluster), and the shortcut
  it may offer some commands;
- readings: a node's metrics, and what schedulers and offload policies see and answer;
- offload, status, jobs, pool, plugins: the records the cluster answers with, by command;
- codec: how the CLI reads those records and writes `--json` (`wire()`).

`from grid_core.types import X` works for every name here. Each module is imported when one of
its names is first asked for, so a command builds only the classes it uses: every attrs class
costs its module's import about 0.3 ms, and a status command uses a third of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

MODULES: dict[str, tuple[str, ...]] = {
    "registrations": ("NAME_PATTERN", "GridTransport", "GridBackend", "GridScheduler", "GridOffloadPolicy",
                      "GridMetricsSource", "GridCommand", "GridServiceOp"),
    "interfaces": ("CommandResult", "TransportError", "HostKeyError", "AuthError", "Transport", "MetricsSource",
                   "Scheduler", "Progress", "NodeOutcome", "Check", "ShellEnv"),
    "backend": ("Backend", "StreamRoute", "Shortcut", "ShortcutClient", "StatusBasis", "StatusAnswer"),
    "readings": ("GpuInfo", "GpuProcess", "GpuReading", "NodeMetrics", "NodeView", "WorkRequest", "OffloadDecision",
                 "ControllerState"),
    "offload": ("BoostState", "Event", "Hold", "Boost", "OffloadInForce", "Decision", "HeldWork", "NodeState",
                "OffloadStatus", "ControllerStatus"),
    "status": ("ResourceUse", "EngineNode", "NodeStatus", "ClusterStatus"),
    "jobs": ("ACTIVE", "FINAL", "REQUEUES", "Attempt", "JobDefaults", "JobSpec", "JobRecord", "JobsText", "UserUsage",
             "ArrayRow", "JobListing"),
    "pool": ("PoolEntry",),
    "plugins": ("PluginRow", "PluginMatrix", "PluginChange", "PluginDrift"),
    "codec": ("Wire", "wire"),
}
_HOME = {name: module for module, names in MODULES.items() for name in names}
__all__ = tuple(_HOME)  # `import *` loads every module


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


if TYPE_CHECKING:  # to type checkers, the names are these modules' own (each one's __all__)
    from grid_core.types.backend import *  # noqa: F403
    from grid_core.types.codec import *  # noqa: F403
    from grid_core.types.interfaces import *  # noqa: F403
    from grid_core.types.jobs import *  # noqa: F403
    from grid_core.types.offload import *  # noqa: F403
    from grid_core.types.plugins import *  # noqa: F403
    from grid_core.types.pool import *  # noqa: F403
    from grid_core.types.readings import *  # noqa: F403
    from grid_core.types.registrations import *  # noqa: F403
    from grid_core.types.status import *  # noqa: F403
