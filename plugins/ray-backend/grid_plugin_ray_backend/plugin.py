"""Hook implementation of the ray-backend plugin: the `ray` backend.

Nothing here imports Ray: the backend imports it only in the calls that talk to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from grid_core.hookspecs import hookimpl
from grid_core.types import GridBackend

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig
    from grid_core.types import Backend


def _backend(config: ClusterConfig) -> Backend:
    from grid_plugin_ray_backend.backend import RayBackend

    return RayBackend(config)


@hookimpl
def grid_backends() -> Iterator[GridBackend]:
    yield GridBackend(name="ray", summary="Ray on the nodes, started over their transports, with token auth",
                      factory=_backend)
