"""The memory pool on a real two-node Ray cluster (ray.cluster_utils: distinct hosts do not matter)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from grid_core.config import structure

numpy = pytest.importorskip("numpy")
ray = pytest.importorskip("ray")

from grid_plugin_memory_pool.pool import INLINE_BYTES, Pool, PoolError  # noqa: E402

MIB = 2**20
CONFIG = {"name": "pooltest", "nodes": [{"name": "a", "role": "head", "transport": "local"},
                                        {"name": "b", "transport": "local"},
                                        {"name": "c", "transport": "local"}],
          "plugins": {"memory-pool": {"capacity_gb": {"a": 64 / 1024, "b": 4 / 1024, "c": 64 / 1024}}}}
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 500,
          "health_check_failure_threshold": 3}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Head `a` (this driver's node) and workers `b` and `c`, each pinned by its grid-node resource."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"  # TESTBED.md section 3: never inherit a stray token
    os.environ["RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    store = 200 * MIB
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"grid-node-a": 1000}, "object_store_memory": store,
        "_system_config": HEALTH})
    workers = {name: c.add_node(num_cpus=1, resources={f"grid-node-{name}": 1000}, object_store_memory=store)
               for name in ("b", "c")}
    ray.init(address=c.address, namespace="grid", log_to_driver=False)
    c.wait_for_nodes()
    c.workers = workers
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def pool(cluster: Any) -> Iterator[Pool]:
    p = Pool.connect(structure(CONFIG, "test"))
    yield p
    for entry in p.list():
        p.delete(entry.key)


def test_bytes_put_on_one_node_read_on_another(pool: Pool) -> None:
    data = os.urandom(3 * MIB)
    pool.put("blob", data, node="c")
    assert pool.get("blob") == data
    entry = pool.list()[0]
    assert (entry.key, entry.node, entry.size, entry.state) == ("blob", "c", len(data), "ok")


def test_numpy_round_trip_and_zero_copy_on_the_same_node(pool: Pool) -> None:
    array = numpy.arange(1_000_000, dtype=numpy.float64)
    pool.put("remote-array", array, node="c")
    assert numpy.array_equal(pool.get("remote-array"), array)
    pool.put("local-array", array)  # default: this process's node
    got = pool.get("local-array")
    assert numpy.array_equal(got, array) and not got.flags.writeable  # read-only view of the store


def test_another_process_reads_after_the_writer_exited(pool: Pool, cluster: Any, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, ray
        from grid_core.config import structure
        from grid_plugin_memory_pool import Pool
        ray.init(address={cluster.address!r}, namespace="grid", log_to_driver=False)
        pool = Pool.connect(structure({CONFIG!r}, "t"))
        if sys.argv[1] == "put":
            pool.put("handoff", b"from a process that is gone", node="c")
        else:
            sys.stdout.write(pool.get("handoff").decode())
        """)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([sys.executable, "-c", script, "put"], check=True, env=env, timeout=120)
    got = subprocess.run([sys.executable, "-c", script, "get"], check=True, env=env, timeout=120,
                         capture_output=True, text=True)
    assert got.stdout == "from a process that is gone"
    assert pool.get("handoff") == b"from a process that is gone"


def test_capacity_is_enforced_and_a_refused_put_changes_nothing(pool: Pool) -> None:
    pool.put("one", b"x" * (3 * MIB), node="b")
    with pytest.raises(PoolError, match="node b is full"):
        pool.put("two", b"y" * (2 * MIB), node="b")
    assert pool.keys() == ["one"]
    assert pool.stats()["b"] == {"used": 3 * MIB, "capacity": 4 * MIB, "entries": 1}
    with pytest.raises(PoolError, match="do not fit"):
        pool.put("huge", b"z" * (5 * MIB), node="b", evict="lru")
    assert pool.keys() == ["one"]


def test_lru_eviction_takes_the_least_recently_read(pool: Pool) -> None:
    for key in ("old", "mid", "new"):
        pool.put(key, b"." * MIB, node="b")
        time.sleep(0.01)
    pool.get("old")  # now "mid" is the least recently read
    evicted = pool.put("incoming", b"!" * (3 * MIB), node="b", evict="lru")
    assert evicted == ["mid", "new"]
    assert sorted(pool.keys()) == ["incoming", "old"]


def test_reads_answered_from_the_cache_count_for_lru(pool: Pool) -> None:
    for key in ("first", "second", "third"):
        pool.put(key, b"." * MIB, node="b")
    for key in ("first", "second", "third", "first"):  # the last read comes from this Pool's cache
        assert pool.get(key) == b"." * MIB
    pool.list()  # the directory hears of cached reads with the Pool's next call (or within a second)
    other = Pool.connect(structure(CONFIG, "test"))  # as another process would
    assert other.put("incoming", b"!" * (2 * MIB), node="b", evict="lru") == ["second"]


