"""The lab's people (issue 30), beside what they are due, from one run:

- fair share over time: on test hosts (tests/testbed.py) with the accounts ann and bob, a cluster
  under `[scheduler] name = "fair-share"` of one 2-CPU node; ann submits a sweep of --jobs jobs,
  then bob one of the same, --late seconds later. Each second the share of the running CPUs each
  holds is printed beside their target (an equal part between those who wait or run), and at the
  end the share of the sweep each got over the time both waited, with the ratio to the target.
  Slurm's Fair Tree gives the same target; its figure is the floor of 1.00x;
- the identity check: what `SO_PEERCRED` and the [access] rule cost per request in the grid
  service (service.Client.user and access.role on a real Unix socket), beside a whole status
  request's time there.

Run: `.venv/bin/python benchmarks/lab_people.py [--jobs 20] [--seconds 2] [--late 3]`. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.testbed import Testbed  # noqa: E402

GRID = [sys.executable, "-m", "grid_core"]


def identity_cost(rounds: int = 20000) -> float:
    """Seconds per request of the service's identity check: the peer's uid, its name, its role."""
    from grid_core import access
    from grid_core.config import AccessSettings
    from grid_plugin_ray_backend.service import Client

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lab = AccessSettings(users=["ann"], group="lab", admins=["ada"])
    client = Client(ours)
    start = time.perf_counter()
    for _ in range(rounds):
        access.role(lab, client.user(), "grid")
    took = (time.perf_counter() - start) / rounds
    ours.close()
    theirs.close()
    return took


def fair_share(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="glp", dir="/tmp"))
    with Testbed(n_hosts=1, workdir=work / "tb", users=("ann", "bob")) as bed:
        config = bed.write_grid_config(work / "grid.toml", name="people", backend={"python": sys.executable},
                                       node_fields={"cpu_count": 2}, access={"users": ["ann", "bob"]},
                                       scheduler={"name": "fair-share"})
        (work / "home").mkdir()
        owner = {**os.environ, "HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"),
                 "GRID_CONFIG": str(config), "RAY_AUTH_MODE": "disabled"}
        owner.pop("PYTHONDONTWRITEBYTECODE", None)

        def person(name: str) -> dict[str, str]:
            home = work / f"home-{name}"
            home.mkdir(exist_ok=True)
            return {**owner, "HOME": str(home), "GRID_STATE_DIR": str(home / "state"), "USER": name, "LOGNAME": name}

        def grid(env: dict[str, str], *a: str) -> str:
            done = subprocess.run([*GRID, *a], env=env, capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise SystemExit(f"grid {' '.join(a)}: {done.stderr[-1500:]}")
            return done.stdout

        grid(owner, "cluster", "start")
        try:
            took = []
            for _ in range(6):
                began = time.perf_counter()
                grid(person("ann"), "jobs", "list", "--json")
                took.append(time.perf_counter() - began)
            request = statistics.median(took[1:])
            print(f"a member's `grid jobs list` from this machine: {request * 1000:.0f} ms; the identity check is "
                  f"{args.identity / request:.4%} of it")
            sweep = ["--array", f"0-{args.jobs - 1}", "--", "sleep", str(args.seconds)]
            grid(person("ann"), "run", "--detach", *sweep)
            time.sleep(args.late)
            grid(person("bob"), "run", "--detach", *sweep)
            print(f"\nfair share, one node of 2 CPUs: ann's sweep of {args.jobs} x {args.seconds:g} s, bob's "
                  f"{args.late:g} s later")
            print("   t (s)   ann running  bob running   ann share  bob share   target")
            both: dict[str, float] = {"ann": 0.0, "bob": 0.0}
            start = time.monotonic()
            while True:
                jobs = json.loads(grid(owner, "jobs", "list", "--json", "--all"))
                running = {u: sum(1 for j in jobs if j["user"] == u and j["state"] == "running") for u in both}
                waiting = {u: sum(1 for j in jobs if j["user"] == u and j["state"] == "queued") for u in both}
                if not any(running.values()) and not any(waiting.values()):
                    break
                total = sum(running.values()) or 1
                contending = all(running[u] + waiting[u] for u in both)
                if contending:
                    for u in both:
                        both[u] += running[u] / total
                target = 1 / sum(1 for u in both if running[u] + waiting[u])
                print(f"  {time.monotonic() - start:6.1f}   {running['ann']:6d}       {running['bob']:6d}"
                      f"       {running['ann'] / total:6.2f}    {running['bob'] / total:6.2f}    {target:6.2f}")
                time.sleep(1.0)
            samples = sum(both.values()) or 1
            print("  over the time both had work:", ", ".join(
                f"{u} {both[u] / samples:.2f} of the CPUs (target 0.50, {both[u] / samples / 0.5:.2f}x)" for u in both))
            usage = json.loads(grid(owner, "jobs", "usage", "--json"))
            print("  grid jobs usage:", ", ".join(f"{u['user']} {u['cpu_seconds']:.0f} CPU-s share {u['share']:.2f}"
                                                 for u in usage))
        finally:
            subprocess.run([*GRID, "cluster", "stop"], env=owner, capture_output=True, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=20, help="jobs in each person's sweep")
    parser.add_argument("--seconds", type=float, default=2.0, help="each job's length")
    parser.add_argument("--late", type=float, default=3.0, help="seconds between ann's sweep and bob's")
    args = parser.parse_args()
    args.identity = statistics.median(identity_cost() for _ in range(5))
    print(f"identity check per request: {args.identity * 1e6:.1f} us (SO_PEERCRED, the user's name, the [access] "
          "rule)")
    fair_share(args)


if __name__ == "__main__":
    main()
