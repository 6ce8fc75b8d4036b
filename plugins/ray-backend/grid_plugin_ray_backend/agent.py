"""A node's agent: a small actor pinned to each worker that reads its own node with grid's
metrics sources and sends the readings to the service on the head.

On the node, the sources see the node's own processes, so the owner's load is told apart from
the cluster's there too (the psutil source, with the markers `ray start` set), and the
controller no longer reads every node over SSH each interval. The service answers each reading
with how long to wait for the next: one interval while offload is on or someone is watching,
longer while nobody needs them. Ray restarts an agent with its node.

Growing to many nodes: each reading is one small actor call to the head, spread over the
interval; benchmarks/offload.py measures the controller's cost per interval with 1,000 nodes'
readings.
"""

from __future__ import annotations

import threading
import time
from typing import Any

AGENT = "grid-agent-{}"
FIRST_WAIT = 1.0


class NodeAgent:
    def __init__(self, config_data: dict[str, Any], node: str, namespace: str) -> None:
        self.config_data, self.node, self.namespace = config_data, node, namespace
        threading.Thread(target=self._loop, name=f"grid-agent-{node}", daemon=True).start()

    def ready(self) -> str:
        """The Ray node it runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def _loop(self) -> None:
        import attrs
        import cattrs
        import ray

        from grid_core import plugins
        from grid_core.cluster import Cluster
        from grid_core.config import structure
        from grid_core.gpu_claims import with_claims
        from grid_plugin_ray_backend.layout import SERVICE
        from grid_plugin_ray_backend.rules import CONFIG_SOURCE

        config = structure(self.config_data, CONFIG_SOURCE)
        here = attrs.evolve(config.node(self.node), transport="local")  # read where it runs
        cluster = Cluster(attrs.evolve(config, nodes=[here if n.name == self.node else n for n in config.nodes]),
                          plugins.host())
        wait = FIRST_WAIT
        while True:
            time.sleep(wait)
            try:
                reading = with_claims(cluster.sample([here])[self.node].value, config.name, here.gpu_total)
                service: Any = ray.get_actor(SERVICE, namespace=self.namespace)
                wait = float(ray.get(service.report.remote(self.node, cattrs.unstructure(reading)), timeout=30))
            except Exception:  # the service restarting, a reading that failed: try again later
                wait = 5.0
