"""A real two-node Ray cluster of this machine, started and stopped by grid's CLI, shared by tests.

Both nodes use the `local` transport (two raylets on one address): for tests where distinct hosts
do not matter but grid's own start, controller and jobs do.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from grid_core.config import load_file
from grid_plugin_ray_backend import layout, onnode
from tests.conftest import grid


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_pair() -> Iterator[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="gro", dir="/tmp"))  # short: Unix socket paths hold 107 bytes
    env = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"), "RAY_TMPDIR": str(root / "rt"),
           "XDG_STATE_HOME": str(root / "xdg"), "RAY_AUTH_MODE": "disabled",
           "GRID_SCRIPTED_METRICS": str(root / "scripted.json")}
    for key in ("HOME", "RAY_TMPDIR"):
        Path(env[key]).mkdir(parents=True)
    config = root / "grid.toml"
    config.write_text(textwrap.dedent(f"""
        name = "offl"
        [[nodes]]
        name = "head"
        role = "head"
        transport = "local"
        cpu_count = 2
        memory_gb = 2
        [[nodes]]
        name = "w1"
        transport = "local"
        cpu_count = 2
        memory_gb = 2
        [backend]
        port = {_free_port()}
        [metrics]
        sources = ["scripted"]  # tests/plugins/scripted-metrics: where a test writes a node's readings
        [offload]
        interval_seconds = 1.0
        cooldown_seconds = 2.0
        window = 2
        """))
    env["GRID_CONFIG"] = str(config)
    started = grid("cluster", "start", env=env, timeout=180)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"env": env, "config": config, "root": root}
    finally:
        grid("cluster", "stop", env=env, timeout=120)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])
            mp.setenv("GRID_STATE_DIR", env["GRID_STATE_DIR"])
            cfg = load_file(config)
            for node in cfg.nodes:
                for pid in onnode.grid_processes(layout.node_dir(cfg, node))[0]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def script_metrics(c: dict[str, Any], readings: dict[str, dict[str, float]]) -> None:
    """What the `scripted` source reports from now on, per node; nodes left out read the machine."""
    path = Path(c["env"]["GRID_SCRIPTED_METRICS"])
    path.with_suffix(".tmp").write_text(json.dumps(readings))
    path.with_suffix(".tmp").rename(path)  # the controller never reads half a file


def cli(c: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return grid(*args, env=c["env"], timeout=timeout)


def ok_json(c: dict[str, Any], *args: str) -> Any:
    result = cli(c, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def ray_driver(c: dict[str, Any], body: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of a Ray driver on the head (this machine) against the cluster,
    with grid's token: `nodes` maps grid's node names to Ray's ids, and `body` follows."""
    from grid_plugin_ray_backend import records

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRID_STATE_DIR", c["env"]["GRID_STATE_DIR"])
        address = records.load("offl").gcs_address
        token = Path(c["env"]["GRID_STATE_DIR"], "offl", "auth_token")
    script = textwrap.dedent(f"""
        import json, ray
        ray.init(address={address!r}, namespace="grid", log_to_driver=False)
        nodes = {{k[len("grid-node-"):]: n["NodeID"] for n in ray.nodes() if n["Alive"]
                 for k in n["Resources"] if k.startswith("grid-node-")}}
        """) + textwrap.dedent(body)
    return [sys.executable, "-c", script], {**os.environ, **c["env"], "RAY_AUTH_MODE": "token",
                                            "RAY_AUTH_TOKEN_PATH": str(token)}


def ray_program(c: dict[str, Any], body: str, timeout: float = 120) -> Any:
    """Run ray_driver(c, body) to its end; the JSON its last line prints."""
    argv, env = ray_driver(c, body)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
