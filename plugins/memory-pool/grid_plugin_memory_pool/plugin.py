"""Registers `grid memory`; ray is imported only when a memory command runs."""

from __future__ import annotations

from grid_core.hookspecs import hookimpl
from grid_core.types import GridCommand


@hookimpl
def grid_commands():  # type: ignore[no-untyped-def]
    yield GridCommand(name="memory", summary="Named data kept in the cluster's memory.",
                      import_path="grid_plugin_memory_pool.cli:memory")
