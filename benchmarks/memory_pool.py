"""Memory pool put/get beside raw ray.put/ray.get, from one run on one Ray node.

Sizes 1 KB, 1 MB, 100 MB and 1 GB (the last only with --large, where memory allows). Prints
throughput per call kind and the pool/raw ratios; goals: >= 0.8x raw at 1 MB and above, and a
per-call overhead under 2 ms at 1 KB. Raw get is ray.get of a reference this process holds; pool
gets are timed twice: `get` again once this Pool has read the key (answered from its cache), and
`get-1st`, a Pool's first read of a key (a directory round trip, as in a new process).
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


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", action="store_true", help="also 1 GB objects (needs about 5 GB of /dev/shm)")
    parser.add_argument("--repeat", type=int, default=7)
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
        print(f"{'size':>8} {'op':7} {'raw ray':>12} {'pool':>12} {'pool/raw':>9}   (throughput; ms per call)")
        for size in sizes:
            array = numpy.frombuffer(os.urandom(size), dtype=numpy.uint8)
            refs: list[Any] = []

            def raw_put(a: Any = array, refs: list[Any] = refs) -> None:
                refs[:] = [ray.put(a)]

            def pool_put(a: Any = array) -> None:
                pool.put("bench", a, replace=True)

            raw_p, pool_p = median_seconds(raw_put, args.repeat), median_seconds(pool_put, args.repeat)
            raw_g = median_seconds(lambda refs=refs: ray.get(refs[0]), args.repeat)
            pool_g = median_seconds(lambda: pool.get("bench"), args.repeat)

            def first_get() -> None:
                pool._cache.clear()  # as a Pool that has not read the key yet
                pool.get("bench")

            pool_g1 = median_seconds(first_get, args.repeat)
            for op, raw, mine in (("put", raw_p, pool_p), ("get", raw_g, pool_g), ("get-1st", raw_g, pool_g1)):
                print(f"{size / MB:7.3f}M {op:7} {size / raw / MB:9.0f} MB/s {size / mine / MB:9.0f} MB/s "
                      f"{raw / mine:8.2f}x   ({raw * 1000:.3f} ms; {mine * 1000:.3f} ms)")
            if size == KB:
                print(f"{'':8} overhead at 1 KB: put {1000 * (pool_p - raw_p):.2f} ms, "
                      f"get {1000 * (pool_g - raw_g):.2f} ms, get-1st {1000 * (pool_g1 - raw_g):.2f} ms (goal < 2 ms)")
            pool.delete("bench")
            refs.clear()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
