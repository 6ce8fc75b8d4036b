"""CLI latency against a running cluster, from one run: status-type commands beside `grid --help`,
idle and with every core of the head busy, and `grid run -- true` beside a bare Ray task.

The cluster is the test suite's two-node cluster of this machine (tests/local_pair.py). Each
round runs every command once, interleaved, so load hits them alike; figures are medians.
Goals (issue 10): each status command at most 2.0x `grid --help` idle and 3.0x under load;
`grid run -- true` at most 1.0x a Ray task from a fresh driver. With --remote (root: a test host,
tests/testbed.py, is the cluster's one node and this machine is not a node), issue 21: each status
command with the SSH keeper warm at most 2.0x `grid --help`, and cold (no keeper yet) at most 1.2x
a fresh OpenSSH `ssh HOST true`; `grid memory get` and `put` of 100 MB at least 0.8x the speed of
an SFTP copy of the same bytes on a new connection.
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


def stop_keeper(path: str) -> None:
    """End the SSH keeper at `path`, as `grid cluster stop` does, so the next command is cold."""
    import socket

    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
            sock.sendall(b'{"op": "stop"}\n')
            sock.recv(1024)
        except OSError:
            pass
    deadline = time.monotonic() + 5
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def remote_figures(rounds: int, size: int = 100 * 2**20) -> None:
    """From this machine, which is not a node, to a one-node cluster on a test host."""
    import tempfile

    import paramiko

    from tests.testbed import Testbed

    work = Path(tempfile.mkdtemp(prefix="gbm", dir="/tmp"))
    (work / "home").mkdir()
    (work / "run").mkdir(mode=0o700)
    with Testbed(n_hosts=1, workdir=work / "tb") as bed:
        config = bed.write_grid_config(work / "grid.toml", name="bench", backend={"python": sys.executable})
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update({"HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"), "GRID_CONFIG": str(config),
                    "XDG_RUNTIME_DIR": str(work / "run")})
        grid = [sys.executable, "-m", "grid_core"]
        timed([*grid, "cluster", "start"], env)
        try:
            keeper = subprocess.run(
                [sys.executable, "-c", "from grid_core.config import load_file; import sys; "
                 "from grid_plugin_ssh_paramiko.keeper import socket_path; print(socket_path(load_file(sys.argv[1])))",
                 str(config)], capture_output=True, text=True, env=env, check=True).stdout.strip()
            ssh_true = ["ssh", "-F", str(bed.ssh_config), bed.hosts[0].name, "true"]
            cases = {f"grid {' '.join(c)}": [*grid, *c] for c in STATUS}
            times: dict[str, list[float]] = {"grid --help": [], "ssh HOST true (OpenSSH, fresh)": []}
            for name in cases:
                times[name + " (warm)"], times[name + " (cold)"] = [], []
            for round_ in range(rounds + 1):  # the first warms the caches, as any use would
                sample: dict[str, float] = {"grid --help": timed([*grid, "--help"], env),
                                            "ssh HOST true (OpenSSH, fresh)": timed(ssh_true, env)}
                for name, argv in cases.items():
                    stop_keeper(keeper)
                    sample[name + " (cold)"] = timed(argv, env)
                    sample[name + " (warm)"] = timed(argv, env)
                if round_:
                    for name, took in sample.items():
                        times[name].append(took)
            medians = {name: statistics.median(samples) for name, samples in times.items()}
            floor, ssh = medians["grid --help"], medians["ssh HOST true (OpenSSH, fresh)"]
            print(f"\nnot a node, status commands (medians of {rounds}, interleaved):")
            for name, median in medians.items():
                verdict = ""
                if name.endswith("(warm)"):
                    ratio = median / floor
                    verdict = f"  {ratio:4.2f}x --help (goal <= 2.0x: {'met' if ratio <= 2.0 else 'NOT met'})"
                elif name.endswith("(cold)"):
                    ratio = median / ssh
                    verdict = f"  {ratio:4.2f}x ssh true (goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})"
                print(f"  {name:46s} {median * 1000:7.0f} ms{verdict}")

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
            print(f"\nnot a node, {size >> 20} MB (medians of {rounds}); speed as a share of an SFTP copy's, "
                  "goal >= 0.8x:")
            for what, g, f in (("get", grid_times, sftp_times), ("put", put_times, sftp_put_times)):
                mg, mf = statistics.median(g), statistics.median(f)
                print(f"  grid memory {what} {mg:5.2f} s   SFTP (paramiko, new connection) {mf:5.2f} s   "
                      f"{mf / mg:4.2f}x ({'met' if mf / mg >= 0.8 else 'NOT met'})")
        finally:
            subprocess.run([*grid, "cluster", "stop"], env=env, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--remote", action="store_true", help="also status commands and memory from a non-node machine")
    args = parser.parse_args()
    rounds = args.rounds
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    if args.remote:
        remote_figures(max(3, rounds // 2))
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