def test_a_cached_entry_follows_another_process_s_replace_and_rm(pool: Pool, cluster: Any) -> None:
    pool.put("shared", b"v1", node="c")
    assert pool.get("shared") == b"v1" and pool.get("shared") == b"v1"  # the second from the cache
    script = textwrap.dedent(f"""
        import sys, ray
        from grid_core.config import structure
        from grid_plugin_memory_pool import Pool
        ray.init(address={cluster.address!r}, namespace="grid", log_to_driver=False)
        pool = Pool.connect(structure({CONFIG!r}, "t"))
        pool.put("shared", b"v2", node="a", replace=True) if sys.argv[1] == "put" else pool.delete("shared")
        """)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run([sys.executable, "-c", script, "put"], check=True, env=env, timeout=120)
    assert pool.get("shared") == b"v2"  # the writer's notice arrived while it was exiting
    subprocess.run([sys.executable, "-c", script, "rm"], check=True, env=env, timeout=120)
    with pytest.raises(PoolError, match="no entry named 'shared'"):
        pool.get("shared")


@pytest.mark.parametrize(("call", "message"), [
    (lambda p: p.get("missing"), "no entry named 'missing'"),
    (lambda p: p.get("bad key!"), "invalid key"),
    (lambda p: p.put("", b"x"), "invalid key"),
    (lambda p: p.put("k", b"x", node="zz"), "no node named 'zz'"),
    (lambda p: p.delete("missing"), "no entry named 'missing'"),
    (lambda p: p.put("k", b"x", evict="fifo"), "unknown eviction policy"),
])
def test_bad_input_is_a_clear_error(pool: Pool, call: Any, message: str) -> None:
    with pytest.raises(PoolError, match=message):
        call(pool)
    assert pool.keys() == []


def test_replace_is_explicit(pool: Pool) -> None:
    pool.put("k", b"1")
    with pytest.raises(PoolError, match="already exists"):
        pool.put("k", b"2")
    pool.put("k", b"2", replace=True)
    assert pool.get("k") == b"2"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,40}", fullmatch=True), data=st.binary(max_size=4096))
def test_round_trip_of_arbitrary_bytes_and_keys(pool: Pool, key: str, data: bytes) -> None:
    pool.put(key, data, node="c", replace=True)
    assert pool.get(key) == data
    pool.delete(key)


def test_small_values_live_in_the_directory_and_read_back_as_new_copies(pool: Pool) -> None:
    """Up to INLINE_BYTES a put and a first get are one call each; what comes back is the value,
    counted against its node, and a returned object changed by the caller changes nothing stored."""
    used = pool.stats()["c"]["used"]
    pool.put("tiny", b"\x00small\xff", node="c")
    pool.put("config", {"lr": 0.1, "layers": [1, 2]}, node="c")
    fresh = Pool.connect(structure(CONFIG, "test"))
    assert fresh.get("tiny") == b"\x00small\xff"
    first = fresh.get("config")
    first["layers"].append(3)
    assert fresh.get("config") == {"lr": 0.1, "layers": [1, 2]}
    assert pool.stats()["c"]["used"] > used
    entry = next(e for e in pool.list() if e.key == "tiny")
    assert (entry.node, entry.size, entry.state) == ("c", 7, "ok")
    pool.put("tiny", b"v2", node="c", replace=True)
    deadline = time.monotonic() + 10  # another Pool's change reaches this one's cache by its feed, within moments
    while fresh.get("tiny") != b"v2" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fresh.get("tiny") == b"v2"
    for key in ("tiny", "config"):
        pool.delete(key)


def test_a_put_after_a_holder_died_gets_a_new_holder(pool: Pool) -> None:
    padding = b"." * (INLINE_BYTES + 1)  # big enough to go through the holder
    pool.put("before", b"owned by the first holder" + padding, node="a")
    holder = pool._holder("a")
    ray.kill(holder, no_restart=True)  # as when a node's holder process dies
    with pytest.raises(ray.exceptions.RayActorError):  # the kill is asynchronous: wait for it
        for _ in range(300):
            ray.get(holder.ready.remote(), timeout=10)
            time.sleep(0.1)
    pool.put("after", b"owned by its successor" + padding, node="a")
    assert pool.get("after") == b"owned by its successor" + padding
    # Ray tells readers of the owner's death a moment later; until then the bytes still read right.
    # (Fresh Pools: one that has read the entry keeps its view, which stays valid.)
    deadline = time.monotonic() + 30
    with pytest.raises(PoolError, match="'before' on node a cannot be read: OwnerDiedError"):
        while time.monotonic() < deadline:
            assert Pool.connect(structure(CONFIG, "test")).get("before") == b"owned by the first holder" + padding
            time.sleep(0.2)


def test_a_killed_node_s_entries_are_reported_lost(pool: Pool, cluster: Any) -> None:
    """Runs last in this module: it removes worker c."""
    pool.put("doomed", b"on c", node="c")
    pool.put("safe", b"on a", node="a")
    assert pool.get("doomed") == b"on c"  # cached here: the loss must still be noticed
    cluster.remove_node(cluster.workers["c"], allow_graceful=False)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {e.key: e.state for e in pool.list()}
        if states["doomed"] == "lost":
            break
        time.sleep(0.5)
    assert states == {"doomed": "lost", "safe": "ok"}
    started = time.monotonic()
    with pytest.raises(PoolError, match="lost"):
        pool.get("doomed")
    assert time.monotonic() - started < 5
    assert pool.get("safe") == b"on a"
    with pytest.raises(PoolError, match="not alive"):
        Pool.connect(structure(CONFIG, "test")).put("again", b"x", node="c")
