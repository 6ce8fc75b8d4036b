"""How the owner's work on the head fares beside the cluster's, from one run (issue 13).

Two test hosts, each on its own CPU (tests/testbed.py `cpus`): host1 is the head, host2 a worker.
The owner is a probe pinned to the head's CPU, in a session of its own as a desktop program is:
it runs a fixed 10 ms CPU loop, pauses 5 ms, and records how long each loop took. (A probe that
mostly sleeps would hardly notice a competing task: the scheduler favours a waking sleeper.)
The cluster's work is a flood of 0.5 s CPU tasks submitted from the head by `grid run`.

Conditions, each reported as the probe's median and p95 loop time and the flood's tasks per second:
- probe alone (the floor: 10 ms);
- flood, head free: Ray runs tasks on the head beside the owner;
- flood, head held before it starts: grid's reservations send every task to the worker;
- two long tasks, one on each CPU, with the head free, and then with the head held once they
  run: the task already on the head keeps running, at the lowest priority (these two flood
  figures are not comparable with the others);
- flood on a head started with `--num-cpus=0` (cpu_count = 0): the usual advice, which never
  lets the head's idle time serve the cluster.
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
import time
import tomllib
from pathlib import Path

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


def figures(name: str, loops: list[float], flood: dict[str, float] | None) -> None:
    ms = sorted(1000 * x for x in loops)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    rate = f"{flood['tasks'] / flood['seconds']:5.2f} tasks/s" if flood else "-"
    print(f"{name:44s} probe median {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms   flood {rate}")


def run(env: dict[str, str], name: str, seconds: float, tasks: int, hold: str | None = None,
        task_seconds: float = 0.5) -> None:
    """One condition: the probe beside a flood (none when tasks is 0)."""
    if hold == "before":
        grid(env, "offload", "hold", "host1", "--reason", "owner busy")
    argv = [sys.executable, "-m", "grid_core", "run", "--node", "host1", "--cpus", "0", "--",
            "python", "-c", FLOOD, str(tasks), str(task_seconds)]
    flood = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) \
        if tasks else None
    time.sleep(3.0 if tasks else 0)  # the flood fills the CPUs
    if hold == "during":
        grid(env, "offload", "hold", "host1", "--reason", "owner busy")
        time.sleep(2.0)  # an interval or two: the lowering is what is measured
    owner = probe(seconds)
    loops = json.loads(owner.communicate()[0])
    result = None
    if flood is not None:
        out, _ = flood.communicate(timeout=900)
        result = json.loads(out.strip().splitlines()[-1])
    if hold:
        grid(env, "offload", "release", "host1")
    figures(name, loops, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=6.0, help="how long the probe runs per condition")
    parser.add_argument("--tasks", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gbr", dir="/tmp"))
    (work / "home").mkdir()
    with Testbed(n_hosts=2, workdir=work / "tb", cpus={"host1": "0", "host2": "1"}) as bed:
        base = {"backend": {"python": sys.executable}, "offload": {"interval_seconds": 1.0}}
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
              f"{args.tasks} tasks of 0.5 s CPU each\n")
        grid(env, "cluster", "start")
        try:
            run(env, "probe alone", args.seconds, 0)
            run(env, "flood, head free", args.seconds, args.tasks)
            run(env, "flood, head held before it starts", args.seconds, args.tasks, hold="before")
            # Two long tasks, one on each CPU: the head's keeps running after the hold, lowered.
            run(env, "2 long tasks, head free", args.seconds, 2, task_seconds=args.seconds + 8)
            run(env, "2 long tasks, head held once they run (lowered)", args.seconds, 2, hold="during",
                task_seconds=args.seconds + 8)
        finally:
            grid(env, "cluster", "stop", check=False)
        env["GRID_CONFIG"] = str(configs["num-cpus-0"])
        grid(env, "cluster", "start")
        try:
            run(env, "flood, head started with --num-cpus=0", args.seconds, args.tasks)
        finally:
            grid(env, "cluster", "stop", check=False)


if __name__ == "__main__":
    main()
