"""The ray backend on three real test hosts (sshd and Ray in their own namespaces), through the real CLI.

One testbed and one installed venv per host serve the whole module; the tests run in file order
and each leaves the cluster as the next expects it: install, start, status, jobs, idempotent start,
repair of a killed worker, token refusal, stop; then a start with one host unreachable, and a
start from a config in the seed's YAML format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.conftest import grid
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

VENV = "/tmp/grid-venv"  # under each host's private /tmp
RAY_VERSION = metadata.version("ray")
# Downloads are kept between runs: the hosts install offline from this wheelhouse.
WHEELHOUSE = Path(os.environ.get("GRID_TEST_WHEELHOUSE", f"/var/tmp/grid-test-wheelhouse-{RAY_VERSION}"))
RAY_NAMES = ("raylet", "gcs_server", "ray::", "ray/dashboard", "log_monitor", "monitor.py", "default_worker")


def fill_wheelhouse() -> Path:
    """Ray and the third-party requirements of grid's distributions, as wheels."""
    if any(WHEELHOUSE.glob(f"ray-{RAY_VERSION}-*.whl")):
        return WHEELHOUSE
    from grid_plugin_ray_backend.install import wanted

    requirements = {f"ray=={RAY_VERSION}"}
    for dist in wanted():
        for req in metadata.requires(dist) or []:
            name = req.split(";")[0].strip()
            if "extra ==" not in req and not name.lower().startswith(("grid-", "grid_", "ray")):
                requirements.add(name)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(WHEELHOUSE),
                             *sorted(requirements)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"cannot fill the wheelhouse: {result.stderr[-2000:]}"
    return WHEELHOUSE


def edit_config(path: Path, **top: Any) -> Path:
    """Give the head 2 CPUs and each worker 1, so status shows what the config asked for."""
    data = tomllib.loads(path.read_text())
    for i, node in enumerate(data["nodes"]):
        node["cpu_count"] = 2 if i == 0 else 1
    data.update(top)
    path.write_text(tomli_w.dumps(data))
    return path


class Env:
    """The CLI's environment for this module: its own home and state, auth mode set to disabled
    so that grid is seen to set it."""

    def __init__(self, root: Path, config: Path) -> None:
        (root / "home").mkdir()
        self.vars = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"),
                     "XDG_STATE_HOME": str(root / "xdg"), "RAY_AUTH_MODE": "disabled", "GRID_CONFIG": str(config)}

    def grid(self, *args: str, config: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**self.vars, **({"GRID_CONFIG": str(config)} if config else {})}
        return grid(*args, env=env, timeout=timeout)

    def json(self, *args: str, config: Path | None = None, ok: bool = True) -> Any:
        result = self.grid(*args, "--json", config=config)
        if ok:
            assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in report["nodes"]}


def ray_processes(tb: Testbed, host: str) -> list[str]:
    ps = tb.host_exec(host, ["ps", "-e", "-o", "args="], check=True).stdout.splitlines()
    return [line for line in ps if any(name in line for name in RAY_NAMES)]


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, Env, Path]]:
    require_testbed()
    wheelhouse = fill_wheelhouse()
    root = tmp_path_factory.mktemp("raycluster")
    tb = Testbed(n_hosts=3, workdir=root / "tb")
    try:
        config = edit_config(tb.write_grid_config(root / "grid.toml", name="tb", backend={"venv": VENV},
                                                  ssh={"connect_timeout": 3.0}))
        env = Env(root, config)
        installed = env.json("cluster", "install", "--wheelhouse", str(wheelhouse))
        assert {n["name"]: n["action"] for n in installed["nodes"]} == dict.fromkeys(("host1", "host2", "host3"),
                                                                                    "installed")
        yield tb, env, root
    finally:
        tb.close()  # kills every host, and the Ray inside it, whatever the tests left


