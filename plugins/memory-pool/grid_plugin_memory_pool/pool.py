"""Named objects in Ray's object store, owned by detached actors that outlive any CLI.

Two kinds of actor, both detached in grid's namespace:
- one `holder` per node, pinned there: it owns the node's objects (a put on that node names it
  as owner, so the data outlives the process that wrote it) and writes data sent from elsewhere;
- one `directory` on the head: key -> node, size, times and the object reference, with per-node
  capacity. It is one actor, so a put is checked, evicted for and committed in one step: an entry
  appears only once its data is stored, and a refused put leaves the pool as it was.
"""

from __future__ import annotations

import pickle
import re
import time
from collections.abc import Iterable
from typing import Any

import attrs
import numpy
import ray

from grid_core.errors import GridError

KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$")
DIRECTORY = "grid-pool-directory"
HOLDER = "grid-pool-holder-{node}"
GET_TIMEOUT = 60.0
PRECHECK_BYTES = 1 << 20


class PoolError(GridError):
    """A pool operation that cannot be done; the message says why."""


def check_key(key: str) -> str:
    if not isinstance(key, str) or not KEY.match(key):
        raise PoolError(
            f"invalid key {key!r}: 1-255 characters, starting with a letter or digit, then letters, digits and ._:/@+-"
        )
    return key


def size_of(obj: Any) -> int:
    """Bytes the object takes in the store (close enough for capacity accounting)."""
    if isinstance(obj, bytes | bytearray):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    return len(pickle.dumps(obj, protocol=5))


@attrs.define
class Entry:
    key: str
    node: str
    node_id: str
    size: int
    created: float
    last_read: float
    refs: list[Any]  # [ObjectRef, kind?]: a list, so Ray passes the reference and not the value

    def public(self, lost: bool) -> dict[str, Any]:
        return {"key": self.key, "node": self.node, "size": self.size, "created": self.created,
                "last_read": self.last_read, "state": "lost" if lost else "ok"}


