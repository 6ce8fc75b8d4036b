"""The `memory` request of the grid service: the pool's put, get, ls, rm and stats, answered on
the head for a CLI anywhere (the `grid_service_ops` hook). Data travels in the request's and the
answer's data frames; the pool's own guarantees (capacity checked before the data moves, nothing
half-written, LRU) are Pool's."""

from __future__ import annotations

import threading
from typing import Any

import cattrs

from grid_plugin_memory_pool.pool import Pool, PoolError, check_key

_lock = threading.Lock()  # a Pool is not thread-safe, and the service serves each client in a thread
_pools: dict[tuple[int, tuple[str, ...]], Pool] = {}


def _pool(config: Any) -> Pool:
    """The service's Pool for the config in force, made again when the cluster's nodes change."""
    import ray

    alive = tuple(sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]))
    key = (id(config), alive)
    if key not in _pools:
        _pools.clear()
        _pools[key] = Pool.connect(config)
    return _pools[key]


def _mine(client: Any, pool: Pool, key: str, what: str) -> None:
    """An entry is removed or replaced only by who put it, the cluster's owner and its admins."""
    if getattr(client, "manages", True):
        return
    entry = next((e for e in pool.list() if e.key == key), None)
    if entry is not None and entry.owner and entry.owner != client.name:
        raise PoolError(f"{client.name} may not {what} entry {key!r}: it is {entry.owner}'s, and only its owner, "
                        "the cluster's owner and [access] admins may")


def handle(client: Any, config: Any, action: str, key: str | None = None, node: str | None = None,
           replace: bool = False, evict: str | None = None) -> int:
    if key is not None:
        check_key(key)
    if action == "put":
        data = client.read_data()  # before the lock: a slow upload must not stall the others
        with _lock:
            pool = _pool(config)
            if replace:
                _mine(client, pool, str(key), "replace")
            evicted = pool.put(str(key), data, node=node, replace=replace, evict=evict,
                               owner=getattr(client, "name", ""))
        client.frame("result", {"evicted": evicted, "size": len(data)})
        return 0
    with _lock:
        pool = _pool(config)
        if action == "get":
            value = pool.get(str(key))
        elif action == "ls":
            answer: Any = cattrs.unstructure(pool.list())
        elif action == "rm":
            _mine(client, pool, str(key), "remove")
            pool.delete(str(key))
            answer = None
        elif action == "stats":
            answer = pool.stats()
        else:
            raise PoolError(f"unknown memory request {action!r}")
    if action == "get":
        if isinstance(value, memoryview):
            value = value.tobytes()
        if not isinstance(value, bytes | bytearray):
            raise PoolError(f"entry {key!r} holds a {type(value).__name__}, not bytes: "
                            "read it from Python with Pool.get")
        client.send_data(bytes(value))
        answer = {"size": len(value)}
    client.frame("result", answer)
    return 0
