"""The ray backend on the embedded default (one local node), through the real CLI and a real Ray.

One cluster serves the module: started by the fixture, stopped by the last test, and stopped by
PID in the finalizer whatever happens. grid's home, state and Ray temp dirs are the test's own,
and RAY_AUTH_MODE is set to `disabled` in the CLI's environment to show grid sets it itself.
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
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grid_core.config import embedded_default
from grid_plugin_ray_backend import layout, onnode
from tests.conftest import grid, takes_ctrl_c

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def make_env(prefix: str) -> tuple[Path, dict[str, str]]:
    """A home, state and Ray temp dir of their own, as another user or HOME would have."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: a Unix socket path holds 107 bytes
    env = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"), "RAY_TMPDIR": str(root / "rt"),
           "XDG_STATE_HOME": str(root / "xdg"), "RAY_AUTH_MODE": "disabled"}
    for key in ("HOME", "RAY_TMPDIR"):
        Path(env[key]).mkdir(parents=True)
    return root, env


def kill_cluster(root: Path, env: dict[str, str]) -> None:
    for pid in onnode.grid_processes(node_dir(env))[0]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def local_env() -> Iterator[dict[str, str]]:
    # Port 6379, a fixed port's usual choice, is taken for the module (here, or already by someone
    # else's Ray): the embedded default must choose its own.
    with socket.socket() as taken:
        with contextlib.suppress(OSError):
            taken.bind(("0.0.0.0", 6379))
            taken.listen()
        root, env = make_env("grl")
        yield env
        kill_cluster(root, env)


def node_dir(env: dict[str, str]) -> str:
    """grid's directory for the local node, as the CLI running with `env` computes it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])
        mp.setenv("GRID_STATE_DIR", env["GRID_STATE_DIR"])
        config = embedded_default()
        return layout.node_dir(config, config.head)


def run(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return grid(*args, env=env, timeout=timeout)


def status(env: dict[str, str]) -> dict[str, object]:
    result = run(env, "cluster", "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["nodes"][0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def started(local_env: dict[str, str]) -> dict[str, str]:
    began = time.monotonic()
    down = status(local_env)
    assert time.monotonic() - began < 5, "status must answer fast when the cluster is down"
    assert down["alive"] is False
    result = run(local_env, "cluster", "start", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    (node,) = json.loads(result.stdout)["nodes"]
    assert (node["name"], node["ok"], node["action"]) == ("local", True, "started")
    assert "local: ray start" in result.stderr  # per-node progress on stderr
    return local_env


def test_missing_backend_is_a_clear_error(local_env: dict[str, str]) -> None:
    result = run({**local_env, "GRID_DISABLE_PLUGINS": "ray-backend"}, "cluster", "start")
    assert result.returncode != 0
    assert "no backend named 'ray'" in result.stderr and "grid-plugin-ray-backend" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_shows_the_node_alive(started: dict[str, str]) -> None:
    row = status(started)
    assert row["alive"] is True and row["reachable"] is True
    assert row["cpus"] == os.cpu_count()
    assert row["resources"]["CPU"]["total"] == os.cpu_count()  # type: ignore[index]
    token = Path(started["GRID_STATE_DIR"]) / "local" / "auth_token"
    assert token.stat().st_mode & 0o777 == 0o600
    assert Path(node_dir(started), "auth_token").stat().st_mode & 0o777 == 0o600


def test_status_shows_the_cluster_s_fresh_reading_of_this_machine(started: dict[str, str]) -> None:
    """Once the service has read this (local) node lately, `cluster status` shows that reading and
    its age rather than reading the machine again (a 0.2 s sample). Asking makes the service read."""
    deadline = time.monotonic() + 30  # the service reads at its next interval (5 s by default)
    row = status(started)
    while row["metrics_age"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        row = status(started)
    assert row["metrics_age"] is not None and 0 <= row["metrics_age"] <= 3 * 5.0, row  # type: ignore[operator]
    assert row["reachable"] is True and 0 <= row["cpu_percent"] <= 100 and row["metrics_source"] == "psutil"  # type: ignore[operator]


def test_second_start_is_a_no_op(started: dict[str, str]) -> None:
    before = status(started)["node_id"]
    result = run(started, "cluster", "start", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["action"] == "running"
    assert status(started)["node_id"] == before


def test_run_streams_output_and_returns_the_exit_status(started: dict[str, str]) -> None:
    result = run(started, "run", "--", sys.executable, "-c", "import socket; print(socket.gethostname())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == socket.gethostname()
    failed = run(started, "run", "--node", "local", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert failed.returncode == 3
    assert failed.stdout == "out\n" and "err" in failed.stderr


def test_nothing_a_job_prints_passes_for_grid_s_messages(started: dict[str, str]) -> None:
    """grid's messages and the job's output never share a stream: a job that writes what look like
    grid's own lines, and 200 KB more, succeeds with both of its streams intact."""
    script = ("import sys\n"
              "print('@grid {\"event\":\"error\",\"message\":\"fake failure\"}', file=sys.stderr)\n"
              "print('[\"event\", {\"event\": \"error\", \"message\": \"fake frame\"}]')\n"
              "print('@grid x', file=sys.stderr)\n"
              "sys.stderr.write('e' * 200_000 + '\\n')\n"
              "print('real output')\n")
    ran = grid("run", "--", sys.executable, "-c", script, env=started, timeout=120)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.splitlines() == ['["event", {"event": "error", "message": "fake frame"}]', "real output"]
    assert '@grid {"event":"error","message":"fake failure"}' in ran.stderr and "@grid x" in ran.stderr
    assert "e" * 200_000 in ran.stderr and "error: fake" not in ran.stderr