@ray.remote(num_cpus=0, max_restarts=0)
class Holder:
    """Owns the objects stored on its node."""

    def ready(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def store(self, value: Any) -> list[Any]:
        return [ray.put(value)]


@ray.remote(num_cpus=0, max_restarts=0)
class Directory:
    """Every entry, and each node's capacity. One actor: its methods run one at a time."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.capacity: dict[str, int] = {}

    def set_capacity(self, capacity: dict[str, int]) -> None:
        self.capacity.update(capacity)

    def _dead_node_ids(self) -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if not n["Alive"]}

    def used(self, node: str) -> int:
        return sum(e.size for e in self.entries.values() if e.node == node)

    def make_room(self, key: str, node: str, size: int, replace: bool, evict: str | None) -> list[str]:
        """Check a put before its data moves; returns keys that would be evicted. Changes nothing."""
        if key in self.entries and not replace:
            raise PoolError(f"key {key!r} already exists on node {self.entries[key].node}; pass --replace")
        capacity = self.capacity.get(node)
        if capacity is None:
            raise PoolError(f"node {node!r} has no pool capacity set")
        if size > capacity:
            raise PoolError(f"{size} bytes do not fit in node {node}'s pool capacity of {capacity} bytes")
        old = self.entries.get(key)
        free = capacity - self.used(node) + (old.size if old and old.node == node else 0)
        victims: list[str] = []
        if size > free:
            if evict != "lru":
                raise PoolError(f"node {node} is full: {size} bytes asked, {free} of {capacity} free; "
                                "remove entries, choose another --node, or pass --evict lru")
            for e in sorted((e for e in self.entries.values() if e.node == node and e.key != key),
                            key=lambda e: e.last_read):
                if free >= size:
                    break
                victims.append(e.key)
                free += e.size
        return victims

    def commit(self, key: str, node: str, node_id: str, size: int, refs: list[Any], replace: bool,
               evict: str | None) -> list[str]:
        """Add the entry (evicting first if allowed), or raise and leave everything as it was."""
        victims = self.make_room(key, node, size, replace, evict)
        for victim in victims:
            del self.entries[victim]
        now = time.time()
        self.entries[key] = Entry(key, node, node_id, size, now, now, refs)
        return victims

    def lookup(self, key: str) -> tuple[str, bool, list[Any]]:
        """(node, lost, [ref]) for a key; marks it read."""
        entry = self.entries.get(key)
        if entry is None:
            raise PoolError(f"no entry named {key!r} in the pool")
        entry.last_read = time.time()
        return entry.node, entry.node_id in self._dead_node_ids(), entry.refs

    def delete(self, key: str) -> None:
        if self.entries.pop(key, None) is None:
            raise PoolError(f"no entry named {key!r} in the pool")

    def list(self) -> list[dict[str, Any]]:
        dead = self._dead_node_ids()
        return [e.public(e.node_id in dead) for e in sorted(self.entries.values(), key=lambda e: e.key)]

    def stats(self) -> dict[str, dict[str, int]]:
        return {node: {"used": self.used(node), "capacity": cap, "entries":
                       sum(1 for e in self.entries.values() if e.node == node)}
                for node, cap in sorted(self.capacity.items())}


def call(ref: Any, timeout: float | None = GET_TIMEOUT) -> Any:
    """ray.get that turns a PoolError raised inside an actor back into a plain PoolError."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, PoolError):
            raise PoolError(str(exc.cause)) from None
        raise
    except ray.exceptions.GetTimeoutError:
        raise PoolError(f"the pool did not answer within {timeout} s") from None


@attrs.frozen
class NodeSlot:
    """A grid node as the pool sees it: its Ray node id, its pin resource and its capacity."""

    name: str
    node_id: str
    resource: str
    capacity: int
    alive: bool


class Pool:
    """Named data in the cluster's memory. `Pool.connect()` from any process on any node."""

    def __init__(self, nodes: Iterable[NodeSlot], namespace: str, head: str) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.namespace = namespace
        self.head = head
        self.directory = self._actor(Directory, DIRECTORY, head)
        self._holders: dict[str, Any] = {}
        call(self.directory.set_capacity.remote({n.name: n.capacity for n in self.nodes.values() if n.alive}))

    @classmethod
    def connect(cls, config: Any = None, capacity_share: float | None = None) -> Pool:
        """Attach to the running cluster of `config` (default: grid's config lookup)."""
        from grid_plugin_memory_pool.cluster import connect

        return connect(config, capacity_share)

    def _actor(self, cls: Any, name: str, node: str) -> Any:
        slot = self.nodes[node]
        return cls.options(name=name, namespace=self.namespace, lifetime="detached", get_if_exists=True,
                           resources={slot.resource: 0.001}).remote()

    def _holder(self, node: str, fresh: bool = False) -> Any:
        """The node's holder; looking a named actor up costs a GCS round trip, so once per node."""
        if fresh or node not in self._holders:
            self._holders[node] = self._actor(Holder, HOLDER.format(node=node), node)
        return self._holders[node]

    def _slot(self, node: str | None) -> NodeSlot:
        if node is None:
            here = ray.get_runtime_context().get_node_id()
            return next((s for s in self.nodes.values() if s.node_id == here), self.nodes[self.head])
        if node not in self.nodes:
            raise PoolError(f"no node named {node!r} (nodes: {', '.join(self.nodes)})")
        slot = self.nodes[node]
        if not slot.alive:
            raise PoolError(f"node {node!r} is not alive in the cluster; choose another --node")
        return slot

    def put(self, key: str, obj: Any, node: str | None = None, *, replace: bool = False,
            evict: str | None = None) -> list[str]:
        """Store obj under key on node (default: this process's node); returns evicted keys."""
        check_key(key)
        if evict not in (None, "lru"):
            raise PoolError(f"unknown eviction policy {evict!r} (use lru)")
        slot = self._slot(node)
        size = size_of(obj)
        if size >= PRECHECK_BYTES:  # refuse before moving much data; commit checks again anyway
            call(self.directory.make_room.remote(key, slot.name, size, replace, evict))
        holder = self._holder(slot.name)
        # The holder writes the object itself, so that it owns it and the data outlives this
        # process (Ray 2.56 removed ray.put's _owner). Bytes travel as a uint8 view so that the
        # holder reads them without a copy; get turns them back into bytes.
        payload = numpy.frombuffer(obj, dtype=numpy.uint8) if isinstance(obj, bytes) else obj
        try:
            refs = call(holder.store.remote(payload))
        except ray.exceptions.RayActorError:  # the node restarted since: ask for its new holder once
            refs = call(self._holder(slot.name, fresh=True).store.remote(payload))
        if isinstance(obj, bytes):
            refs = [*refs, "bytes"]
        return list(call(self.directory.commit.remote(key, slot.name, slot.node_id, size, refs, replace, evict)))

    def get(self, key: str, timeout: float = GET_TIMEOUT) -> Any:
        """The object stored under key; numpy arrays come back without a copy on the same node."""
        check_key(key)
        node, lost, refs = call(self.directory.lookup.remote(key))
        if lost:
            raise PoolError(f"entry {key!r} is lost: its node {node} has left the cluster")
        try:
            value = ray.get(refs[0], timeout=timeout)
            return value.tobytes() if refs[1:] == ["bytes"] else value
        except (ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError, ray.exceptions.GetTimeoutError) as exc:
            raise PoolError(f"entry {key!r} on node {node} cannot be read: {type(exc).__name__}") from None

    def delete(self, key: str) -> None:
        check_key(key)
        call(self.directory.delete.remote(key))

    def keys(self) -> list[str]:
        return [e["key"] for e in self.list()]

    def list(self) -> list[dict[str, Any]]:
        return list(call(self.directory.list.remote()))

    def stats(self) -> dict[str, dict[str, int]]:
        return dict(call(self.directory.stats.remote()))
