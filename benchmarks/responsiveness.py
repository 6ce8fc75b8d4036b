"""How the owner's work on the head fares beside the cluster's, from one run (issue 13).

Two test hosts, each on its own CPU (tests/testbed.py `cpus`): host1 is the head, host2 a worker.
The owner is a probe pinned to the head's CPU, in a session of its own as a desktop program is:
it runs a fixed 10 ms CPU loop, pauses 5 ms, and records how long each loop took. (A probe that
mostly sleeps would hardly notice a competing task: the scheduler favours a waking sleeper.)
The cluster's work is a flood of 0.5 s CPU tasks submitted from the head by `grid run`.

Conditions, each reported as the probe's median and p95 loop time (from 3 s after the flood
starts) and the flood's tasks per second:
- probe alone (the floor: 10 ms);
- flood, offload off: Ray runs tasks on the head beside the owner;
- flood, offload on and the owner active (presence: their terminal was just used): the policy
  holds the head, and grid's reservations send every task to the worker;
- flood on a head started with `--num-cpus=0` (cpu_count = 0): the usual advice, which never
  lets the head's idle time serve the cluster;
- flood, offload on and the owner idle: the policy frees the head, so its CPU serves the flood;
- two long tasks, one on each CPU, then the owner becomes active: the head's task is lowered at
  once and evicted after `evict_after` (2 s), and Ray runs it again on the worker.
Goals (issue 13): owner active, p95 at most 1.3x the probe alone; owner idle, throughput at least
0.95x that with offload off.
Needs root (test hosts). Usage: .venv/bin/python benchmarks/responsiveness.py [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Testbed  # noqa: E402

PROBE = """
import json, os, sys, time
os.setsid()  # a session (and autogroup) of its own, as a desktop program has
end = time.monotonic() + float(sys.argv[1])
loops = []
while time.monotonic() < end:
    start = time.perf_counter()
    spent = time.process_time() + 0.010
    while time.process_time() < spent:
        pass
    loops.append(time.perf_counter() - start)
    time.sleep(0.005)
print(json.dumps(loops))
"""

FLOOD = """
import json, sys, time, ray
ray.init(address="auto", log_to_driver=False)
@ray.remote(num_cpus=1, max_retries=3)
def burn(seconds):
    spent = time.process_time() + seconds
    while time.process_time() < spent:
        pass
    return ray.get_runtime_context().get_node_id()
start = time.monotonic()
nodes = ray.get([burn.remote(float(sys.argv[2])) for _ in range(int(sys.argv[1]))])
print(json.dumps({"seconds": time.monotonic() - start, "tasks": len(nodes)}))
"""


def grid(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "grid_core", *args], capture_output=True, text=True, env=env,
                            timeout=600)
    if check and result.returncode != 0:
        raise SystemExit(f"grid {' '.join(args)} failed: {result.stderr[-2000:]}")
    return result


def probe(seconds: float) -> subprocess.Popen[str]:
    return subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", PROBE, str(seconds)],
                            stdout=subprocess.PIPE, text=True)


class Owner:
    """The owner's presence, as grid reads it: the access time of their terminal, a pseudo-terminal
    this process opens (touched every second while active, set an hour back while idle)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.touching = threading.Event()
        threading.Thread(target=self._touch, daemon=True).start()
        self.idle()

    def _touch(self) -> None:
        while True:
            if self.touching.is_set():
                os.utime(self.path, None)
            time.sleep(1.0)

    def active(self) -> None:
        os.utime(self.path, None)
        self.touching.set()

    def idle(self) -> None:
        self.touching.clear()
        os.utime(self.path, (time.time() - 3600, os.stat(self.path).st_mtime))


def held(env: dict[str, str]) -> bool:
    status = json.loads(grid(env, "offload", "auto", "--status", "--json").stdout)
    return "host1" in status["held"]


