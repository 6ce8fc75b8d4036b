"""Cluster start: grid beside `ray up` (local provider) and a sequential start, head + 1, 2, 4 workers.

All three start the same Ray (this interpreter's, which the test hosts see) on the same test
hosts with the same head flags, and each is timed until every node is alive as the GCS reports it:
- grid: `grid cluster start` (it returns only once every node has joined);
- sequential, as the seed did: `ray start --head` over ssh, then each worker in turn, no sleeps;
- `ray up` with the local provider (autoscaler v1: v2 never starts the last worker here,
  TESTBED.md section 5), which returns before its monitor has started the workers.
The tools take turns within each repetition, so a noisy moment hits all of them. Then it reports
the resident memory grid adds on the head: its Ray processes beside a plain `ray start --head`,
and the job registry actor that the first `grid run` creates.

Needs root and rsync (for `ray up`). Run: `.venv/bin/python benchmarks/cluster_start.py
[--workers 1,2,4] [--repeat 3] [--no-ray-up]`. Goal: grid at most 0.5x `ray up` and 0.6x
sequential at 4 workers.

With `--hosts N` (16 for issue 21) it brings up N hosts instead, each Ray node small (one CPU,
NODE_PARAMS), and prints from one run: grid's `cluster start` beside the raw floor (`ray start
--head` on host1, then the workers' `ray start` over ssh in parallel, until the GCS lists all N
alive), taking turns over --repeat rounds; how long after a start returned each worker's agent had
reported; `cluster status` on the head (the CLI run inside host1, whose config names it local)
beside `grid --help` there; the resident memory of grid's own processes (service, agents) beside
each node's raylet; `cluster stop`, and whether any Ray process is left on any host. Goals: start
<= 1.2x the floor; status <= 2.0x --help; every agent reporting within two intervals; nothing left
after stop. At most --parallel (4) nodes start at once, in grid (execution.parallel) and in the
floor alike: a raylet aborts when its dashboard agent has not written its port file within 15 s
(Ray 2.60, fixed), and 15 starts at once on this 2-core machine starved 6 of 15 agents that long.
Run: `.venv/bin/python benchmarks/cluster_start.py --hosts 16 [--repeat 3] [--parallel 4]`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomli_w

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Host, Testbed, testbed_unavailable_reason  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
GRID = str(Path(sys.executable).parent / "grid")
PORT = 6379
HEAD_FLAGS = "--include-dashboard=false --disable-usage-stats"
# Waits until N nodes are alive as the GCS reports them; prints the seconds since argv[3].
POLL = """\
import socket, sys, time
address, want, began = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
host, port = address.rsplit(":", 1)
client = None
while time.time() - began < 300:
    try:
        if client is None:
            socket.create_connection((host, int(port)), timeout=0.5).close()
            from ray._raylet import GcsClient
            client = GcsClient(address=address)
        nodes = client.get_all_node_info(timeout=5).values()
        if sum(1 for n in nodes if n.state == 0) >= want:
            print(time.time() - began)
            sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit("timed out")
