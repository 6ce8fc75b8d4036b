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
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Testbed, testbed_unavailable_reason  # noqa: E402

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
    args = parser.parse_args()
    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"cannot make test hosts: {reason}")
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
