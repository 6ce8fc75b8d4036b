"""The `ray` metrics source: each node's logical resources (total, available, used) as Ray's scheduler sees them.

These are not utilisation readings, so `sample` answers None and never hides a source that
measures CPU and memory; consumers that want Ray's view (the status table, schedulers, the
offload controller) call `resources`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grid_plugin_ray_backend import auth, gcs, records

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.types import NodeMetrics, Transport


class RayResources:
    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None:
        return None

    def resources(self, config: ClusterConfig) -> dict[str, dict[str, dict[str, Any]]]:
        """Per node name: {resource: {"total", "available", "used"}}; empty when no cluster answers."""
        address = records.load(config.name).gcs_address
        if address is None:
            return {}
        auth.use_in_this_process(config)
        try:
            nodes = gcs.alive_by_name(gcs.read_nodes(address))
        except gcs.GcsError:
            return {}
        return {name: gcs.resource_usage(node) for name, node in nodes.items()}
