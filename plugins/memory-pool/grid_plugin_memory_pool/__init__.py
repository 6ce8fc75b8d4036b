"""grid plugin: named data kept in the cluster's memory.

    from grid_plugin_memory_pool import Pool
    pool = Pool.connect()
    pool.put("weights", array, node="gpu1")
    pool.get("weights")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from grid_plugin_memory_pool.pool import Pool


def __getattr__(name: str) -> Any:
    # Importing the package stays cheap (the CLI's plugin scan); ray loads with the Pool.
    if name == "Pool":
        from grid_plugin_memory_pool.pool import Pool

        return Pool
    raise AttributeError(name)


__all__ = ["Pool"]
