"""`grid cluster status`'s rows (grid_core.types.NodeStatus): each node as its transport and metrics
sources show it, joined with the compute engine's view. The CLI builds them, and so does the grid
service for a caller by its kept shortcut (grid_core/shortcut.py), from the caller's config."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from grid_core.types import NodeStatus

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig
    from grid_core.types import EngineNode


def node_rows(nodes: Sequence[NodeConfig], known: Mapping[str, EngineNode], cluster: Cluster | None = None,
              ) -> list[NodeStatus]:
    """One row per node: what the transport reaches and what the metrics sources read. A node in
    `known` is one the cluster read lately (its agent, or the service on the head): its row takes
    that reading, its age and who took it. The others are read through `cluster`'s transports."""
    from grid_core import gpus

    unread = [n for n in nodes if n.name not in known]
    readings = cluster.sample(unread) if unread and cluster is not None else {}
    rows = []
    for node in nodes:
        m, age, by, error = None, None, None, None
        if node.name in known:
            m, age, by = known[node.name].metrics, known[node.name].metrics_age, known[node.name].metrics_from
        else:
            out = readings[node.name]
            m, error = out.value, out.error
        models, note = gpus.read_or_declared(node, m)
        rows.append(NodeStatus(
            name=node.name,
            host=node.host,
            role="head" if node.is_head else "worker",
            transport=node.transport_name,
            reachable=error is None,
            error=error,
            cpus=node.cpu_count if node.cpu_count is not None else (m.cpu_count if m else None),
            gpus=node.gpu_total if node.gpu_total is not None else (len(m.gpus) if m else None),
            memory_bytes=int(node.memory_gb * 2**30) if node.memory_gb is not None
            else (m.memory_total_bytes if m else None),
            cpu_percent=m.cpu_percent if m else None,
            memory_percent=m.memory_percent if m else None,
            swap_percent=m.swap_percent if m else None,
            load1=m.load1 if m else None,
            gpu_percent=m.gpu_percent if m else None,
            metrics_source=m.source if m else None,
            metrics_age=age,
            gpu_models=models,
            gpu_note=note,
            gpu_claims=m.gpu_claims if m else (),
            metrics_from=by,
        ))
    return rows


def merge_backend(rows: list[NodeStatus], engine: dict[str, EngineNode] | None, error: str | None) -> list[NodeStatus]:
    """The rows with the engine's view added: alive, and its CPUs, GPUs and memory where it has them."""
    merged = []
    for row in rows:
        view = (engine or {}).get(row.name)
        if view is None:  # the engine could not be asked, or does not know the node
            merged.append(attrs.evolve(row, alive=None, engine_error=error))
            continue
        merged.append(attrs.evolve(
            row, alive=view.alive, resources=view.resources, address=view.address, node_id=view.node_id,
            cpus=row.cpus if view.cpus is None else view.cpus, gpus=row.gpus if view.gpus is None else view.gpus,
            memory_bytes=row.memory_bytes if view.memory_bytes is None else view.memory_bytes,
            engine_error=view.error or error, service_plugins=view.service_plugins))
    return merged
