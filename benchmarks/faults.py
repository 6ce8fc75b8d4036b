"""What a lost node costs (issue 29), from one run on test hosts (tests/testbed.py), driven from this
machine, which is not a node:

- loss to rerun: a job runs on a worker that powers off (every process there killed at once);
  the seconds until its next attempt starts on another node, beside the bound grid promises
  (the lease and 2 s, counted from the runner's last report, so at most that) and beside Ray's own
  figure in the same cluster: a task with max_retries=3 on that worker, whose retry Ray starts
  once it has declared the node dead (Ray does not fence: the first run may still be alive);
- rejoin: the worker boots (its sshd answers again); the seconds until the Ray cluster lists it
  alive with no command typed (goal: 60 s), beside the floor: how long starting Ray there took
  (what the rejoin adds is noticing that the node is back);
- the lease's cost: the grid service's CPU while --jobs jobs run (each runner renews its lease
  every sixth of it), beside the same service with none, over --window seconds each.

Run: `.venv/bin/python benchmarks/faults.py [--nodes 3] [--lease 30] [--jobs 100] [--window 30]`
(`--nodes 16` for the figure at sixteen nodes). Needs root, as the test hosts do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Testbed  # noqa: E402

GRID = [sys.executable, "-m", "grid_core"]
RAY_PEER = """\
import os, sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(logging_level="ERROR")
node = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and f"grid-node-{sys.argv[1]}" in n["Resources"])
@ray.remote(num_cpus=1, max_retries=3)
def work(log):
    with open(log, "a") as f:
        f.write(f"{time.time()}\\n")
    time.sleep(3600 if open(log).read().count("\\n") == 1 else 0)
ray.get(work.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)).remote(sys.argv[2]))
"""


class Bench:
    def __init__(self, bed: Testbed, env: dict[str, str], work: Path) -> None:
        self.bed, self.env, self.work = bed, env, work

    def grid(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run([*GRID, *args], capture_output=True, text=True, env=self.env, timeout=timeout)
        if done.returncode != 0:
            raise SystemExit(f"grid {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def submit(self, *args: str) -> str:
        return self.grid("run", "--detach", *args).strip()

    def alive(self) -> set[str]:
        return {n["name"] for n in json.loads(self.grid("cluster", "status", "--json"))["nodes"] if n["alive"]}

    def until(self, what: Callable[[], bool], timeout: float, why: str) -> float:
        """time.time() once `what` holds, looked at every 0.1 s."""
        deadline = time.monotonic() + timeout
        while not what():
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {timeout:.0f} s: {why}")
            time.sleep(0.1)
        return time.time()

    def fill_but(self, spare: str) -> list[str]:
        """Every CPU but `spare`'s busy (the head has 2, each worker 1); the blockers' ids."""
        ids = []
        for host in self.bed.hosts:
            if host.name != spare:
                ids += [self.submit("--node", host.name, "--", "sleep", "3600")
                        for _ in range(2 if host is self.bed.hosts[0] else 1)]
        return ids

    def starts(self, log: Path) -> list[float]:
        return [float(line.split()[-1]) for line in log.read_text().splitlines()] if log.exists() else []

    def service_cpu(self) -> float:
        """The grid service's CPU seconds so far (user and system), read in the head's namespace."""
        head = self.bed.hosts[0].name
        pid = self.bed.host_exec(head, ["pgrep", "-f", "ray::GridService"]).stdout.split()[0]
        fields = self.bed.host_exec(head, ["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loss_to_rerun(b: Bench, victim: str) -> tuple[float, float]:
    """Seconds from the victim's power-off to the job's next attempt's start; and to Ray's retry."""
    log = b.work / "attempts"
    blockers = b.fill_but(victim)
    job = b.submit("--", "sh", "-c", f"echo $GRID_ATTEMPT $(date +%s.%N) >> {log}; sleep 3600")
    b.until(lambda: len(b.starts(log)) == 1, 120, "the job did not start")
    b.bed.power_off(victim)
    lost = time.time()
    b.grid("jobs", "stop", blockers[-1])  # room elsewhere at once: what is left is grid's own wait
    b.until(lambda: len(b.starts(log)) == 2, 300, "the job did not run again")
    grid_rerun = b.starts(log)[1] - lost
    for stop in [*blockers[:-1], job]:
        b.grid("jobs", "stop", stop)
    rejoin(b, victim)  # back, for Ray's turn
    ray_log = b.work / "ray-attempts"
    head = b.bed.hosts[0]
    # A Ray driver talks to its own node's raylet: it runs on the head, with the head's token.
    on_head = ["nsenter", f"--target={head.init_pid}", "--net", "--pid", "--uts", "--mount", "--", "sh", "-c",
               f'export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$(ls -d /tmp/grid-faults-{head.name}-*)/auth_token"'
               '; exec "$0" -c "$1" "$2" "$3"', sys.executable, RAY_PEER, victim, str(ray_log)]
    variables = json.loads(b.grid("cluster", "env", "--json"))["variables"]
    with open(b.work / "ray-driver.log", "w") as said:
        driver = subprocess.Popen(on_head, env={"PATH": os.environ["PATH"], "RAY_ADDRESS": variables["RAY_ADDRESS"]},
                                  stdout=said, stderr=subprocess.STDOUT)
    try:
        b.until(lambda: len(b.starts(ray_log)) == 1 or driver.poll() is not None, 120, "Ray's task did not start")
        if driver.poll() is not None:
            raise SystemExit("Ray's driver failed: " + (b.work / "ray-driver.log").read_text()[-2000:])
        b.bed.power_off(victim)
        lost = time.time()
        b.until(lambda: len(b.starts(ray_log)) == 2, 300, "Ray did not retry its task")
        ray_retry = b.starts(ray_log)[1] - lost
    finally:
        driver.kill()
    return grid_rerun, ray_retry


def rejoin(b: Bench, victim: str) -> float:
    """Seconds from the powered-off victim's sshd answering again to the cluster listing it alive."""
    b.until(lambda: victim not in b.alive(), 180, f"Ray still lists {victim} alive")
    b.bed.power_on(victim)
    booted = time.time()
    return b.until(lambda: victim in b.alive(), 300, f"{victim} did not rejoin") - booted


