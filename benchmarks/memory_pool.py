"""Memory pool put/get beside raw ray.put/ray.get and beside a bare actor call, from one run on one Ray node.

Sizes 1 KB, 1 MB, 100 MB and 1 GB (the last only with --large, where memory allows). Prints
throughput per call kind and the ratios. Raw get is ray.get of a reference this process holds;
pool gets are timed twice: `get` again once this Pool has read the key (answered from its cache),
and `get-1st`, a Pool's first read of a key (a directory round trip, as in a new process).
An entry that outlives its writer needs at least one actor call, so the floor for put and a first
get is a bare call to an actor carrying the same bytes (in, or back). Goals (issue 14): put at
most 1.5x that call at 1 KB and 1 MB; a first get at most 1.2x it; a repeated get at most 1.0x
raw ray.get; at 100 MB and above, put and first get at least 0.8x raw. Each pool call and its floor
are taken in turn, round after round, so that load on this machine hits both alike.
Usage: .venv/bin/python benchmarks/memory_pool.py [--large] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy
import ray
from ray.cluster_utils import Cluster

from grid_core.config import structure
from grid_plugin_memory_pool import Pool

KB, MB, GB = 1000, 1000**2, 1000**3


def median_seconds(calls: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Each call's median time, the calls taken in turn in every round so that load hits them alike."""
    for _ in range(3):  # warm up: the first calls start workers and export functions
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", action="store_true", help="also 1 GB objects (needs about 5 GB of /dev/shm)")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    sizes = [KB, MB, 100 * MB] + ([GB] if args.large else [])
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="grid-bench-")
    store = (5 if args.large else 1) * GB
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"grid-node-a": 1000}, "object_store_memory": store})
    try:
        ray.init(address=cluster.address, namespace="grid", log_to_driver=False)
        config = structure({"name": "bench", "nodes": [{"name": "a", "transport": "local"}],
                            "plugins": {"memory-pool": {"capacity_share": 0.9}}}, "bench")
        pool = Pool.connect(config)

        @ray.remote(num_cpus=0)
        class Bare:  # the floor: one actor call carrying the bytes
            def take(self, value: Any) -> int:
                self.value = value
                return 1

            def give(self) -> Any:
                return self.value

        bare = Bare.options(resources={"grid-node-a": 0.001}).remote()  # type: ignore[attr-defined]
        print(f"{'size':>8} {'op':7} {'raw ray':>12} {'pool':>12} {'pool/raw':>9}   (throughput; ms per call)")
        for size in sizes:
            array = numpy.frombuffer(os.urandom(size), dtype=numpy.uint8)
            refs: list[Any] = []

            def raw_put(a: Any = array, refs: list[Any] = refs) -> None:
                refs[:] = [ray.put(a)]

            def pool_put(a: Any = array) -> None:
                pool.put("bench", a, replace=True)

            def first_get() -> None:
                pool._cache.clear()  # as a Pool that has not read the key yet
                pool.get("bench")

            # Three groups, each taken in turn: a put empties the Pool's cache, and so does first_get.
            raw_p, pool_p, bare_in = median_seconds({"raw": raw_put, "pool": pool_put,
                                                     "bare": lambda a=array: ray.get(bare.take.remote(a))},
                                                    args.repeat).values()
            raw_g, pool_g = median_seconds({
                "raw": lambda refs=refs: ray.get(refs[0]), "pool": lambda: pool.get("bench")}, args.repeat).values()
            pool_g1, bare_out = median_seconds({
                "pool": first_get, "bare": lambda: ray.get(bare.give.remote())}, args.repeat).values()
            for op, raw, mine in (("put", raw_p, pool_p), ("get", raw_g, pool_g), ("get-1st", raw_g, pool_g1)):
                print(f"{size / MB:7.3f}M {op:7} {size / raw / MB:9.0f} MB/s {size / mine / MB:9.0f} MB/s "
                      f"{raw / mine:8.2f}x   ({raw * 1000:.3f} ms; {mine * 1000:.3f} ms)")
            goals = [("put", pool_p, bare_in, 1.5), ("get-1st", pool_g1, bare_out, 1.2)] if size <= MB else []
            for op, mine, floor, goal in goals:
                print(f"{'':8} {op:7} {mine * 1000:.3f} ms beside a bare actor call {floor * 1000:.3f} ms: "
                      f"{mine / floor:.2f}x (goal <= {goal}x: {'met' if mine / floor <= goal else 'NOT met'})")
            pool.delete("bench")
            refs.clear()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