def test_install_skips_hosts_that_match(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    again = env.json("cluster", "install", "--wheelhouse", str(WHEELHOUSE))
    assert {n["action"] for n in again["nodes"]} == {"up to date"}
    probe = "import ray, grid_plugin_ray_backend; print(ray.__version__)"
    out = tb.host_exec("host2", [f"{VENV}/bin/python", "-c", probe])
    assert out.stdout.strip() == RAY_VERSION
    assert not Path(VENV).exists()  # the venv lives in the host's own /tmp


def test_start_brings_up_head_and_workers(bed: tuple[Testbed, Env, Path]) -> None:
    _, env, _ = bed
    result = env.grid("cluster", "start", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert {n["name"]: n["action"] for n in json.loads(result.stdout)["nodes"]} == dict.fromkeys(
        ("host1", "host2", "host3"), "started")
    rows = by_name(env.json("cluster", "status"))
    assert all(r["alive"] for r in rows.values()), rows
    assert {name: r["cpus"] for name, r in rows.items()} == {"host1": 2, "host2": 1, "host3": 1}
    assert rows["host1"]["role"] == "head"


def test_a_job_pinned_to_each_node_runs_there(bed: tuple[Testbed, Env, Path]) -> None:
    _, env, _ = bed
    for host in ("host1", "host2", "host3"):
        result = env.grid("run", "--node", host, "--cpus", "1", "--", "hostname")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == host
    anywhere = env.grid("run", "--", "sh", "-c", "hostname; exit 5")
    assert anywhere.returncode == 5
    assert anywhere.stdout.strip() in {"host1", "host2", "host3"}


def test_a_second_start_changes_nothing(bed: tuple[Testbed, Env, Path]) -> None:
    _, env, _ = bed
    before = {n: r["node_id"] for n, r in by_name(env.json("cluster", "status")).items()}
    again = env.json("cluster", "start")
    assert {n["action"] for n in again["nodes"]} == {"running"}
    assert {n: r["node_id"] for n, r in by_name(env.json("cluster", "status")).items()} == before


def test_start_brings_back_only_a_killed_worker(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    before = {n: r["node_id"] for n, r in by_name(env.json("cluster", "status")).items()}
    tb.host_exec("host3", ["pkill", "-KILL", "-x", "raylet"], check=True)  # inside host3 only
    result = env.grid("cluster", "start", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    actions = {n["name"]: n["action"] for n in json.loads(result.stdout)["nodes"]}
    assert actions == {"host1": "running", "host2": "running", "host3": "started"}
    after = {n: r["node_id"] for n, r in by_name(env.json("cluster", "status")).items()}
    assert after["host1"] == before["host1"] and after["host2"] == before["host2"]
    assert after["host3"] != before["host3"]
    ran = env.grid("run", "--node", "host3", "--", "hostname")
    assert ran.stdout.strip() == "host3", ran.stderr


def test_a_client_without_the_token_is_refused(bed: tuple[Testbed, Env, Path]) -> None:
    _, _env, root = bed
    address = json.loads((root / "state" / "tb" / "ray.json").read_text())["gcs_address"]
    ask = ("import sys\nfrom ray._raylet import GcsClient\n"
           "nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=10).values()\n"
           "print(sum(1 for n in nodes if n.state == 0))")  # alive
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    refused = subprocess.run([sys.executable, "-c", ask, address], capture_output=True, text=True, timeout=60,
                             env={**base, "RAY_AUTH_MODE": "disabled"})
    assert refused.returncode != 0
    assert "InvalidAuthToken" in refused.stderr
    token = root / "state" / "tb" / "auth_token"
    allowed = subprocess.run([sys.executable, "-c", ask, address], capture_output=True, text=True, timeout=60,
                             env={**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    # 3, or 4 while the GCS still lists host3's killed raylet (until its health checks fail)
    assert allowed.stdout.strip() in ("3", "4"), allowed.stderr


def test_ray_status_reaches_the_cluster_after_eval_of_cluster_env(bed: tuple[Testbed, Env, Path]) -> None:
    """The user's path to Ray's own CLI: `eval "$(grid cluster env)"`, then `ray status`."""
    _, env, _ = bed
    bin_dir = Path(sys.executable).parent
    shell = {**os.environ, **env.vars, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_AUTH_TOKEN": "stale"}
    ran = subprocess.run(["sh", "-c", 'eval "$(grid cluster env)" && ray status'], capture_output=True, text=True,
                         env=shell, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    active = ran.stdout.split("Active:", 1)[1].split("Pending:", 1)[0]
    assert active.count("node_") >= 3, ran.stdout  # every node (a killed raylet may linger as a 4th)
    printed = env.grid("cluster", "env").stdout
    token = env.vars["GRID_STATE_DIR"] + "/tb/auth_token"
    assert f"export RAY_AUTH_TOKEN_PATH={token};" in printed and Path(token).read_text() not in printed


def test_stop_leaves_no_ray_process_on_any_host(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    assert all(ray_processes(tb, h) for h in ("host1", "host2", "host3"))
    stopped = env.json("cluster", "stop")
    assert {n["action"] for n in stopped["nodes"]} == {"stopped"}
    for host in ("host1", "host2", "host3"):
        assert ray_processes(tb, host) == [], host
    again = env.json("cluster", "stop")
    assert {n["action"] for n in again["nodes"]} == {"not running"}
    assert not any(r["alive"] for r in env.json("cluster", "status")["nodes"])


def test_an_unreachable_host_is_reported_and_the_others_come_up(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    tb.link_down("host3")
    try:
        result = env.grid("cluster", "start", "--json")
        assert result.returncode != 0
        nodes = by_name(json.loads(result.stdout))
        assert (nodes["host1"]["action"], nodes["host2"]["action"]) == ("started", "started")
        assert nodes["host3"]["ok"] is False and nodes["host3"]["reason"]
        rows = by_name(env.json("cluster", "status"))
        assert (rows["host1"]["alive"], rows["host2"]["alive"], rows["host3"]["alive"]) == (True, True, False)
    finally:
        tb.link_up("host3")
    assert {n["action"] for n in env.json("cluster", "stop")["nodes"]} <= {"stopped", "not running"}
    assert ray_processes(tb, "host1") == [] and ray_processes(tb, "host2") == []


SEED = """\
name: seed-cluster
nodes:
  - name: alpha
    host: {ip1}
    port: 22
    user: root
    role: worker
    cpu_count: 1
    gpu_count: 0
    memory_gb: 2
    tags: [cpu]
    ssh_key_path: {key}
    known_hosts: {known_hosts}
  - name: beta
    host: {ip2}
    port: 22
    user: root
    role: master
    cpu_count: 2
    memory_gb: 2
    ssh_key_path: {key}
    known_hosts: {known_hosts}
    ray_start_params:
      object-store-memory: 200000000
    resource_sharing:
      can_share: true
      max_share_cpu: 1
      priority: normal
  - name: gamma
    host: {ip3}
    port: 22
    user: root
    role: worker
    cpu_count: 1
    ssh_key_path: {key}
    known_hosts: {known_hosts}
    ray_start_params:
      resources: '{{"seed_slots": 4}}'
execution:
  timeout_seconds: 600
  working_directory: /tmp
  resource_sharing:
    mode: dynamic_balancing
    thresholds:
      cpu_pressure_high: 0.8
      cpu_pressure_low: 0.5
logging:
  level: WARNING
backend:
  venv: {venv}
"""


def test_a_seed_format_config_starts_with_its_master_as_head(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, root = bed
    ips = {f"ip{i}": h.ip for i, h in enumerate(tb.hosts, 1)}
    seed = root / "my-cluster-enhanced.yaml"
    seed.write_text(SEED.format(key=tb.client_key, known_hosts=tb.known_hosts, venv=VENV, **ips))
    try:
        result = env.grid("cluster", "start", "--json", config=seed)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = by_name(env.json("cluster", "status", config=seed))
        assert rows["beta"]["role"] == "head" and rows["alpha"]["role"] == "worker"
        assert all(r["alive"] for r in rows.values())
        assert rows["gamma"]["resources"]["seed_slots"]["total"] == 4
        assert rows["beta"]["resources"]["object_store_memory"]["total"] == 200000000
        assert rows["alpha"]["memory_bytes"] == 2 * 2**30
        address = json.loads((root / "state" / "seed-cluster" / "ray.json").read_text())["gcs_address"]
        assert address == f"{tb.hosts[1].ip}:6379"
        ran = env.grid("run", "--node", "gamma", "--", "sh", "-c", "hostname; pwd", config=seed)
        assert ran.stdout.split() == ["host3", "/tmp"]
    finally:
        stopped = env.grid("cluster", "stop", config=seed)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(ray_processes(tb, h.name) == [] for h in tb.hosts)