def wait_held(env: dict[str, str], want: bool, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while held(env) != want:
        if time.monotonic() > deadline:
            raise SystemExit(f"the head was not {'held' if want else 'freed'} within {timeout:g} s")
        time.sleep(0.5)


def run(env: dict[str, str], name: str, seconds: float, tasks: int, task_seconds: float = 0.5,
        during: Callable[[], None] | None = None) -> tuple[float, float, float | None]:
    """One condition: the probe beside a flood (none when tasks is 0); `during` runs once the flood
    fills the CPUs. Prints and returns the probe's median and p95 (ms) and the flood's rate."""
    argv = [sys.executable, "-m", "grid_core", "run", "--node", "host1", "--cpus", "0", "--",
            "python", "-c", FLOOD, str(tasks), str(task_seconds)]
    flood = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) \
        if tasks else None
    time.sleep(3.0 if tasks else 0)  # the flood fills the CPUs
    if during is not None:
        during()
    owner = probe(seconds)
    ms = sorted(1000 * x for x in json.loads(owner.communicate()[0]))
    rate = None
    if flood is not None:
        out, _ = flood.communicate(timeout=900)
        result = json.loads(out.strip().splitlines()[-1])
        rate = result["tasks"] / result["seconds"]
    median, p95 = statistics.median(ms), ms[int(0.95 * (len(ms) - 1))]
    shown = f"{rate:5.2f} tasks/s" if rate is not None else "-"
    print(f"{name:52s} probe median {median:6.1f} ms  p95 {p95:6.1f} ms   flood {shown}", flush=True)
    return median, p95, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the probe runs per condition")
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0, help="the controller's interval, seconds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gbr", dir="/tmp"))
    (work / "home").mkdir()
    owner = Owner()
    with Testbed(n_hosts=2, workdir=work / "tb", cpus={"host1": "0", "host2": "1"}) as bed:
        offload = {"interval_seconds": args.interval, "cooldown_seconds": 2.0, "window": 1, "owner_idle_seconds": 30.0,
                   "evict_after": 2.0}
        base: dict[str, Any] = {"backend": {"python": sys.executable}, "offload": offload}
        configs = {}
        for label, head_cpus in (("grid", 1), ("num-cpus-0", 0)):
            path = bed.write_grid_config(work / f"{label}.toml", name=f"resp-{label}", **base)
            data = tomllib.loads(path.read_text())
            data["nodes"][0]["cpu_count"], data["nodes"][1]["cpu_count"] = head_cpus, 1
            path.write_text(tomli_w.dumps(data))
            configs[label] = path
        env = {**os.environ, "HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"),
               "GRID_CONFIG": str(configs["grid"])}
        print(f"two test hosts on CPUs 0 and 1; probe on CPU 0 for {args.seconds:g} s; "
              f"{args.tasks} tasks of 0.5 s CPU each; the owner's terminal {owner.path}; "
              f"offload interval {args.interval:g} s\n")
        grid(env, "cluster", "start")
        try:
            alone = run(env, "probe alone", args.seconds, 0)
            off = run(env, "flood, offload off", args.seconds, args.tasks)
            owner.active()
            grid(env, "offload", "auto", "--enable")
            wait_held(env, True)
            active = run(env, "flood, offload on, owner active (head held)", args.seconds, args.tasks)
            owner.idle()
            wait_held(env, False)
            idle = run(env, "flood, offload on, owner idle (head free)", args.seconds, args.tasks)
            run(env, "2 long tasks, owner idle", args.seconds, 2, task_seconds=args.seconds + 8)

            def owner_arrives() -> None:
                owner.active()
                wait_held(env, True)
                time.sleep(2.0 + args.interval)  # evict_after (2 s) and an interval: the head's task moves

            run(env, "2 long tasks, owner arrives (lowered, evicted)", args.seconds, 2,
                task_seconds=args.seconds + 8, during=owner_arrives)
            grid(env, "offload", "auto", "--disable")
            owner.idle()
        finally:
            grid(env, "cluster", "stop", check=False)
        env["GRID_CONFIG"] = str(configs["num-cpus-0"])
        grid(env, "cluster", "start")
        try:
            zero = run(env, "flood, head started with --num-cpus=0", args.seconds, args.tasks)
        finally:
            grid(env, "cluster", "stop", check=False)
    assert off[2] and idle[2] and zero[2]
    print(f"\nowner active: p95 {active[1]:.1f} ms = {active[1] / alone[1]:.2f}x the probe alone "
          f"(goal at most 1.3x)")
    print(f"owner idle: flood {idle[2]:.2f} tasks/s = {idle[2] / off[2]:.2f}x offload off "
          f"(goal at least 0.95x); --num-cpus=0: {zero[2] / off[2]:.2f}x")


if __name__ == "__main__":
    main()