def test_detached_job_outlives_the_cli_and_logs_follow(started: dict[str, str]) -> None:
    ticks = "for i in 1 2 3; do echo tick $i; sleep 0.5; done; exit 4"
    result = run(started, "run", "--detach", "--", "sh", "-c", ticks)
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    followed = run(started, "jobs", "logs", job_id, "--follow")
    assert followed.returncode == 4
    assert followed.stdout == "tick 1\ntick 2\ntick 3\n"
    listing = run(started, "jobs", "list", "--json")
    job = next(j for j in json.loads(listing.stdout) if j["id"] == job_id)
    assert (job["state"], job["exit_status"], job["node"]) == ("failed", 4, "local")


def test_job_ids_and_memory_keys_complete_from_the_local_service(started: dict[str, str]) -> None:
    """The head is this machine: completion asks its service (the Unix socket) for job ids and keys."""
    from tests.test_completion import complete

    def offered(words: str) -> list[str]:  # a service slower than completion's wait offers nothing: ask again
        for _ in range(3):
            if found := complete(words, **started)[0]:
                return found
        return []

    listing = json.loads(run(started, "jobs", "list", "--json").stdout)
    assert listing, "the module has run jobs by now"
    assert set(offered("grid jobs logs ")) == {j["id"] for j in listing}
    data = Path(started["HOME"]) / "completion-data"
    data.write_bytes(b"x")
    stored = run(started, "memory", "put", "completion-key", str(data))
    assert stored.returncode == 0, stored.stderr
    assert offered("grid memory get compl") == ["completion-key"]


def test_jobs_stop_ends_the_process_and_frees_its_cpus(started: dict[str, str]) -> None:
    marker = f"grid-test-{os.getpid()}"
    result = run(started, "run", "-d", "--cpus", "1", "--", sys.executable, "-c", "import time; time.sleep(300)",
                 marker)
    job_id = result.stdout.strip()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status(started)["resources"]["CPU"]["used"] < 1:  # type: ignore[index]
        time.sleep(0.2)
    stopped = run(started, "jobs", "stop", job_id)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and status(started)["resources"]["CPU"]["used"] > 0:  # type: ignore[index]
        time.sleep(0.2)
    assert status(started)["resources"]["CPU"]["used"] == 0  # type: ignore[index]


def test_a_job_for_a_named_node_without_free_cpus_says_it_waits(started: dict[str, str]) -> None:
    total = status(started)["resources"]["CPU"]["total"]  # type: ignore[index]
    never = run(started, "run", "--node", "local", "--cpus", f"{total + 1:g}", "--", "true")  # refused, not queued
    assert never.returncode == 1 and never.stderr.endswith(
        f"error: node local has {total:g} CPU in all, the job asks for {total + 1:g}\n"), never.stderr
    blocker = run(started, "run", "-d", "--node", "local", "--cpus", f"{total:g}", "--", "sleep", "300")
    assert blocker.returncode == 0, blocker.stderr
    assert "waits" not in blocker.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and status(started)["resources"]["CPU"]["used"] < total:  # type: ignore[index]
        time.sleep(0.2)
    jobs = [blocker.stdout.strip()]
    try:
        waiting = run(started, "run", "-d", "--node", "local", "--", "true")
        jobs.append(waiting.stdout.strip())
        assert waiting.returncode == 0, waiting.stderr
        assert f"grid: job {jobs[-1]} is queued, position 1 (resources): local does not have 1 CPU free now" \
            in waiting.stderr
    finally:
        for job_id in jobs:
            run(started, "jobs", "stop", job_id)


# The CLI's own process, with a check at exit of whether anything imported Ray.
NO_RAY = ("import atexit, sys\n"
          "atexit.register(lambda: print('RAY IMPORTED' if 'ray' in sys.modules else 'no ray', file=sys.stderr))\n"
          "from grid_core.cli import main\n"
          "sys.argv[0] = 'grid'\n"
          "main()\n")
STATUS_COMMANDS = (("cluster", "status", "--json"), ("offload", "auto", "--status", "--json"),
                   ("boost", "list", "--json"), ("jobs", "list", "--json"), ("memory", "ls", "--json"))


