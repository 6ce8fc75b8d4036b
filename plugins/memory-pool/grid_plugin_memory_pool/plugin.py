"""Registers `grid memory` and the service request it sends; ray is imported only on the head's
service, or in a program that connects a Pool itself."""

from __future__ import annotations

from grid_core.hookspecs import hookimpl
from grid_core.types import GridCommand, GridServiceOp


@hookimpl
def grid_commands():  # type: ignore[no-untyped-def]
    yield GridCommand(name="memory", summary="Named data kept in the cluster's memory.",
                      import_path="grid_plugin_memory_pool.cli:memory")


@hookimpl
def grid_service_ops():  # type: ignore[no-untyped-def]
    yield GridServiceOp(name="memory", summary="the memory pool's put, get, ls, rm and stats",
                        import_path="grid_plugin_memory_pool.service:handle")
