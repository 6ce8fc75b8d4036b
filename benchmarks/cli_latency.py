"""CLI latency against a running cluster, from one run: status-type commands beside `grid --help`,
idle and with every core of the head busy, and `grid run -- true` beside a bare Ray task.

The cluster is the test suite's two-node cluster of this machine (tests/local_pair.py). Each
round runs every command once, interleaved, so load hits them alike; figures are medians.
Goals (issue 10): each status command at most 2.0x `grid --help` idle and 3.0x under load;
`grid run -- true` at most 1.0x a Ray task from a fresh driver. With --remote (root: a test host,
tests/testbed.py): `grid memory get` of 100 MB from this machine, which is not a node, beside an
SFTP copy of the same bytes from the head (goal: at most 1.5x).
Usage: .venv/bin/python benchmarks/cli_latency.py [--rounds N] [--remote]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

STATUS = (("cluster", "status", "--json"), ("offload", "auto", "--status", "--json"), ("boost", "list", "--json"),
          ("jobs", "list", "--json"), ("memory", "ls", "--json"))
GOALS = {"idle": 2.0, "every core busy": 3.0}


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr[-1000:]}")
    return took


def status_figures(env: dict[str, str], rounds: int, condition: str) -> None:
    grid = [sys.executable, "-m", "grid_core"]
    cases = {"grid --help": [*grid, "--help"], **{f"grid {' '.join(c)}": [*grid, *c] for c in STATUS}}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds + 1):  # the first warms the caches (bytecode, the config's), as any use would
        for name, argv in cases.items():
            took = timed(argv, env)
            if round_:
                times[name].append(took)
    floor = statistics.median(times["grid --help"])
    goal = GOALS[condition]
    print(f"\n{condition} (medians of {rounds}):")
    for name, samples in times.items():
        median = statistics.median(samples)
        verdict = "" if name == "grid --help" else \
            f"  {median / floor:4.2f}x --help (goal <= {goal:.1f}x: {'met' if median / floor <= goal else 'NOT met'})"
        print(f"  {name:36s} {median * 1000:7.0f} ms{verdict}")


def run_figures(env: dict[str, str], state_dir: Path, rounds: int) -> None:
    address = json.loads((state_dir / "ray.json").read_text())["gcs_address"]
    bare = textwrap.dedent(f"""
        import subprocess, ray
        ray.init(address={address!r}, log_to_driver=False)
        run = ray.remote(num_cpus=1)(lambda: subprocess.run(["true"]).returncode)
        raise SystemExit(ray.get(run.remote()))
        """)
    token_env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state_dir / "auth_token")}
    grid_times, ray_times = [], []
    for _ in range(rounds):
        grid_times.append(timed([sys.executable, "-m", "grid_core", "run", "--", "true"], env))
        ray_times.append(timed([sys.executable, "-c", bare], token_env))
    g, r = statistics.median(grid_times), statistics.median(ray_times)
    print(f"\ngrid run -- true                 : {g:.2f} s (median of {rounds})")
    print(f"a Ray task from a fresh driver   : {r:.2f} s")
    print(f"ratio                            : {g / r:.2f}x (goal <= 1.0x: {'met' if g / r <= 1.0 else 'NOT met'})")


def remote_memory_figures(rounds: int, size: int = 100 * 2**20) -> None:
    import tempfile

    import paramiko

    from tests.testbed import Testbed

    work = Path(tempfile.mkdtemp(prefix="gbm", dir="/tmp"))
    (work / "home").mkdir()
    with Testbed(n_hosts=1, workdir=work / "tb") as bed:
        config = bed.write_grid_config(work / "grid.toml", name="bench", backend={"python": sys.executable})
        env = {**os.environ, "HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"),
               "GRID_CONFIG": str(config)}
        grid = [sys.executable, "-m", "grid_core"]
        timed([*grid, "cluster", "start"], env)
        try:
            blob = work / "blob"
            blob.write_bytes(os.urandom(size))
            timed([*grid, "memory", "put", "blob", str(blob)], env)
            host = bed.hosts[0]
            client = paramiko.SSHClient()
            client.load_host_keys(str(bed.known_hosts))
            client.connect(host.ip, username="root", key_filename=str(bed.client_key))
            sftp = client.open_sftp()
            sftp.put(str(blob), "/tmp/grid-bench-blob")

            def sftp_copy(up: bool = False) -> None:  # a new connection each time, as a command-line copy makes
                c = paramiko.SSHClient()
                c.load_host_keys(str(bed.known_hosts))
                c.connect(host.ip, username="root", key_filename=str(bed.client_key))
                if up:
                    c.open_sftp().put(str(blob), "/tmp/grid-bench-up")
                else:
                    c.open_sftp().get("/tmp/grid-bench-blob", str(work / "sftp.out"))
                c.close()

            grid_times, sftp_times, put_times, sftp_put_times = [], [], [], []
            for _ in range(rounds):
                grid_times.append(timed([*grid, "memory", "get", "blob", "-o", str(work / "grid.out")], env))
                start = time.perf_counter()
                sftp_copy()
                sftp_times.append(time.perf_counter() - start)
                put_times.append(timed([*grid, "memory", "put", "blob", str(blob), "--replace"], env))
                start = time.perf_counter()
                sftp_copy(up=True)
                sftp_put_times.append(time.perf_counter() - start)
            assert (work / "grid.out").read_bytes() == blob.read_bytes()
            sftp.remove("/tmp/grid-bench-blob")
            sftp.remove("/tmp/grid-bench-up")
            client.close()
            g, f = statistics.median(grid_times), statistics.median(sftp_times)
            print(f"\ngrid memory get, {size >> 20} MB, not a node : {g:.2f} s (median of {rounds})")
            print(f"SFTP copy of the same bytes (paramiko)  : {f:.2f} s")
            print(f"ratio                                   : {g / f:.2f}x (goal <= 1.5x: "
                  f"{'met' if g / f <= 1.5 else 'NOT met'})")
            p, q = statistics.median(put_times), statistics.median(sftp_put_times)
            print(f"grid memory put, same bytes, not a node : {p:.2f} s beside an SFTP upload {q:.2f} s: {p / q:.2f}x")
        finally:
            subprocess.run([*grid, "cluster", "stop"], env=env, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--remote", action="store_true", help="also memory get from a machine that is not a node")
    args = parser.parse_args()
    rounds = args.rounds
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if args.remote:
        remote_memory_figures(max(3, rounds // 2))
    from tests.local_pair import start_pair

    pair = start_pair()
    c = next(pair)
    # As users run grid: bytecode is cached (a shell that sets this would time compiling grid's modules).
    env = {k: v for k, v in {**os.environ, **c["env"]}.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        status_figures(env, rounds, "idle")
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
        try:
            status_figures(env, rounds, "every core busy")
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        run_figures(env, Path(env["GRID_STATE_DIR"]) / "offl", rounds)
    finally:
        next(pair, None)


if __name__ == "__main__":
    main()