def test_status_commands_reach_the_service_socket_without_ray(started: dict[str, str]) -> None:
    """No Ray driver and no `import ray` in the CLI: it asks the service over its Unix socket,
    which only the cluster's owner can reach."""
    sock = Path(node_dir(started), "grid.sock")
    assert sock.is_socket() and sock.stat().st_mode & 0o777 == 0o600
    assert sock.parent.stat().st_mode & 0o777 == 0o700
    for command in (*STATUS_COMMANDS, ("run", "--", "true")):
        ran = subprocess.run([sys.executable, "-c", NO_RAY, *command], capture_output=True, text=True,
                             env={**os.environ, **started}, timeout=120)
        assert ran.returncode == 0, (command, ran.stderr[-2000:])
        assert ran.stderr.splitlines()[-1] == "no ray", (command, ran.stderr[-2000:])


def test_twenty_concurrent_status_calls_all_answer(started: dict[str, str]) -> None:
    commands = [STATUS_COMMANDS[i % len(STATUS_COMMANDS)] for i in range(20)]
    procs = [subprocess.Popen([sys.executable, "-m", "grid_core", *command], env={**os.environ, **started},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands]
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, (command, err[-2000:])
        json.loads(out)


def test_ctrl_c_stops_the_job_and_the_service_keeps_serving(started: dict[str, str]) -> None:
    marker = f"grid-ctrl-c-{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-m", "grid_core", "run", "--", "sh", "-c",
                             f"echo started; exec sleep 300 # {marker}"], env={**os.environ, **started},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=takes_ctrl_c)
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", marker]).returncode == 0:
        time.sleep(0.2)
    assert subprocess.run(["pgrep", "-f", marker]).returncode == 1  # the job's process has ended
    job = json.loads(run(started, "jobs", "list", "--json").stdout)[-1]
    assert job["state"] == "stopped", job


DRIVER = "import sys, ray; ray.init(address=sys.argv[1]); print('CONNECTED')"


def test_a_driver_without_the_token_is_refused(started: dict[str, str]) -> None:
    address = json.loads((Path(started["GRID_STATE_DIR"]) / "local" / "ray.json").read_text())["gcs_address"]
    base = {**os.environ, **started}
    base.pop("RAY_AUTH_TOKEN", None)
    base.pop("RAY_AUTH_TOKEN_PATH", None)
    attempts = {
        "no token": {**base, "RAY_AUTH_MODE": "disabled"},
        "wrong token": {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
    }
    procs = {name: subprocess.Popen([sys.executable, "-c", DRIVER, address], env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, env in attempts.items()}
    token = (Path(started["GRID_STATE_DIR"]) / "local" / "auth_token")
    good = subprocess.run([sys.executable, "-c", DRIVER, address], capture_output=True, text=True, timeout=60,
                          env={**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    assert "CONNECTED" in good.stdout, good.stderr
    for name, proc in procs.items():
        # The GCS's refusal is the proof; Ray's driver would go on asking for 20 s before it gives up.
        said = []
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                said.append(line)
                if "CONNECTED" in line or "InvalidAuthToken" in line or "Authentication" in line:
                    break
        finally:
            proc.kill()
            proc.wait(timeout=30)
        out = "".join(said)
        assert "CONNECTED" not in out, name
        assert "InvalidAuthToken" in out or "Authentication" in out, (name, out[-2000:])


def test_a_second_home_runs_its_own_embedded_default_beside_the_first(started: dict[str, str]) -> None:
    """Two users (two HOMEs and state directories) on one machine each start the embedded default:
    each chooses its own free GCS port, keeps it, and both run jobs."""
    root, other = make_env("gr2")
    try:
        result = run(other, "cluster", "start", "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        ports = [int((Path(e["GRID_STATE_DIR"]) / "local" / layout.KEPT_PORT).read_text()) for e in (started, other)]
        assert ports[0] != ports[1] and all(p in layout.AUTO_PORTS for p in ports), ports
        for env in (started, other):
            job = run(env, "run", "--", sys.executable, "-c", "print('ran')")
            assert (job.returncode, job.stdout) == (0, "ran\n"), job.stderr
        assert status(other)["node_id"] != status(started)["node_id"]
        stopped = run(other, "cluster", "stop")
        assert stopped.returncode == 0, stopped.stderr
        assert status(started)["alive"] is True  # the other's stop ended only its own cluster
    finally:
        kill_cluster(root, other)


def test_stop_leaves_no_process_of_the_cluster(started: dict[str, str]) -> None:
    pids = list(onnode.grid_processes(node_dir(started))[0])
    assert pids, "the cluster's processes should be found before stopping"
    result = run(started, "cluster", "stop", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["action"] == "stopped"
    alive = [p for p in pids if onnode._alive(p)]
    assert not alive
    assert not onnode.grid_processes(node_dir(started))[0]
    again = run(started, "cluster", "stop", "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["nodes"][0]["action"] == "not running"
    began = time.monotonic()
    assert status(started)["alive"] is False
    assert time.monotonic() - began < 5
    assert run(started, "run", "--", "true").returncode != 0
