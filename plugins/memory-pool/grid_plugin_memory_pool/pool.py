"""Named objects in Ray's object store, owned by detached actors that outlive any CLI.

Two kinds of actor, both detached in grid's namespace:
- one `holder` per node, pinned there: it owns the node's objects (a put on that node names it
  as owner, so the data outlives the process that wrote it) and writes data sent from elsewhere;
- one `directory` on the head: key -> node, size, times and the object reference, with per-node
  capacity. A plain actor, so each call runs whole: a put is checked, evicted for and committed
  in one step, an entry appears only once its data is stored, and a refused put leaves the pool
  as it was. Values up to INLINE_BYTES travel in the directory call itself and stay there, so a
  small put or first read is one call, as a bare actor call is.

The directory's own `feed` (an asyncio actor beside it) numbers every change. Each `Pool` keeps
what it has read (the reference, and a read-only array's view of the store) and asks the
directory again only after the feed names the key: a repeated get costs what a `ray.get` of a
held reference costs, not a round trip to the head.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import pickle
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from typing import Any

import attrs
import numpy
import ray

from grid_core.types import PoolEntry
from grid_plugin_memory_pool.cluster import NodeSlot, attach
from grid_plugin_memory_pool.keys import PoolError, check_key

__all__ = ["Pool", "PoolError", "check_key"]

DIRECTORY = "grid-pool-directory"
HOLDER = "grid-pool-holder-{node}"
GET_TIMEOUT = 60.0
PRECHECK_BYTES = 64 << 20  # above this, ask whether a put fits before moving its data
INLINE_BYTES = 64 << 10  # up to this, a value travels in the directory call and stays there
NODE_POLL_S = 1.0  # how often the directory looks for dead nodes while caches are listening
CATCH_UP_S = 5.0  # the longest a get waits for a change notice it knows is coming
FEED_WAIT_S = 30.0  # a change feed answers "nothing" after this, so a vanished Pool's call ends
READS_FLUSH_S = 1.0  # how long a Pool may keep cached reads before telling the directory (LRU)
CHANGE_LOG = 4096  # changes kept for caches that are behind; further behind, they drop everything


def check_fits(size: int, node: str, capacity: int) -> None:
    if size > capacity:
        raise PoolError(f"{size} bytes do not fit in node {node}'s pool capacity of {capacity} bytes")


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
    refs: list[Any]  # [ObjectRef?, kind?]: a list, so Ray passes the reference and not the value
    inline: bytes | None = None  # a small value the directory keeps itself (pickled unless kind is "bytes")
    owner: str = ""  # who put it, where the grid service knows (a CLI's user); "" from a Python program

    def record(self, lost: bool) -> PoolEntry:
        """What `ls` shows of it: `lost` once its node has left the cluster."""
        return PoolEntry(key=self.key, node=self.node, size=self.size, created=self.created,
                         last_read=self.last_read, state="lost" if lost else "ok", owner=self.owner)


@ray.remote(num_cpus=0, max_restarts=0)
class Holder:
    """Owns the objects stored on its node."""

    def ready(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def store(self, value: Any) -> list[Any]:
        return [ray.put(value)]


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4096)  # type: ignore[call-overload]
class Feed:
    """The directory's numbered log of which keys changed, for caching Pools to wait on.

    An asyncio actor, so that every Pool can keep a `changes` call waiting here without holding a
    thread. The directory, a plain actor (a call to it costs a third less), publishes each change
    here as it makes it; while Pools wait, the feed asks it now and then to look for dead nodes.
    """

    def __init__(self, directory: Any) -> None:
        self.directory = directory
        self.version = 0
        self.log: deque[tuple[int, str]] = deque(maxlen=CHANGE_LOG)
        self.changed = asyncio.Event()
        self.early: dict[int, list[str]] = {}  # changes that arrived before the ones numbered below them
        self.asked = 0.0

    async def publish(self, version: int, keys: list[str]) -> None:
        self.early[version] = keys
        while self.version + 1 in self.early:
            self.version += 1
            self.log.extend((self.version, key) for key in self.early.pop(self.version))
        self.changed.set()
        self.changed = asyncio.Event()

    async def changes(self, since: int) -> tuple[int, list[str] | None]:
        """Wait until something changes after version `since`; the keys, or None for "all"."""
        give_up = time.monotonic() + FEED_WAIT_S
        while self.version <= since:
            if time.monotonic() > give_up:
                return since, []
            try:
                await asyncio.wait_for(self.changed.wait(), NODE_POLL_S)
            except TimeoutError:
                if time.monotonic() - self.asked >= NODE_POLL_S:
                    self.asked = time.monotonic()
                    self.directory.check_dead.remote()  # a lost node's entries count as changed
        if not self.log or self.log[0][0] > since + 1:
            return self.version, None
        return self.version, sorted({key for version, key in self.log if version > since})


@ray.remote(num_cpus=0, max_restarts=0)
class Directory:
    """Every entry and each node's capacity. A plain actor: each call runs whole before the next.

    Answers that reflect the entries carry the version they were read at; each change is
    published to the directory's Feed under its version.
    """

    def __init__(self) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.entries: dict[str, Entry] = {}
        self.capacity: dict[str, int] = {}
        self.version = 0
        self.dead: set[str] = set()
        self.dead_checked = 0.0
        self.notices: queue.SimpleQueue[tuple[int, list[str]]] = queue.SimpleQueue()
        threading.Thread(target=self._publish, name="grid-pool-feed", daemon=True).start()
        here = ray.get_runtime_context().get_node_id()
        self.feed = Feed.options(  # type: ignore[attr-defined]
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(
            ray.get_runtime_context().current_actor)

    def set_capacity(self, capacity: dict[str, int]) -> tuple[int, Any]:
        """Capacities of the nodes a Pool sees; the version now and the feed to follow."""
        self.capacity.update(capacity)
        return self.version, [self.feed]  # in a list: Ray passes the handle

    def _bump(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.version += 1
            self.notices.put((self.version, keys))  # published by _publish, after the call answers

    def _publish(self) -> None:
        """Send each change to the feed, from a thread of its own: a submission costs the call
        that made the change a fifth of its time otherwise (the feed reorders what comes early)."""
        while True:
            version, keys = self.notices.get()
            self.feed.publish.remote(version, keys)

    def _dead_node_ids(self, max_age: float = 0.0) -> set[str]:
        """Ray node ids that have died; entries on a newly dead node count as changed."""
        if time.monotonic() - self.dead_checked >= max_age:
            self.dead_checked = time.monotonic()
            dead = {n["NodeID"] for n in ray.nodes() if not n["Alive"]}
            self._bump(e.key for e in self.entries.values() if e.node_id in dead - self.dead)
            self.dead = dead
        return self.dead

    def check_dead(self) -> None:
        self._dead_node_ids(max_age=NODE_POLL_S)

    def used(self, node: str) -> int:
        return sum(e.size for e in self.entries.values() if e.node == node)

    def make_room(self, key: str, node: str, size: int, replace: bool, evict: str | None) -> list[str]:
        """Check a put before its data moves; returns keys that would be evicted. Changes nothing."""
        return self._make_room(key, node, size, replace, evict)

    def _make_room(self, key: str, node: str, size: int, replace: bool, evict: str | None) -> list[str]:
        if key in self.entries and not replace:
            raise PoolError(f"key {key!r} already exists on node {self.entries[key].node}; pass --replace")
        capacity = self.capacity.get(node)
        if capacity is None:
            raise PoolError(f"node {node!r} has no pool capacity set")
        check_fits(size, node, capacity)
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

    def commit(self, stored: list[Any],
               put: tuple[str, str, str, int, list[str], bool, str | None, bytes | None, str]) -> tuple[int, list[str]]:
        """Add the entry (evicting first if allowed), or raise and leave everything as it was.

        `stored` is the holder's answer: Ray waits for it before this runs. `put` is the rest,
        (key, node, node_id, size, kind, replace, evict, inline, owner), as one argument: Ray serializes
        each argument apart, and eight added 0.3 ms to a small put's 1 ms where one tuple adds 0.1.
        A small value comes `inline` instead of stored and stays here; it still belongs to its node,
        and is lost with it."""
        key, node, node_id, size, kind, replace, evict, inline, owner = put
        victims = self._make_room(key, node, size, replace, evict)
        for victim in victims:
            del self.entries[victim]
        now = time.time()
        self.entries[key] = Entry(key, node, node_id, size, now, now, [*stored, *kind], inline, owner)
        self._bump([key, *victims])
        return self.version, victims

    def lookup(self, key: str) -> tuple[int, tuple[str, bool, list[Any], bytes | None]]:
        """(node, lost, [ref?, kind?], inline value) for a key; marks it read."""
        entry = self.entries.get(key)
        if entry is None:
            raise PoolError(f"no entry named {key!r} in the pool")
        entry.last_read = time.time()
        lost = entry.node_id in self._dead_node_ids(max_age=NODE_POLL_S / 2)
        return self.version, (entry.node, lost, entry.refs, entry.inline)

    def touch(self, reads: dict[str, float]) -> None:
        """Reads a Pool answered from its cache, for LRU and `ls`."""
        for key, when in reads.items():
            entry = self.entries.get(key)
            if entry is not None and when > entry.last_read:
                entry.last_read = when

    def delete(self, key: str) -> tuple[int, None]:
        if self.entries.pop(key, None) is None:
            raise PoolError(f"no entry named {key!r} in the pool")
        self._bump([key])
        return self.version, None

    def list(self) -> tuple[int, list[PoolEntry]]:
        dead = self._dead_node_ids()
        return self.version, [e.record(e.node_id in dead) for e in sorted(self.entries.values(), key=lambda e: e.key)]

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


@attrs.define
class Cached:
    """What a Pool remembers of an entry it has read."""

    node: str
    ref: Any
    as_bytes: bool
    array: Any = None  # the read-only numpy view of the store, once read
    inline: bytes | None = None  # a small value the directory answered with itself


class Pool:
    """Named data in the cluster's memory. `Pool.connect()` from any process on any node."""

    def __init__(self, nodes: Iterable[NodeSlot], namespace: str, head: str) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.namespace = namespace
        self.head = head
        self.here = ray.get_runtime_context().get_node_id()
        self.directory = self._actor(Directory, DIRECTORY, head)
        self._holders: dict[str, Any] = {}
        self._cache: dict[str, Cached] = {}
        self._reads: dict[str, float] = {}
        self._reads_sent = time.monotonic()
        # The cache is up to date with directory version `_version`; `_seen` is the newest version
        # any answer has shown this Pool. The feed is opened with the first cached entry.
        self._version, (self.feed,) = call(self.directory.set_capacity.remote(
            {n.name: n.capacity for n in self.nodes.values() if n.alive}))
        self._seen = self._version
        self._feed: Any = None
        self._notice: concurrent.futures.Future[Any] = concurrent.futures.Future()  # the feed's answer
        self._feed_broken = False
        _open_pools.add(self)

    @classmethod
    def connect(cls, config: Any = None, capacity_share: float | None = None) -> Pool:
        """Attach to the running cluster of `config` (default: grid's config lookup); reuses this
        process's Ray connection if it has one."""
        return cls(*attach(config, capacity_share))

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
            return next((s for s in self.nodes.values() if s.node_id == self.here), self.nodes[self.head])
        if node not in self.nodes:
            raise PoolError(f"no node named {node!r} (nodes: {', '.join(self.nodes)})")
        slot = self.nodes[node]
        if not slot.alive:
            raise PoolError(f"node {node!r} is not alive in the cluster; choose another --node")
        return slot

    def _ask(self, ref: Any) -> Any:
        """A directory answer's result, noting the version it was read at."""
        version, result = call(ref)
        self._seen = max(self._seen, version)
        return result

    def _catch_up(self) -> None:
        """Forget cached entries that changed since the cache was last up to date.

        A notice that has arrived costs a local check, no round trip. When this Pool has already
        seen a newer version (its own put, an `ls` that found a node gone), it waits for the
        notice, so that a get never contradicts what this Pool was told.
        """
        while self._feed is not None:
            behind = self._version < self._seen
            notice = self._notice  # completed by Ray's own thread: checking it costs no call into Ray
            if not notice.done():
                if not behind:
                    return
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    notice.result(timeout=CATCH_UP_S)
                if not notice.done():  # no notice in time: start again from an empty cache
                    self._cache.clear()
                    self._seen = self._version
                    return
            try:
                self._version, keys = notice.result()
            except ray.exceptions.RayError:  # the directory is gone: nothing cached can be trusted
                self._feed, self._feed_broken = None, True
                self._cache.clear()
                return
            for key in list(self._cache) if keys is None else keys:
                self._cache.pop(key, None)
            self._listen()
            if self._version >= self._seen:
                return

    def _listen(self) -> None:
        """Ask the feed for the changes after the cache's version."""
        self._feed = self.feed.changes.remote(self._version)
        self._notice = self._feed.future()

    def _remember(self, key: str, entry: Cached) -> None:
        """Cache an entry just read, opening the change feed from the version it was read at."""
        if self._feed_broken:
            return
        if self._feed is None:
            self._version = self._seen
            self._listen()
        self._cache[key] = entry

    def _send_reads(self, wait: bool = False) -> None:
        """Tell the directory about reads answered from the cache; calls made after this see them."""
        self._reads_sent = time.monotonic()
        if self._reads:
            reads, self._reads = self._reads, {}
            sent = self.directory.touch.remote(reads)
            if wait:
                ray.wait([sent], timeout=5)

    def put(self, key: str, obj: Any, node: str | None = None, *, replace: bool = False,
            evict: str | None = None, owner: str = "") -> list[str]:
        """Store obj under key on node (default: this process's node); returns evicted keys."""
        check_key(key)
        if evict not in (None, "lru"):
            raise PoolError(f"unknown eviction policy {evict!r} (use lru)")
        slot = self._slot(node)
        size = size_of(obj)
        check_fits(size, slot.name, slot.capacity)  # here, before any round trip; the directory checks again
        self._send_reads()
        if size >= PRECHECK_BYTES:  # refuse before moving much data; commit checks again anyway
            call(self.directory.make_room.remote(key, slot.name, size, replace, evict))
        # The holder writes the object itself, so that it owns it and the data outlives this
        # process (Ray 2.56 removed ray.put's _owner). Bytes travel as a uint8 view so that the
        # holder reads them without a copy; get turns them back into bytes. The commit waits for
        # the store inside Ray, without a round trip back here.
        kind = ["bytes"] if isinstance(obj, bytes) else []
        if size <= INLINE_BYTES:  # one call, as the floor is: the directory keeps it
            raw = isinstance(obj, bytes | bytearray | memoryview)
            kind = ["bytes"] if raw else []
            inline = bytes(obj) if raw else pickle.dumps(obj, protocol=5)
            victims = self._ask(self.directory.commit.remote(
                [], (key, slot.name, slot.node_id, size, kind, replace, evict, inline, owner)))
            for gone in (key, *victims):
                self._cache.pop(gone, None)
            return list(victims)
        payload = numpy.frombuffer(obj, dtype=numpy.uint8) if isinstance(obj, bytes) else obj
        for fresh in (False, True):
            stored = self._holder(slot.name, fresh).store.remote(payload)
            try:
                victims = self._ask(self.directory.commit.remote(
                    stored, (key, slot.name, slot.node_id, size, kind, replace, evict, None, owner)))
                break
            except ray.exceptions.RayActorError:  # the node restarted since: ask for its new holder once
                if fresh:
                    raise
        for gone in (key, *victims):
            self._cache.pop(gone, None)
        return list(victims)

    def get(self, key: str, timeout: float = GET_TIMEOUT) -> Any:
        """The object stored under key; numpy arrays come back without a copy on the same node."""
        check_key(key)
        hit = self._cache.get(key)
        if hit is not None:  # only a cached answer can be stale: a miss asks the directory anyway
            self._catch_up()
            hit = self._cache.get(key)
        if hit is None:
            node, lost, refs, inline = self._ask(self.directory.lookup.remote(key))
            if lost:
                raise PoolError(f"entry {key!r} is lost: its node {node} has left the cluster")
            hit = Cached(node, None, refs == ["bytes"], inline=inline) if inline is not None \
                else Cached(node, refs[0], refs[1:] == ["bytes"])
            self._remember(key, hit)
        else:
            self._reads[key] = time.time()
            if time.monotonic() - self._reads_sent > READS_FLUSH_S:
                self._send_reads()
        if hit.inline is not None:
            return hit.inline if hit.as_bytes else pickle.loads(hit.inline)  # a new copy, as ray.get gives
        value = hit.array
        if value is None:
            try:
                value = ray.get(hit.ref, timeout=timeout)
            except (ray.exceptions.ObjectLostError, ray.exceptions.OwnerDiedError,
                    ray.exceptions.GetTimeoutError) as exc:
                self._cache.pop(key, None)
                raise PoolError(f"entry {key!r} on node {hit.node} cannot be read: {type(exc).__name__}") from None
            if isinstance(value, numpy.ndarray) and not value.flags.writeable:
                hit.array = value  # a view of the store: handing it out again copies nothing
        return value.tobytes() if hit.as_bytes else value

    def delete(self, key: str) -> None:
        check_key(key)
        self._send_reads()
        self._cache.pop(key, None)
        self._ask(self.directory.delete.remote(key))

    def keys(self) -> list[str]:
        return [e.key for e in self.list()]

    def list(self) -> list[PoolEntry]:
        """Every entry, by key."""
        self._send_reads()
        return list(self._ask(self.directory.list.remote()))

    def stats(self) -> dict[str, dict[str, int]]:
        return dict(call(self.directory.stats.remote()))


_open_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    """Send the last cached reads and end the change feeds (they would end by themselves later)."""
    if not ray.is_initialized():
        return
    for pool in list(_open_pools):
        if pool._reads:
            pool._send_reads(wait=True)
        if pool._feed is not None:
            with contextlib.suppress(Exception):  # at exit; the feed ends by itself within FEED_WAIT_S
                ray.cancel(pool._feed)