"""


def check(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        output = result.stdout[-3000:] + result.stderr[-3000:]
        raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}):\n{output}")
    return result.stdout


class Bench:
    def __init__(self, bed: Testbed, workdir: Path) -> None:
        self.bed, self.workdir = bed, workdir
        self.env = {**os.environ, "HOME": str(workdir / "home"), "GRID_STATE_DIR": str(workdir / "state"),
                    "RAY_AUTH_MODE": "disabled", "RAY_UP_enable_autoscaler_v2": "0"}
        (workdir / "home").mkdir(exist_ok=True)
        self.ip = {h.name: h.ip for h in bed.hosts}

    def ssh(self, host: str, command: str) -> None:
        check(["ssh", "-F", str(self.bed.ssh_config), host, command])

    def stop_all(self) -> None:
        """`ray stop` inside each test host: its own PID namespace, so nothing else is touched."""
        for h in self.bed.hosts:
            self.bed.host_exec(h, [RAY, "stop", "--force"], timeout=60)

    def wait_alive(self, n: int, began: float, env: dict[str, str]) -> float:
        out = check([sys.executable, "-c", POLL, f"{self.ip['host1']}:{PORT}", str(n), str(began)], env=env)
        return float(out.strip())

    def grid(self, workers: int) -> float:
        config = self.bed.write_grid_config(self.workdir / f"grid-{workers}.toml", self.bed.hosts[: workers + 1],
                                            name=f"bench{workers}", backend={"python": sys.executable})
        env = {**self.env, "GRID_CONFIG": str(config)}
        began = time.perf_counter()
        check([GRID, "cluster", "start"], env=env)
        took = time.perf_counter() - began
        check([GRID, "cluster", "stop"], env=env)
        return took

    def sequential(self, workers: int) -> float:
        head = self.ip["host1"]
        began = time.time()
        self.ssh("host1", f"RAY_AUTH_MODE=disabled {RAY} start --head --port={PORT} --node-ip-address={head} "
                          f"{HEAD_FLAGS}")
        for h in self.bed.hosts[1: workers + 1]:
            self.ssh(h.name, f"RAY_AUTH_MODE=disabled {RAY} start --address={head}:{PORT} "
                             f"--node-ip-address={h.ip} --disable-usage-stats")
        took = self.wait_alive(workers + 1, began, self.env)
        self.stop_all()
        return took

    def ray_up(self, workers: int) -> float:
        head = self.ip["host1"]
        worker_ips = [h.ip for h in self.bed.hosts[1: workers + 1]]
        yaml = self.workdir / f"ray-up-{workers}.yaml"
        worker_ip = "$(hostname -I | cut -d' ' -f1)"
        autoscaling = "--autoscaling-config=~/ray_bootstrap_config.yaml"
        yaml.write_text(f"""\
cluster_name: bench{workers}
provider: {{type: local, head_ip: {head}, worker_ips: [{", ".join(worker_ips)}]}}
auth: {{ssh_user: root, ssh_private_key: {self.bed.client_key}}}
min_workers: {workers}
max_workers: {workers}
head_start_ray_commands:
  - {RAY} stop
  - RAY_AUTH_MODE=disabled {RAY} start --head --port={PORT} --node-ip-address={head} {autoscaling} {HEAD_FLAGS}
worker_start_ray_commands:
  - {RAY} stop
  - RAY_AUTH_MODE=disabled {RAY} start --address=$RAY_HEAD_IP:{PORT} --node-ip-address={worker_ip} --disable-usage-stats
""")
        began = time.time()
        poll = subprocess.Popen([sys.executable, "-c", POLL, f"{head}:{PORT}", str(workers + 1), str(began)],
                                env=self.env, stdout=subprocess.PIPE, text=True)
        check([RAY, "up", "-y", "--no-config-cache", str(yaml)], env=self.env)
        out, _ = poll.communicate(timeout=300)
        if poll.returncode != 0:
            raise SystemExit(f"ray up: the workers did not all join ({out})")
        subprocess.run([RAY, "down", "-y", str(yaml)], capture_output=True, env=self.env, timeout=120)
        self.stop_all()
        return float(out.strip())

    def head_memory(self) -> tuple[float, float, float]:
        """MiB resident on the head: grid's Ray, a plain `ray start --head`, and grid's job registry."""
        def rss(pattern: str = "") -> float:
            ps = self.bed.host_exec("host1", ["ps", "-e", "-o", "rss=,args="], check=True).stdout.splitlines()
            rows = [line.split(None, 1) for line in ps if line.strip()]
            return sum(int(kb) for kb, args in rows if ("ray" in args or "raylet" in args or "gcs" in args)
                       and pattern in args) / 1024

        config = self.bed.write_grid_config(self.workdir / "grid-mem.toml", self.bed.hosts[:1], name="benchmem",
                                            backend={"python": sys.executable})
        env = {**self.env, "GRID_CONFIG": str(config)}
        check([GRID, "cluster", "start"], env=env)
        time.sleep(3)  # let the raylet's prestarted workers settle before reading memory
        with_grid = rss()
        check([GRID, "run", "--", "true"], env=env)
        time.sleep(1)
        registry = rss("JobRegistry")
        check([GRID, "cluster", "stop"], env=env)
        self.ssh("host1", f"RAY_AUTH_MODE=disabled {RAY} start --head --port={PORT} "
                          f"--node-ip-address={self.ip['host1']} {HEAD_FLAGS}")
        time.sleep(3)
        plain = rss()
        self.stop_all()
        return with_grid, plain, registry


# The N-host run: each Ray node small, so 16 fit this machine (TESTBED.md section 2).
NODE_PARAMS = {"memory": 256 * 2**20, "object_store_memory": 80 * 2**20}
RAY_NAMES = ("raylet", "gcs_server", "ray::", "ray/dashboard", "log_monitor", "monitor.py", "default_worker")
# Each process of the host: [comm, args, RSS kB, PSS kB] (smaps_rollup), as JSON.
MEMORY = """\
import json, os
out = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
        with open(f"/proc/{pid}/smaps_rollup") as f:
            kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f.readlines()[1:])}
    except OSError:
        continue
    out.append([comm, args, kb.get("Rss", 0), kb.get("Pss", 0)])
