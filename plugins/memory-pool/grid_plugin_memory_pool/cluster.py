"""Attaching the pool to a running grid cluster: the Ray connection and the nodes it can use."""

from __future__ import annotations

from typing import Any

from grid_core.errors import GridError
from grid_core.record import record
from grid_plugin_memory_pool.keys import PoolError
from grid_plugin_ray_backend.api import NODE_RESOURCE, init_ray

DEFAULT_SHARE = 0.5  # of each node's object store, unless plugins.memory-pool sets capacity_gb
PREFIX = NODE_RESOURCE.format("")


@record
class NodeSlot:
    """A grid node as the pool sees it: its Ray node id, its pin resource and its capacity."""

    name: str
    node_id: str
    resource: str
    capacity: int
    alive: bool


def _capacity(settings: dict[str, Any], node: str, store_bytes: float, share: float | None) -> int:
    value = settings.get("capacity_gb")
    if isinstance(value, dict):
        value = value.get(node)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value * 2**30)
    return int(store_bytes * (share if share is not None else settings.get("capacity_share", DEFAULT_SHARE)))


def attach(config: Any = None, capacity_share: float | None = None) -> tuple[list[NodeSlot], str, str]:
    """The nodes of grid's running cluster as the pool sees them, its Ray namespace and its head
    (what a Pool is made of); joins the cluster as a Ray driver unless this process already has."""
    from grid_core import config as grid_config

    config = config or grid_config.load()
    import ray

    if not ray.is_initialized():
        try:
            init_ray(config)
        except GridError as exc:
            raise PoolError(str(exc)) from None
    settings = config.plugins.get("memory-pool", {})
    slots = []
    for node in ray.nodes():
        for resource in node.get("Resources", {}):
            if resource.startswith(PREFIX):
                name = resource[len(PREFIX):]
                store = node["Resources"].get("object_store_memory", 0.0)
                slots.append(NodeSlot(name, node["NodeID"], resource, _capacity(settings, name, store, capacity_share),
                                      bool(node["Alive"])))
    # A restarted node appears twice (dead and alive): keep the live one.
    by_name: dict[str, NodeSlot] = {}
    for slot in slots:
        if slot.name not in by_name or slot.alive:
            by_name[slot.name] = slot
    for node in config.nodes:  # in the config but not (or no longer) in Ray: known, and dead
        by_name.setdefault(node.name, NodeSlot(node.name, "", NODE_RESOURCE.format(node.name), 0, False))
    if not any(slot.alive for slot in by_name.values()):
        raise PoolError("no grid nodes in this Ray cluster (none has a grid-node-* resource)")
    head = config.head.name if config.head.name in by_name else next(iter(by_name))
    return list(by_name.values()), config.backend.namespace, head
