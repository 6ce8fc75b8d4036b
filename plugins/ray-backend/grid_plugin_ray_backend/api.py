"""The ray backend's public API for other plugins: nothing else here is theirs to import.

- `request`: one request to the grid service on the head (a `grid_service_ops` op or the
  backend's own), from any machine, without Ray in the calling process.
- `init_ray`: make this process a Ray driver of the cluster, on one of its nodes, with its token.
- `NODE_RESOURCE`: the resource that names each grid node in Ray (`grid-node-<name>`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grid_core.errors import GridError
from grid_plugin_ray_backend.layout import NODE_RESOURCE

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig
    from grid_plugin_ray_backend.channel import Answer

__all__ = ["NODE_RESOURCE", "init_ray", "request"]


def request(config: ClusterConfig, cluster: Cluster, op: str, params: dict[str, Any] | None = None, *,
            data: bytes | None = None, data_file: str | None = None,
            on_data: Callable[[bytes], object] | None = None, into: str | None = None) -> Answer:
    """Ask the service; its answer (`.result`, `.status`). A refusal is a GridError with its reason.
    `data`, or the bytes of `data_file`, go with the request. Bytes it sends back go to `on_data`,
    or with `into` to that file (written anew)."""
    from grid_plugin_ray_backend import channel

    return channel.call(config, cluster, op, params, data=data, data_file=data_file, on_data=on_data, into=into)


def init_ray(config: ClusterConfig) -> None:
    """ray.init against the running cluster of `config`; GridError when it is not running or
    cannot be reached. Only on a node of the cluster: Ray aborts a driver elsewhere."""
    import ray

    from grid_plugin_ray_backend import auth, records

    state = records.load(config.name)
    if state.gcs_address is None:
        raise GridError(f"cluster {config.name!r} is not running; start it with `grid cluster start`")
    auth.use_in_this_process(config)
    # Ray reads the auth settings when it is imported: have it read them again now that they
    # point at this cluster's token.
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    try:
        ray.init(address=state.gcs_address, namespace=config.backend.namespace, logging_level=logging.ERROR,
                 log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own
        raise GridError(f"cannot reach cluster {config.name!r} at {state.gcs_address}: {exc}") from None