print(json.dumps(out))
"""
KINDS = (("service", "GridService"), ("agent", "NodeAgent"), ("raylet", "raylet"), ("gcs", "gcs_server"))


class Hosts:
    """grid and the raw floor on N hosts, from one run."""

    def __init__(self, bed: Testbed, workdir: Path, parallel: int) -> None:
        self.bed, self.workdir, self.n, self.parallel = bed, workdir, len(bed.hosts), parallel
        self.floor_head = 0.0
        self.env = {**os.environ, "HOME": str(workdir / "home"), "GRID_STATE_DIR": str(workdir / "state"),
                    "RAY_AUTH_MODE": "disabled"}
        (workdir / "home").mkdir(exist_ok=True)
        fields = {"cpu_count": 1, "ray_start_params": NODE_PARAMS}
        self.config = bed.write_grid_config(workdir / "grid.toml", name="bench16", node_fields=fields,
                                            backend={"python": sys.executable}, execution={"parallel": parallel})
        # The same cluster as the CLI on the head sees it: the head is this machine there.
        data = tomllib.loads(self.config.read_text())
        data["nodes"][0]["transport"] = "local"
        self.head_config = workdir / "grid-head.toml"
        self.head_config.write_text(tomli_w.dumps(data))
        self.grid_env = {**self.env, "GRID_CONFIG": str(self.config)}
        self.head_env = {"PATH": self.env["PATH"], "LANG": "C.UTF-8", "GRID_CONFIG": str(self.head_config),
                         **{k: self.env[k] for k in ("HOME", "GRID_STATE_DIR", "RAY_AUTH_MODE")}}

    def ray_on_hosts(self) -> dict[str, list[str]]:
        """Ray processes left on each host, as its own process table lists them."""
        out = {}
        for h in self.bed.hosts:
            ps = self.bed.host_exec(h, ["ps", "-e", "-o", "args="], check=True).stdout.splitlines()
            out[h.name] = [line for line in ps if any(name in line for name in RAY_NAMES)]
        return {name: found for name, found in out.items() if found}

    def stop_all(self) -> None:
        """`ray stop` inside each host (its own PID namespace), all at once."""
        procs = [subprocess.Popen(["nsenter", f"--target={h.init_pid}", "--net", "--pid", "--uts", "--mount", "--",
                                   RAY, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for h in self.bed.hosts]
        for proc in procs:
            proc.wait(timeout=120)

    def raw_floor(self) -> float:
        head = self.bed.hosts[0].ip
        params = f"--num-cpus=1 --memory={NODE_PARAMS['memory']} " \
                 f"--object-store-memory={NODE_PARAMS['object_store_memory']} --disable-usage-stats"
        ssh = ["ssh", "-F", str(self.bed.ssh_config)]
        began = time.time()
        check([*ssh, "host1", f"RAY_AUTH_MODE=disabled {RAY} start --head --port={PORT} --node-ip-address={head} "
                              f"--include-dashboard=false {params}"], env=self.env)
        self.floor_head = time.time() - began

        def worker(h: Host) -> None:
            check([*ssh, h.name, f"RAY_AUTH_MODE=disabled {RAY} start --address={head}:{PORT} "
                                 f"--node-ip-address={h.ip} {params}"], env=self.env)

        with ThreadPoolExecutor(self.parallel) as pool:
            started = [pool.submit(worker, h) for h in self.bed.hosts[1:]]
            out = check([sys.executable, "-c", POLL, f"{head}:{PORT}", str(self.n), str(began)], env=self.env)
            for future in started:
                future.result()
        self.stop_all()
        return float(out.strip())

    def grid(self, *args: str, timeout: float = 900) -> tuple[float, str]:
        """Seconds and the progress lines (stderr, `  12.3s host2: joined` off a terminal)."""
        began = time.perf_counter()
        result = subprocess.run([GRID, *args], capture_output=True, text=True, env=self.grid_env, timeout=timeout)
        took = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit(f"grid {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return took, result.stderr

    def on_head(self, *args: str) -> tuple[float, str]:
        """The CLI run inside host1, as a user there would: seconds and its output."""
        began = time.perf_counter()
        result = self.bed.host_exec("host1", [GRID, *args], env=self.head_env, timeout=300)
        took = time.perf_counter() - began
        if result.returncode != 0:
            raise SystemExit(f"grid {' '.join(args)} on host1 failed: {result.stderr[-2000:]}")
        return took, result.stdout

    def agents(self, since: float, interval: float, limit: float = 120) -> dict[str, float | None]:
        """Seconds from `since` to each worker's first reading from its own agent, as `cluster status`
        on the head shows it (its age says when it was sent); None: none came within `limit`."""
        first: dict[str, float | None] = {h.name: None for h in self.bed.hosts[1:]}
        while any(v is None for v in first.values()) and time.perf_counter() - since < limit:
            _, out = self.on_head("cluster", "status", "--json")
            now = time.perf_counter()
            for row in json.loads(out)["nodes"]:
                if row["name"] in first and first[row["name"]] is None and row.get("metrics_from") == "agent":
                    first[row["name"]] = now - row["metrics_age"] - since
            time.sleep(min(1.0, interval / 5))
        return first

    def status_vs_help(self, rounds: int) -> tuple[float, float]:
        samples: dict[str, list[float]] = {"help": [], "status": []}
        for round_ in range(rounds + 1):  # the first warms the caches
            for name, args in (("help", ("--help",)), ("status", ("cluster", "status", "--json"))):
                took, _ = self.on_head(*args)
                if round_:
                    samples[name].append(took)
        return statistics.median(samples["help"]), statistics.median(samples["status"])

    def memory(self) -> dict[str, dict[str, tuple[int, int]]]:
        """Per host: kind -> (RSS, PSS) in kB, summed over its processes of that kind."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for h in self.bed.hosts:
            rows = json.loads(self.bed.host_exec(h, [sys.executable, "-c", MEMORY], check=True).stdout)
            kinds: dict[str, tuple[int, int]] = {}
            for comm, args, rss, pss in rows:
                kind = next((k for k, mark in KINDS if mark in args or comm == mark), None)
                if kind is None and any(name in args for name in RAY_NAMES):
                    kind = "other Ray"
                if kind:
                    was = kinds.get(kind, (0, 0))
                    kinds[kind] = (was[0] + rss, was[1] + pss)
            out[h.name] = kinds
        return out


