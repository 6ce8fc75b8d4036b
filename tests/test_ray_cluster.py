"""The ray backend on three real test hosts (sshd and Ray in their own namespaces), through the real CLI.

One testbed and one installed venv per host serve the whole module; the tests run in file order
and each leaves the cluster as the next expects it: install, start, status, jobs, idempotent start,
repair of a killed worker, token refusal, stop; then a start with one host unreachable, and a
start from a config in the seed's YAML format.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
# The GCS declares a silent node dead after about 10 s instead of about 30 s (the fault tests);
# not faster, so that a node busy starting on a loaded 2-core machine is never taken for dead.
FAST_DEATH = {"RAY_health_check_period_ms": "2000", "RAY_health_check_timeout_ms": "2000",
              "RAY_health_check_failure_threshold": "5"}
RAY_NAMES = ("raylet", "gcs_server", "ray::", "ray/dashboard", "log_monitor", "monitor.py", "default_worker")


def fill_wheelhouse() -> Path:
    """Ray and the third-party requirements of grid's distributions, as wheels; downloaded again
    when a requirement has no wheel there yet (a dependency added since the last run)."""
    import re

    from grid_plugin_ray_backend.install import wanted

    requirements = {f"ray=={RAY_VERSION}"}
    for dist in wanted():
        for req in metadata.requires(dist) or []:
            name = req.split(";")[0].strip()
            if "extra ==" not in req and not name.lower().startswith(("grid-", "grid_", "ray")):
                requirements.add(name)
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "_", name).lower()

    have = {norm(w.name.split("-", 1)[0]) for w in WHEELHOUSE.glob("*.whl")}
    if all(norm(re.split(r"[\s<>=!~\[]", r, maxsplit=1)[0]) in have for r in requirements):
        return WHEELHOUSE
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
        # A short lease: a job on a cut-off worker is lost 10 s after its runner last reported.
        config = edit_config(tb.write_grid_config(root / "grid.toml", name="tb", ssh={"connect_timeout": 3.0},
                                                  backend={"venv": VENV, "env": FAST_DEATH},
                                                  queue={"lease_seconds": 10}))
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
    assert all(r["alive"] for r in rows.values()), {n: (r["engine_error"], r["error"]) for n, r in rows.items()}
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


def test_the_service_runs_the_config_each_request_carries(bed: tuple[Testbed, Env, Path]) -> None:
    """A node removed from the config, then added back: the service adopts each revision the CLI
    sends, so a node the config gained can be held at once."""
    _, env, root = bed
    data = tomllib.loads((root / "grid.toml").read_text())
    two = root / "two-nodes.toml"
    two.write_text(tomli_w.dumps({**data, "nodes": data["nodes"][:2]}))
    refused = env.grid("offload", "hold", "host3", config=two)
    assert refused.returncode != 0 and "host3" in refused.stderr and "Traceback" not in refused.stderr
    assert [n["name"] for n in env.json("offload", "auto", "--status", config=two)["nodes"]] == ["host1", "host2"]
    held = env.grid("offload", "hold", "host3", "--reason", "added")  # the three-node config again
    assert held.returncode == 0, held.stderr
    status = env.json("offload", "auto", "--status")
    assert status["held"]["host3"]["reason"] == "manual: added" and status["held"]["host3"]["groups"]
    assert env.grid("offload", "release", "host3").returncode == 0


def test_memory_from_a_machine_that_is_not_a_node(bed: tuple[Testbed, Env, Path]) -> None:
    """The test run's own machine is none of the cluster's nodes: the memory commands reach the
    pool through the service on host1, over SSH, and the bytes come back identical."""
    tb, env, root = bed
    data = os.urandom(3 * 2**20 + 7)
    source, out = root / "blob.in", root / "blob.out"
    source.write_bytes(data)
    put = env.grid("memory", "put", "blob", str(source), "--node", "host2")
    assert put.returncode == 0, put.stderr
    got = env.grid("memory", "get", "blob", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == data
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # a new file's mode here, not the staged file's 0600
    # Big enough to come by SFTP from a staged file on the head, which the CLI then removed.
    found = tb.host_exec("host1", ["sh", "-c", "find /tmp -name transfers -type d; find /tmp -path '*/transfers/*'"],
                         check=True).stdout.split()
    assert len(found) == 1 and found[0].endswith("/transfers"), found
    (entry,) = [e for e in env.json("memory", "ls") if e["key"] == "blob"]
    assert (entry["node"], entry["size"], entry["state"]) == ("host2", len(data), "ok")
    missing = env.grid("memory", "get", "nothing-here", "-o", str(root / "none.out"))
    assert missing.returncode != 0 and "no entry named 'nothing-here'" in missing.stderr
    assert not (root / "none.out").exists()
    assert env.grid("memory", "rm", "blob").returncode == 0


def test_start_brings_back_only_a_killed_worker(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    before = {n: r["node_id"] for n, r in by_name(env.json("cluster", "status")).items()}
    tb.host_exec("host3", ["pkill", "-KILL", "-x", "raylet"], check=True)  # inside host3 only
    result = env.grid("cluster", "start", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    actions = {n["name"]: n["action"] for n in json.loads(result.stdout)["nodes"]}
    assert actions == {"host1": "running", "host2": "running", "host3": "started"}
    rows = by_name(env.json("cluster", "status"))
    after = {n: r["node_id"] for n, r in rows.items()}
    assert after["host1"] == before["host1"] and after["host2"] == before["host2"], \
        {n: (r["engine_error"], r["error"]) for n, r in rows.items()}
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


def test_job_environment_and_config_never_appear_in_any_command_line(bed: tuple[Testbed, Env, Path]) -> None:
    """execution.environment and backend.env (the whole config, too) reach the service and the job
    over stdin and its socket, never through argv: no `ps` on any host, nor on this machine, shows them."""
    import secrets
    import time

    tb, env, root = bed
    job_marker, config_marker = f"grid-job-{secrets.token_hex(8)}", f"grid-cfg-{secrets.token_hex(8)}"
    data = tomllib.loads((root / "grid.toml").read_text())
    data.setdefault("execution", {})["environment"] = {"GRID_MARKER": job_marker}
    data.setdefault("backend", {}).setdefault("env", {})["GRID_CONFIG_MARKER"] = config_marker
    config = root / "marker.toml"
    config.write_text(tomli_w.dumps(data))
    job = subprocess.Popen([sys.executable, "-m", "grid_core", "run", "--node", "host2", "--", "sh", "-c",
                            'echo "$GRID_MARKER"; sleep 3'],
                           env={**os.environ, **env.vars, "GRID_CONFIG": str(config)}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    listings: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 120
        while job.poll() is None and time.monotonic() < deadline:
            for host in ("host1", "host2", "host3"):
                listings.append((host, tb.host_exec(host, ["ps", "-eo", "args"], check=True).stdout))
            here = subprocess.run(["ps", "-eo", "comm,args"], capture_output=True, text=True, check=True, timeout=30)
            listings.append(("this machine", here.stdout))
            time.sleep(0.05)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()
    assert job.returncode == 0, err
    assert out.strip() == job_marker  # the job got its environment
    assert any(host == "host2" and 'echo "$GRID_MARKER"; sleep 3' in text for host, text in listings), \
        "never saw the job running"
    # The request went through the keeper (which got the config on stdin) and sshd's forward of
    # the service's socket, so no relay ran on the head.
    assert any(host == "this machine" and "grid-keeper" in text for host, text in listings), \
        "never saw the SSH keeper running"
    assert not any(host == "host1" and "Relays one request to the grid service" in text for host, text in listings)
    leaked = [(host, line) for host, text in listings for line in text.splitlines()
              if job_marker in line or config_marker in line]
    assert leaked == []


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


def seed_config_for(tb: Testbed, root: Path) -> Path:
    """tests/data/seed-every-key.yaml (every key of the seed's format) pointed at the test hosts:
    its three nodes on host1-3, sizes the hosts can hold, and initialization commands that leave
    proof on their node."""
    import yaml

    from tests.conftest import REPO

    data = yaml.safe_load((REPO / "tests" / "data" / "seed-every-key.yaml").read_text())
    for node, host in zip(data["nodes"], tb.hosts, strict=True):
        node.update(host=host.ip, port=22, user="root", ssh_key_path=str(tb.client_key),
                    known_hosts=str(tb.known_hosts), cpu_count=1, memory_gb=2, gpu_count=0)
        node.setdefault("resource_sharing", {})["initialization_commands"] = [
            'echo "init ran on $(hostname)" > /tmp/grid-init-proof', "cat /tmp/grid-init-proof"]
    data["logging"]["file_path"] = str(root / "grid-seed.log")
    data["backend"] = {"venv": VENV}  # grid's own keys sit beside the seed's
    path = root / "my-cluster-enhanced.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_seed_format_config_with_every_key_starts_and_means_what_it_says(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, root = bed
    seed = seed_config_for(tb, root)
    try:
        result = env.grid("cluster", "start", "--json", config=seed)
        assert result.returncode == 0, result.stdout + result.stderr
        rows = by_name(env.json("cluster", "status", config=seed))
        assert rows["gpu-master"]["role"] == "head" and rows["gpu1"]["role"] == "worker"
        assert all(r["alive"] for r in rows.values())
        assert rows["gpu1"]["resources"]["slots"]["total"] == 4  # ray_start_params.resources, a table
        assert rows["gpu-master"]["resources"]["head_slot"]["total"] == 1  # ... and a JSON string
        assert rows["gpu-master"]["resources"]["object_store_memory"]["total"] == 200000000
        assert rows["gpu2"]["memory_bytes"] == 2 * 2**30
        address = json.loads((root / "state" / "seed-every-key" / "ray.json").read_text())["gcs_address"]
        assert address == f"{tb.hosts[0].ip}:6379"
        # auto_offload.enabled: the controller was started with the cluster and is deciding already
        offload = env.json("offload", "auto", "--status", config=seed)
        assert offload["enabled"] is True and offload["interval_seconds"] == 4, offload
        deadline = time.monotonic() + 30
        while offload["decision"] is None and time.monotonic() < deadline:
            time.sleep(1.0)
            offload = env.json("offload", "auto", "--status", config=seed)
        assert offload["decision"] is not None, offload
        ran = env.grid("run", "--node", "gpu2", "--", "sh", "-c", "hostname; pwd; echo $OMP_NUM_THREADS",
                       config=seed)
        # made at start, and jobs run there; runtime_env.env_vars reach the job
        assert ran.stdout.split() == ["host3", "/tmp/grid-seed-work", "4"], ran.stderr
        for host in tb.hosts:  # each node's initialization commands ran there
            proof = tb.host_exec(host, ["cat", "/tmp/grid-init-proof"], check=True).stdout
            assert proof.strip() == f"init ran on {host.name}"
        retried = env.grid("run", "--node", "gpu1", "--", "sh", "-c", "echo try; exit 3", config=seed)
        assert (retried.returncode, retried.stdout.split()) == (3, ["try", "try", "try"]), retried.stderr
        assert "retrying (2 of 2)" in retried.stderr  # execution.retry_attempts
    finally:
        stopped = env.grid("cluster", "stop", config=seed)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all(ray_processes(tb, h.name) == [] for h in tb.hosts)


def test_a_failing_initialization_command_is_shown_in_the_start_table(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, root = bed
    config = edit_config(tb.write_grid_config(root / "init-fails.toml", nodes=["host2"], name="initfail",
                                              backend={"venv": VENV, "port": 6390}))
    data = tomllib.loads(config.read_text())
    data["nodes"][0]["resource_sharing"] = {"initialization_commands": ["echo nope >&2; exit 4"]}
    config.write_text(tomli_w.dumps(data))
    result = env.grid("cluster", "start", "--json", config=config)
    assert result.returncode != 0
    row = json.loads(result.stdout)["nodes"][0]
    assert row["ok"] is False and "initialization command" in row["reason"] and "nope" in row["reason"], row
    assert ray_processes(tb, "host2") == []  # Ray was never started there


def test_install_refuses_a_directory_another_user_made_first(bed: tuple[Testbed, Env, Path]) -> None:
    """A local user who makes grid's node directory first (0777) could plant a wheel there."""
    from grid_core.config import load_file
    from grid_plugin_ray_backend import layout

    tb, env, root = bed
    config = tb.write_grid_config(root / "planted.toml", nodes=["host2"], name="planted",
                                  backend={"venv": "/tmp/grid-venv-planted"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRID_STATE_DIR", env.vars["GRID_STATE_DIR"])
        cfg = load_file(config)
        directory = layout.node_dir(cfg, cfg.nodes[0])
    tb.host_exec("host2", ["sh", "-c", f"mkdir -p {directory}/wheels && chmod 777 {directory} {directory}/wheels "
                                       f"&& chown -R nobody {directory}"], check=True)
    result = env.grid("cluster", "install", "--wheelhouse", str(WHEELHOUSE), "--json", config=config)
    assert result.returncode != 0
    row = json.loads(result.stdout)["nodes"][0]
    assert "refusing" in row["reason"] and "own directory" in row["reason"], row
    assert tb.host_exec("host2", ["test", "-e", "/tmp/grid-venv-planted"]).returncode != 0  # nothing installed


def test_a_cluster_with_tls_runs_jobs_and_refuses_clients_without_it(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, root = bed
    config = edit_config(tb.write_grid_config(root / "tls.toml", nodes=["host2", "host3"], name="tls",
                                              backend={"venv": VENV, "port": 6391, "tls": True}))
    try:
        started = env.grid("cluster", "start", "--json", config=config)
        assert started.returncode == 0, started.stdout + started.stderr
        for host in ("host2", "host3"):
            ran = env.grid("run", "--node", host, "--", "hostname", config=config)
            assert (ran.returncode, ran.stdout.strip()) == (0, host), ran.stderr
        address = json.loads((root / "state" / "tls" / "ray.json").read_text())["gcs_address"]
        ask = ("import sys\nfrom ray._raylet import GcsClient\n"
               "print(len(GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)))")
        state = root / "state" / "tls"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_TLS", "RAY_USE_TLS"))}
        plain = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state / "auth_token"),
                 # A refused client gives up after 2 s, not Ray's default 60 (each second is the suite's).
                 "RAY_gcs_rpc_server_reconnect_timeout_s": "2", "RAY_gcs_rpc_server_connect_timeout_s": "2"}
        refused = subprocess.run([sys.executable, "-c", ask, address], capture_output=True, text=True, timeout=60,
                                 env=plain)
        # The token alone no longer gets in: the channel is TLS.
        assert refused.returncode != 0 and "Failed to connect to GCS" in refused.stderr, refused.stderr[-2000:]
        tls = {**plain, "RAY_USE_TLS": "1", "RAY_TLS_CA_CERT": str(state / "tls" / "ca.crt"),
               "RAY_TLS_SERVER_CERT": str(state / "tls" / "node.crt"),
               "RAY_TLS_SERVER_KEY": str(state / "tls" / "node.key")}
        allowed = subprocess.run([sys.executable, "-c", ask, address], capture_output=True, text=True, timeout=60,
                                 env=tls)
        assert allowed.stdout.strip() == "2", allowed.stderr[-2000:]
    finally:
        env.grid("cluster", "stop", config=config)
    for host in ("host2", "host3"):  # stop takes the token and certificates back
        left = tb.host_exec(host, ["sh", "-c", "ls /tmp/grid-tls-*/auth_token /tmp/grid-tls-*/tls/node.key"])
        assert left.returncode != 0 and not left.stdout.strip(), left.stdout


def test_three_concurrent_starts_leave_one_raylet_per_node(bed: tuple[Testbed, Env, Path]) -> None:
    """`cluster start` takes the cluster's lock: the later runs wait, then find the nodes up."""
    tb, env, _ = bed
    starts = [subprocess.Popen([sys.executable, "-m", "grid_core", "cluster", "start", "--json"],
                               env={**os.environ, **env.vars}, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE) for _ in range(3)]
    try:
        outs = [p.communicate(timeout=300) for p in starts]
        assert [p.returncode for p in starts] == [0, 0, 0], [err for _, err in outs]
        assert any("waiting for `grid cluster start` (pid" in err for _, err in outs), [err for _, err in outs]
        actions = sorted(sorted({n["action"] for n in json.loads(out)["nodes"]}) for out, _ in outs)
        assert actions == [["running"], ["running"], ["started"]]
        for host in ("host1", "host2", "host3"):
            raylets = [p for p in ray_processes(tb, host) if p.split()[0].endswith("/raylet")]
            assert len(raylets) == 1, (host, raylets)
    finally:
        for p in starts:
            if p.poll() is None:
                p.kill()
        env.grid("cluster", "stop")


def test_the_cli_killed_in_the_middle_of_start_leaves_nothing_the_next_start_cannot_finish(
        bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    first = subprocess.Popen([sys.executable, "-m", "grid_core", "cluster", "start"], env={**os.environ, **env.vars},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ray_processes(tb, "host1"):
        time.sleep(0.2)  # until the head's Ray is on its way up
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    result = env.grid("cluster", "start", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(r["alive"] for r in env.json("cluster", "status")["nodes"])
    for host in ("host1", "host2", "host3"):
        raylets = [p for p in ray_processes(tb, host) if p.split()[0].endswith("/raylet")]
        assert len(raylets) == 1, (host, raylets)


def test_a_killed_head_is_reported_within_10_s_and_start_repairs_it(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    tb.host_exec("host1", ["pkill", "-KILL", "-x", "gcs_server"], check=True)
    began = time.monotonic()
    status = env.grid("cluster", "status", "--json", timeout=30)
    took = time.monotonic() - began
    rows = by_name(json.loads(status.stdout))
    assert took < 10 and rows["host1"]["alive"] is False, (took, rows["host1"])
    assert rows["host1"]["engine_error"], rows["host1"]
    repaired = env.grid("cluster", "start", "--json")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert all(r["alive"] for r in env.json("cluster", "status")["nodes"])
    ran = env.grid("run", "--node", "host2", "--", "hostname")
    assert ran.stdout.strip() == "host2", ran.stderr


def test_a_worker_cut_off_during_a_job_ends_the_job_with_the_reason(bed: tuple[Testbed, Env, Path]) -> None:
    tb, env, _ = bed
    job = subprocess.Popen([sys.executable, "-m", "grid_core", "run", "--node", "host3", "--no-requeue", "--", "sh",
                            "-c", "echo started; sleep 120"], env={**os.environ, **env.vars}, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "started"
        tb.link_down("host3")
        _, err = job.communicate(timeout=120)
        assert job.returncode not in (0, None) and "host3" in err and "lost" in err, err
        listed = env.json("jobs", "list")
        assert listed[-1]["state"] == "lost" and listed[-1]["node"] == "host3"
    finally:
        if job.poll() is None:
            job.kill()
        tb.link_up("host3")
        env.grid("cluster", "stop")
