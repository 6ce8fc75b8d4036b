"""Offload figures from one run, each beside its peer or goal.

1. decisions per second of the `threshold` policy with 1,000 simulated nodes (goal > 10,000/s);
2. `least-loaded` placements per second with 1,000 nodes (goal > 10,000/s);
   and the controller's whole interval with 1,000 nodes' agents reporting: each reading taken
   in as the service takes it (structured from the wire), then the rules' tick (goal: under 10%
   of a 1 s interval on one core);
3. with --cluster: a real two-node grid cluster on this machine, measuring the time from CPU
   burners starting to the head being held (goal: one interval plus sampling time beyond the
   policy's window of readings). `grid run`'s latency is in cli_latency.py.

Usage: .venv/bin/python benchmarks/offload.py [--cluster]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from grid_core.builtin.least_loaded import LeastLoaded
from grid_core.types import ControllerState, NodeMetrics, NodeView, WorkRequest
from grid_plugin_threshold_offload.policy import ThresholdPolicy

SETTINGS = {"high": {"cpu": 80.0, "memory": 70.0, "gpu": 90.0}, "low": {"cpu": 60.0, "memory": 55.0, "gpu": 70.0},
            "window": 2, "cooldown_seconds": 30.0}


def simulated_nodes(n: int) -> tuple[NodeView, ...]:
    rng = random.Random(7)
    return tuple(NodeView(f"n{i}", "head" if i == 0 else "worker",
                          NodeMetrics("sim", rng.uniform(0, 100), rng.uniform(0, 100)),
                          {"CPU": float(rng.randint(0, 16)), "GPU": 0.0}) for i in range(n))


def rate(fn: object, seconds: float = 2.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()  # type: ignore[operator]
        count += 1
    return count / (time.perf_counter() - start)


def pure_figures() -> None:
    nodes = simulated_nodes(1000)
    policy = ThresholdPolicy(SETTINGS)
    clock = iter(range(10**9))
    decisions = rate(lambda: policy.decide(nodes, ControllerState("n0", False, float(next(clock)))))
    scheduler = LeastLoaded()
    request = WorkRequest(cpus=1)
    placements = rate(lambda: scheduler.choose(request, nodes))
    # Cold: every call sees a new snapshot (a new list), as the first call after each interval does.
    cold_decisions = rate(lambda: policy.decide(list(nodes), ControllerState("n0", False, float(next(clock)))))
    cold_placements = rate(lambda: scheduler.choose(request, list(nodes)))
    print(f"threshold policy, 1,000 nodes : {decisions:12,.0f} decisions/s on one snapshot, "
          f"{cold_decisions:,.0f}/s each on a new one (goal > 10,000/s: {'met' if decisions > 10_000 else 'NOT met'})")
    print(f"least-loaded, 1,000 nodes     : {placements:12,.0f} placements/s on one snapshot, "
          f"{cold_placements:,.0f}/s each on a new one (goal > 10,000/s: "
          f"{'met' if placements > 10_000 else 'NOT met'})")


class StillEngine:
    """Mechanics for the rules that reserve nothing and report fixed free capacity."""

    def __init__(self, names: list[str]) -> None:
        self.free = {n: {"CPU": 8.0, "GPU": 0.0, "memory": 16e9} for n in names}

    def reserve(self, name: str, node: str, amounts: object, displacing: object = ()) -> bool:
        return False

    def unreserve(self, name: str) -> None:
        pass

    def exists(self, name: str) -> bool:
        return False

    def reservations(self) -> list[str]:
        return []

    def available(self) -> dict[str, dict[str, float]]:
        return self.free


def controller_figures(n: int = 1000, intervals: int = 20) -> None:
    import cattrs

    from grid_core.config import structure
    from grid_plugin_ray_backend.rules import Rules

    names = [f"n{i}" for i in range(n)]
    config = structure({"name": "sim", "nodes": [{"name": name, "host": f"10.0.{i // 250}.{i % 250}",
                                                   "role": "head" if i == 0 else "worker"}
                                                  for i, name in enumerate(names)],
                        "offload": {"enabled": True}}, "sim")

    def policies(name: str, settings: object) -> ThresholdPolicy:
        return ThresholdPolicy(settings)  # type: ignore[arg-type]

    rules = Rules(config, StillEngine(names), policies)
    rng = random.Random(3)
    wire = [{name: cattrs.unstructure(NodeMetrics("psutil", rng.uniform(0, 100), rng.uniform(0, 100),
                                                  owner_cpu_percent=rng.uniform(0, 50), cluster_cpu_percent=10.0))
             for name in names} for _ in range(intervals)]
    times = []
    for now, batch in enumerate(wire):
        start = time.process_time()
        readings = {name: cattrs.structure(data, NodeMetrics) for name, data in batch.items()}  # report()
        rules.tick(readings, float(now))
        times.append(time.process_time() - start)
    median = statistics.median(times)
    print(f"controller interval, {n:,} nodes : {median * 1000:8.1f} ms of CPU (readings taken in, then the tick); "
          f"{100 * median:.1f}% of a 1 s interval (goal < 10%: {'met' if median < 0.1 else 'NOT met'})")


def cluster_figures() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.local_pair import cli, ok_json, start_pair  # the test suite's two-node cluster of this machine

    pair = start_pair()
    c = next(pair)
    interval = 1.0
    try:
        cli(c, "offload", "auto", "--enable", "--threshold", "cpu=60")
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
        began = time.time()
        held_at = None
        while time.time() - began < 60 and held_at is None:
            status = ok_json(c, "offload", "auto", "--status")
            if "head" in status["held"]:
                held_at = status["held"]["head"]["since"]  # the controller's own clock of the hold
        for burner in burners:
            burner.kill()
        cli(c, "offload", "auto", "--disable")
        seen = time.time() - began
        held = "never" if held_at is None else f"{held_at - began:.2f} s"
        print(f"burners start -> head held    : {held} (interval {interval} s, a window of 2 readings: goal "
              f"<= {2 * interval:.0f} s plus sampling); the CLI saw it after {seen:.1f} s")

    finally:
        next(pair, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cluster", action="store_true", help="also the figures that need a real cluster")
    args = parser.parse_args()
    pure_figures()
    controller_figures()
    if args.cluster:
        cluster_figures()


if __name__ == "__main__":
    main()
