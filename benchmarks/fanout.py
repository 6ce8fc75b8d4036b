"""Fan-out: one trivial command (`true`) on N test hosts, grid beside its peers, from one run.

Peers (TESTBED.md section 5): a sequential OpenSSH loop, and pdsh (`-R ssh`) as users run it and
with paramiko's key exchange (curve25519) for a like-for-like view. Tools take turns within each
repetition, so a noisy moment hits all of them. Then it splits grid's own time into Python
start-up and imports versus SSH handshakes.

Needs root (the hosts are network namespaces with real sshd; tests/testbed.py) and pdsh
(`apt-get install -y pdsh`). Run: `.venv/bin/python benchmarks/fanout.py [--hosts 3,16] [--repeat 7]`.
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
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Testbed, testbed_unavailable_reason  # noqa: E402

Timed = Callable[[], None]


def run_ok(argv: Sequence[str], env: dict[str, str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def seconds(action: Timed) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def medians(actions: dict[str, Timed], repeat: int) -> dict[str, float]:
    """Median seconds per action, taking turns within each repetition; one warm-up round first."""
    samples: dict[str, list[float]] = {name: [] for name in actions}
    for action in actions.values():
        action()
    for _ in range(repeat):
        for name, action in actions.items():
            samples[name].append(seconds(action))
    return {name: statistics.median(values) for name, values in samples.items()}


def fanout_actions(bed: Testbed, n: int, workdir: Path, env: dict[str, str]) -> dict[str, Timed]:
    config = bed.write_grid_config(workdir / f"grid-{n}.toml", bed.hosts[:n])
    grid = str(Path(sys.executable).parent / "grid")
    names = [h.name for h in bed.hosts[:n]]
    ssh = ["ssh", "-F", str(bed.ssh_config)]
    pdsh_args = f"-F {bed.ssh_config} -o BatchMode=yes -o UserKnownHostsFile={bed.known_hosts} -i {bed.client_key}"
    pdsh = ["pdsh", "-R", "ssh", "-w", f"host[1-{n}]", "true"]
    pdsh_env = {**env, "PDSH_SSH_ARGS_APPEND": pdsh_args}
    pdsh_curve_env = {**env, "PDSH_SSH_ARGS_APPEND": pdsh_args + " -o KexAlgorithms=curve25519-sha256"}

    def ssh_loop() -> None:
        for name in names:
            run_ok([*ssh, name, "true"], env)

    return {
        "grid exec": lambda: run_ok([grid, "-c", str(config), "exec", "--", "true"], env),
        "ssh loop (sequential)": ssh_loop,
        "pdsh -R ssh": lambda: run_ok(pdsh, pdsh_env),
        "pdsh -R ssh, curve25519": lambda: run_ok(pdsh, pdsh_curve_env),
    }


def breakdown_actions(bed: Testbed, n: int, workdir: Path, env: dict[str, str]) -> dict[str, Timed]:
    """Where grid's time goes: start-up and imports in fresh processes, handshakes in this one."""
    from grid_core.cluster import Cluster
    from grid_core.config import load_file
    from grid_core.plugins import PluginHost
    from grid_plugin_ssh_paramiko.target import import_paramiko

    import_paramiko()
    from grid_plugin_ssh_paramiko.transport import SshTransport

    one = load_file(bed.write_grid_config(workdir / "grid-1.toml", bed.hosts[:1]))
    many = load_file(bed.write_grid_config(workdir / f"grid-{n}-inproc.toml", bed.hosts[:n]))
    grid = str(Path(sys.executable).parent / "grid")
    py = sys.executable
    hidden_invoke = ("import sys; sys.modules['invoke'] = None; import paramiko")

    def connect_and_run() -> None:
        transport = SshTransport(one.nodes[0], one)
        transport.run(["true"])
        transport.close()

    open_transport = SshTransport(one.nodes[0], one)
    open_transport.run(["true"])

    def fan_out_in_process() -> None:
        with Cluster(many, PluginHost()) as cluster:
            results = list(cluster.exec(cluster.config.nodes, ["true"]))
        if any(r.exit_status for r in results):
            raise SystemExit(f"in-process fan-out failed: {results}")

    return {
        "python -c pass": lambda: run_ok([py, "-c", "pass"], env),
        "grid --help (CLI, plugins, no paramiko)": lambda: run_ok([grid, "--help"], env),
        "python -c 'import paramiko'": lambda: run_ok([py, "-c", "import paramiko"], env),
        "  same, without invoke (as grid imports it)": lambda: run_ok([py, "-c", hidden_invoke], env),
        "grid exec on 1 host": lambda: run_ok([grid, "-c", str(workdir / "grid-1.toml"), "exec", "--", "true"], env),
        "in process: connect + run on 1 host": connect_and_run,
        "in process: run on an open connection": lambda: open_transport.run(["true"]) and None,
        f"in process: connect + run on {n} hosts": fan_out_in_process,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", default="3,16", help="comma-separated host counts [3,16]")
    parser.add_argument("--repeat", type=int, default=7, help="timed repetitions per tool [7]")
    args = parser.parse_args()
    counts = sorted({int(n) for n in args.hosts.split(",")})
    reason = testbed_unavailable_reason()
    if reason:
        raise SystemExit(f"fanout benchmark needs test hosts: {reason}")
    if shutil.which("pdsh") is None:
        raise SystemExit("fanout benchmark needs pdsh: apt-get install -y pdsh")

    workdir = Path(tempfile.mkdtemp(prefix="grid-fanout-"))
    home = workdir / "home"  # grid and ssh see no ~/.ssh of the real user
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GRID_STATE_DIR": str(home / "grid-state")}
    os.environ["HOME"] = str(home)
    try:
        with Testbed(max(counts), workdir / "bed", prefix="gf") as bed:
            print(f"# fanout: `true` on N test hosts, median of {args.repeat} runs each "
                  f"(one machine, {os.cpu_count()} CPUs; sshd in network namespaces)\n")
            print(f"{'N':>3}  {'tool':<26} {'median s':>9}  {'grid ÷ tool':>11}  {'tool ÷ grid':>11}")
            for n in counts:
                result = medians(fanout_actions(bed, n, workdir, env), args.repeat)
                ours = result["grid exec"]
                for name, value in result.items():
                    print(f"{n:>3}  {name:<26} {value:>9.3f}  {ours / value:>11.2f}  {value / ours:>11.2f}")
                pdsh = result["pdsh -R ssh"]
                print(f"     goal: grid ≤ 1.5 × pdsh → {ours / pdsh:.2f} ×; "
                      f"grid ≥ {n / 2:g} × faster than the loop → {result['ssh loop (sequential)'] / ours:.1f} ×\n")
            n = max(counts)
            print("# where grid's time goes (median seconds)")
            for name, value in medians(breakdown_actions(bed, n, workdir, env), args.repeat).items():
                print(f"     {name:<45} {value:>7.3f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
