"""Asking a cluster's GCS which nodes are alive and what they hold, from this process, without a driver.

`ray status` lags the GCS and hangs about 40 s when nothing listens (TESTBED.md section 2), and
Ray's GCS client blocks as long, so every question starts with a plain TCP connect with a short
timeout; only a port that answers is asked, with the cluster's token.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from grid_core import types  # by attribute: the status records load when first used
from grid_core.errors import GridError
from grid_core.record import record
from grid_plugin_ray_backend.layout import NODE_RESOURCE

PREFIX = NODE_RESOURCE.format("")
ALIVE = 0  # GcsNodeInfo.GcsNodeState.ALIVE
GCS_TIMEOUT = 10.0


class GcsError(GridError):
    """The GCS could not be asked: not listening, or it refused grid's token."""


@record
class RayNode:
    """One node as the GCS sees it."""

    node_id: str
    grid_name: str | None  # from its grid-node-<name> resource; None for nodes grid did not start
    address: str
    alive: bool
    is_head: bool
    started_ms: int
    total: Mapping[str, float]
    available: Mapping[str, float]


def port_open(address: str, timeout: float = 1.5) -> bool:
    """Whether something accepts TCP connections at host:port."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        socket.inet_pton(family, host)
    except OSError:  # a name: create_connection looks it up
        family = socket.AF_UNSPEC
    try:
        if family == socket.AF_UNSPEC:
            with socket.create_connection((host, int(port)), timeout=timeout):
                return True
        # An address (the GCS's always is): connected without getaddrinfo, whose idna codec costs a
        # status command 1 ms to import.
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect((host, int(port)))
            return True
    except (OSError, ValueError):
        return False


def import_ray() -> None:
    """Import what read_nodes needs (ahead of time, from a thread)."""
    import ray._private.state
    import ray._raylet  # noqa: F401


def read_nodes(address: str) -> list[RayNode]:
    """Every node the GCS at host:port knows, alive or dead. The token must be set up already."""
    if not port_open(address):
        raise GcsError(f"no Ray cluster answers at {address}")
    from ray._private.state import GlobalState
    from ray._raylet import GcsClient, GcsClientOptions  # type: ignore[attr-defined]
    from ray.exceptions import AuthenticationError, RpcError

    state = GlobalState()
    state._initialize_global_state(GcsClientOptions.create(address, None, allow_cluster_id_nil=True,
                                                           fetch_cluster_id_if_nil=False))
    try:
        infos = GcsClient(address=address).get_all_node_info(timeout=GCS_TIMEOUT)
        available = state.available_resources_per_node()
    except AuthenticationError:
        raise GcsError(f"the Ray cluster at {address} refused grid's token (another cluster on that port?)") from None
    except (RpcError, ConnectionError, RuntimeError) as exc:
        raise GcsError(f"the Ray cluster at {address} did not answer: {exc}") from None
    finally:
        state.disconnect()
    nodes = []
    for node_id, info in infos.items():
        total = {str(k): float(v) for k, v in info.resources_total.items()}
        names = [k[len(PREFIX):] for k in total if k.startswith(PREFIX)]
        hex_id = node_id.hex()
        nodes.append(RayNode(
            node_id=hex_id,
            grid_name=names[0] if names else None,
            address=info.node_manager_address,
            alive=info.state == ALIVE,
            is_head=bool(info.is_head_node),
            started_ms=int(info.start_time_ms),
            total=total,
            available={k: float(v) for k, v in available.get(hex_id, {}).items()},
        ))
    return nodes


def alive_by_name(nodes: list[RayNode]) -> dict[str, RayNode]:
    """The alive node behind each grid node name: the newest, because the GCS lists a killed
    raylet as alive until its health checks fail (tens of seconds), beside its replacement."""
    out: dict[str, RayNode] = {}
    for node in sorted(nodes, key=lambda n: n.started_ms):
        if node.alive and node.grid_name:
            out[node.grid_name] = node
    return out


class Listing:
    """The GCS's nodes for every thread that waits on it: one listing a round, however many wait
    (each `cluster start` worker waits for its node; a listing each was N listings of N nodes)."""

    def __init__(self, address: str, interval: float = 0.1) -> None:
        self.address, self.interval = address, interval
        self.lock = threading.Lock()
        self.when, self.nodes = -interval, list[RayNode]()

    def __call__(self) -> list[RayNode]:
        with self.lock:
            if time.monotonic() - self.when >= self.interval:
                self.nodes = read_nodes(self.address)
                self.when = time.monotonic()
            return self.nodes


def wait_for(address: str, ready: Callable[[list[RayNode]], Any], timeout: float, interval: float = 0.1,
             listing: Callable[[], list[RayNode]] | None = None) -> Any:
    """Ask the GCS (or `listing`) until `ready(nodes)` returns something truthy; that value, or
    GcsError at the timeout."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            found = ready(listing() if listing else read_nodes(address))
            if found:
                return found
            last = "not joined yet"
        except GcsError as exc:
            if "refused grid's token" in str(exc):
                raise
            last = str(exc)
        if time.monotonic() >= deadline:
            raise GcsError(f"gave up after {timeout:.0f} s: {last}")
        time.sleep(interval)


def resource_usage(node: RayNode) -> dict[str, types.ResourceUse]:
    """The node's logical resources (without Ray's and grid's naming resources, nor the ones Ray
    makes for each reservation: what a reservation holds is used in its resource): total,
    available, used."""
    import re

    reservation = re.compile(r"_group_(\d+_)?[0-9a-f]{16,}$")  # CPU_group_<id>, bundle_group_0_<id>
    out = {}
    for name, total in sorted(node.total.items()):
        if name.startswith(("node:", PREFIX)) or reservation.search(name):
            continue
        available = node.available.get(name, 0.0) if node.alive else 0.0
        out[name] = types.ResourceUse(total=total, available=available, used=max(0.0, total - available))
    return out
