"""Many real nodes at once: start, status with every agent reporting, `exec --all`, stop, through the CLI.

The hosts use this interpreter (the test hosts see it) instead of an installed venv, so the test
pays for Ray alone. Each node is small (one CPU, little memory), and at most four start at once:
on this 2-core machine more starve Ray's dashboard agents, and a raylet whose agent has not
written its port within 15 s aborts (benchmarks/cluster_start.py --hosts 16 says more).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import grid
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# Eight, not sixteen: the same code paths at half the suite's time; benchmarks/cluster_start.py
# --hosts 16 starts, reads and stops all sixteen.
HOSTS = 8
NODE = {"cpu_count": 1, "ray_start_params": {"memory": 256 * 2**20, "object_store_memory": 80 * 2**20}}
RAY_NAMES = ("raylet", "gcs_server", "ray::", "log_monitor", "default_worker", "dashboard")


def test_many_nodes_start_report_run_and_stop(tmp_path: Path) -> None:
    require_testbed()
    with Testbed(n_hosts=HOSTS, workdir=tmp_path / "tb", ready_timeout=60) as tb:
        config = tb.write_grid_config(tmp_path / "grid.toml", name="many", node_fields=NODE,
                                      backend={"python": sys.executable}, execution={"parallel": 4})
        env = {"HOME": str(tmp_path), "GRID_STATE_DIR": str(tmp_path / "state"), "RAY_AUTH_MODE": "disabled",
               "GRID_CONFIG": str(config)}
        names = [h.name for h in tb.hosts]

        def run(*args: str, timeout: float = 120) -> Any:
            """The command's --json answer; the option goes before a `--` and the command after it."""
            split = args.index("--") if "--" in args else len(args)
            result = grid(*args[:split], "--json", *args[split:], env=env, timeout=timeout)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            return json.loads(result.stdout)

        try:
            started = run("cluster", "start", timeout=600)
            assert {n["name"]: n["action"] for n in started["nodes"]} == dict.fromkeys(names, "started")
            # Every worker's agent reports (the head is read by the service itself), and status then
            # shows each node alive with its agent's reading instead of connecting to it.
            deadline = time.monotonic() + 120
            while True:
                rows = {r["name"]: r for r in run("cluster", "status")["nodes"]}
                if all(rows[n]["metrics_from"] == "agent" for n in names[1:]) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert all(r["alive"] and r["reachable"] for r in rows.values()), rows
            assert {n: rows[n]["metrics_from"] for n in names[1:]} == dict.fromkeys(names[1:], "agent")
            assert all(0 <= rows[n]["cpu_percent"] <= 100 and rows[n]["metrics_age"] >= 0 for n in names[1:])
            ran = run("exec", "--all", "--", "hostname")
            assert {r["node"]: r["stdout"].strip() for r in ran} == {n: n for n in names}, ran
        finally:
            stopped = grid("cluster", "stop", "--json", env=env, timeout=300)
        assert stopped.returncode == 0, stopped.stdout[-3000:] + stopped.stderr[-3000:]
        left = {h: [p for p in tb.host_exec(h, ["ps", "-e", "-o", "args="], check=True).stdout.splitlines()
                    if any(name in p for name in RAY_NAMES)] for h in names}
        assert not any(left.values()), {h: p for h, p in left.items() if p}