def phases(progress: str, took: float, head: str) -> str:
    """Where `cluster start` spent its time, from its progress lines."""
    steps = [(float(m[1]), m[2], m[3]) for m in re.finditer(r"^\s*([\d.]+)s (\S+): (.*)$", progress, re.M)]

    def last(pred: Callable[[str, str], bool]) -> float:
        return max((t for t, node, msg in steps if pred(node, msg)), default=float("nan"))

    planned = last(lambda _n, msg: msg.startswith("will start"))
    head_up = last(lambda node, msg: node == head and msg == "joined")
    workers = last(lambda node, msg: node != head and msg == "joined")
    service = last(lambda node, msg: node == head and msg == "starting the grid service")
    return (f"probes {planned:.1f}s, head {head_up - planned:.1f}s, workers {workers - head_up:.1f}s, "
            f"records {service - workers:.1f}s, grid service {took - service:.1f}s "
            f"(the last of these includes the CLI's exit; its start-up is in the probes)")


def mib(kb: tuple[int, int] | None) -> str:
    return "-" if kb is None else f"{kb[0] / 1024:.0f}/{kb[1] / 1024:.0f}"


def hosts_main(n: int, repeat: int, status_rounds: int, parallel: int) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp, \
            Testbed(n, Path(tmp) / "tb", ready_timeout=60, keep_visible=[tmp]) as bed:
        bench = Hosts(bed, Path(tmp), parallel)
        try:
            print(f"# {n} hosts, each Ray node 1 CPU, --memory={NODE_PARAMS['memory'] // 2**20} MiB, "
                  f"--object-store-memory={NODE_PARAMS['object_store_memory'] // 2**20} MiB "
                  f"({os.cpu_count()} CPUs here); at most {parallel} nodes start at once, in grid and in the floor; "
                  f"{repeat} rounds, taking turns", flush=True)
            floors, heads, starts, stops, leftovers = [], [], [], [], []
            for round_ in range(repeat):
                last = round_ == repeat - 1
                for tool in ("floor", "grid") if round_ % 2 == 0 else ("grid", "floor"):
                    if tool == "floor":
                        floors.append(bench.raw_floor())
                        heads.append(bench.floor_head)
                        print(f"  round {round_ + 1}: raw floor {floors[-1]:.1f}s (head {heads[-1]:.1f}s)", flush=True)
                        continue
                    start, progress = bench.grid("cluster", "start")
                    started = time.perf_counter()
                    starts.append(start)
                    print(f"  round {round_ + 1}: grid cluster start {start:.1f}s: "
                          f"{phases(progress, start, 'host1')}", flush=True)
                    if last:
                        report_running(bench, n, started, status_rounds)
                    stop, _ = bench.grid("cluster", "stop")
                    stops.append(stop)
                    leftovers.append(bench.ray_on_hosts())
            floor, start = statistics.median(floors), statistics.median(starts)
            ratio = start / floor
            print(f"raw floor: ray start --head, then {n - 1} workers' ray start over ssh, until the GCS lists {n} "
                  f"alive: {floor:.1f}s (median; head {statistics.median(heads):.1f}s)")
            print(f"grid cluster start: {start:.1f}s (median) = {ratio:.2f}x the raw floor (goal <= 1.2x: "
                  f"{'met' if ratio <= 1.2 else 'NOT met'})")
            left = [found for found in leftovers if found]
            print(f"grid cluster stop: {statistics.median(stops):.1f}s (median); Ray processes left after "
                  f"{len(stops)} stops: " + ("none on any host (goal met)" if not left else "; ".join(
                      f"{h}: {len(p)} ({p[0][:60]})" for h, p in left[0].items()) + " (goal NOT met)"))
        finally:
            bench.stop_all()