def ray_start_seconds(b: Bench, victim: str) -> float:
    """How long the head's last start of the victim took (its `rejoin` event says): the floor of a
    rejoin, which only adds noticing that the node is back."""
    events = json.loads(b.grid("offload", "auto", "--status", "--json"))["events"]
    reason = [e["reason"] for e in events if e["kind"] == "rejoin" and e["node"] == victim][-1]
    return float(reason.rsplit(" in ", 1)[1].split()[0])


def lease_cost(b: Bench, jobs: int, window: float) -> tuple[float, float]:
    """The service's CPU share over `window` s with `jobs` jobs running, and with none."""
    ids = [b.submit("--cpus", "0.01", "--", "sleep", "3600") for _ in range(jobs)]
    b.until(lambda: sum(j["state"] == "running" and j["started"] is not None
                        for j in json.loads(b.grid("jobs", "list", "--json"))) >= jobs, 900, "the jobs did not start")
    time.sleep(5)
    before = b.service_cpu()
    time.sleep(window)
    running = (b.service_cpu() - before) / window
    for job in ids:
        b.grid("jobs", "stop", job)
    time.sleep(5)
    before = b.service_cpu()
    time.sleep(window)
    return running, (b.service_cpu() - before) / window


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3, help="test hosts: a head with 2 CPUs, workers with 1")
    parser.add_argument("--lease", type=float, default=30.0, help="queue.lease_seconds")
    parser.add_argument("--jobs", type=int, default=100, help="jobs running for the lease's cost")
    parser.add_argument("--window", type=float, default=30.0, help="seconds each CPU figure is taken over")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gfb", dir="/tmp"))
    (work / "home").mkdir()
    (work / "run").mkdir(mode=0o700)
    with Testbed(n_hosts=args.nodes, workdir=work / "tb") as bed:
        config = bed.write_grid_config(work / "grid.toml", name="faults", backend={"python": sys.executable},
                                       node_fields={"cpu_count": 1}, queue={"lease_seconds": args.lease})
        config.write_text(config.read_text().replace("cpu_count = 1", "cpu_count = 2", 1))  # the head's
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"), "GRID_CONFIG": str(config),
                    "XDG_RUNTIME_DIR": str(work / "run"), "RAY_AUTH_MODE": "disabled"})
        b = Bench(bed, env, bed.workdir)
        b.grid("cluster", "start")
        victim = bed.hosts[-1].name
        try:
            grid_rerun, ray_retry = loss_to_rerun(b, victim)
            b.bed.power_off(victim)
            back = rejoin(b, victim)
            floor = ray_start_seconds(b, victim)
            running, idle = lease_cost(b, args.jobs, args.window)
        finally:
            subprocess.run([*GRID, "cluster", "stop"], env=env, capture_output=True, timeout=300)
    bound = args.lease + 2.0
    print(f"\n{args.nodes} test hosts, lease {args.lease:g} s, driven from this machine (not a node):")
    print(f"  a worker's loss to its job's next attempt  {grid_rerun:6.1f} s   bound (lease + 2 s) {bound:6.1f} s "
          f"({grid_rerun / bound:.2f}x)   Ray's retry of a task {ray_retry:6.1f} s ({grid_rerun / ray_retry:.2f}x; "
          "Ray does not fence the first run)")
    print(f"  a rebooted worker back in the cluster     {back:6.1f} s   goal 60 s ({back / 60:.2f}x)   "
          f"starting Ray there {floor:6.1f} s ({back / floor:.2f}x)")
    print(f"  the service's CPU, {args.jobs} jobs running {running * 100:6.2f} %   with none {idle * 100:6.2f} %   "
          f"(the leases: {(running - idle) * 100:+.2f} % of a CPU, "
          f"{(running - idle) / (args.jobs * 6 / args.lease) * 1000:.2f} ms a renewal)")


if __name__ == "__main__":
    main()