def report_running(bench: Hosts, n: int, started: float, status_rounds: int) -> None:
    """On the running cluster, just started: the agents, status on the head, memory."""
    interval = 5.0
    first = bench.agents(started, interval)
    missing = sorted(name for name, t in first.items() if t is None)
    latest = max((t for t in first.values() if t is not None), default=float("nan"))
    met = not missing and latest <= 2 * interval
    print(f"agents: {n - 1 - len(missing)} of {n - 1} workers' agents reported, the last {latest:.1f}s after "
          f"start returned (goal <= 2 intervals = {2 * interval:.0f}s: {'met' if met else 'NOT met'})"
          + (f"; none from {', '.join(missing)}" if missing else ""), flush=True)
    help_s, status_s = bench.status_vs_help(status_rounds)
    ratio = status_s / help_s
    print(f"on the head (medians of {status_rounds}): grid --help {help_s * 1000:.0f} ms, grid cluster status "
          f"--json {status_s * 1000:.0f} ms = {ratio:.2f}x --help (goal <= 2.0x: "
          f"{'met' if ratio <= 2.0 else 'NOT met'})", flush=True)
    memory = bench.memory()
    print("resident memory, MiB RSS/PSS per host: grid's own processes beside Ray's")
    print(f"  {'host':<7} {'service':>9} {'agent':>9} {'raylet':>9} {'gcs':>9} {'other Ray':>10}")
    for name, kinds in memory.items():
        print(f"  {name:<7} {mib(kinds.get('service')):>9} {mib(kinds.get('agent')):>9} "
              f"{mib(kinds.get('raylet')):>9} {mib(kinds.get('gcs')):>9} {mib(kinds.get('other Ray')):>10}",
              flush=True)


def medians(actions: dict[str, Callable[[], float]], repeat: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            samples[name].append(action())
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated [1,2,4]")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ray-up", action="store_true", help="leave `ray up` out")
    parser.add_argument("--hosts", type=int, help="instead: grid and the raw floor on N hosts (issue 21: 16)")
    parser.add_argument("--status-rounds", type=int, default=5, help="with --hosts: status and --help rounds [5]")
    parser.add_argument("--parallel", type=int, default=4,
                        help="with --hosts: node starts at once, in grid (execution.parallel) and the floor [4]")
    args = parser.parse_args()
    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot make test hosts: {reason}")
    if args.hosts:
        hosts_main(args.hosts, args.repeat, args.status_rounds, args.parallel)
        return
    use_ray_up = not args.no_ray_up and shutil.which("rsync") is not None
    if not args.no_ray_up and not use_ray_up:
        print("rsync is missing: leaving `ray up` out (apt-get install rsync)", file=sys.stderr)
    counts = [int(n) for n in args.workers.split(",")]
    home_files = [Path("/root/ray_bootstrap_config.yaml"), Path("/root/ray_bootstrap_key.pem")]
    existed = {p: p.exists() for p in home_files}
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp, Testbed(max(counts) + 1, Path(tmp) / "tb") as bed:
        bench = Bench(bed, Path(tmp))
        try:
            print(f"{'workers':>7}  {'grid':>7}  {'sequential':>10}  {'ray up':>7}  {'grid/seq':>8}  "
                  f"{'grid/ray up':>11}")
            for n in counts:
                actions = {"grid": lambda n=n: bench.grid(n), "sequential": lambda n=n: bench.sequential(n)}
                if use_ray_up:
                    actions["ray up"] = lambda n=n: bench.ray_up(n)
                m = medians(actions, args.repeat)
                up = m.get("ray up")
                up_text = f"{up:.1f}s" if up else "-"
                ratio = f"{m['grid'] / up:.2f}" if up else "-"
                print(f"{n:>7}  {m['grid']:>6.1f}s  {m['sequential']:>9.1f}s  {up_text:>7}  "
                      f"{m['grid'] / m['sequential']:>8.2f}  {ratio:>11}", flush=True)
            with_grid, plain, registry = bench.head_memory()
            print(f"head resident memory: Ray started by grid {with_grid:.0f} MiB, by plain `ray start --head` "
                  f"{plain:.0f} MiB (grid adds {with_grid - plain:+.0f} MiB); grid's job registry actor, once a "
                  f"job has run: {registry:.0f} MiB")
        finally:
            bench.stop_all()
            for path, was in existed.items():
                if not was:
                    path.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
