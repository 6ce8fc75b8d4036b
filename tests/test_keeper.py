"""The SSH keeper (grid_plugin_ssh_paramiko/keeper.py) through the real CLI, from this machine,
which is not a node, against a one-node cluster on a test host. One cluster serves the module;
the tests run in order and the last one stops it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NOBODY = 65534
INFO = ("import json, sys; from grid_core.config import load_file; "
        "from grid_plugin_ssh_paramiko.keeper import KeptTransport, socket_path; "
        "c = load_file(sys.argv[1]); print(json.dumps({**KeptTransport(c.nodes[0], c).info(), "
        "'socket': str(socket_path(c))}))")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    require_testbed()
    work = tmp_path_factory.mktemp("keeper")
    runtime = work / "run"
    runtime.mkdir(mode=0o700)
    with Testbed(1, work / "bed", prefix="gk") as bed:
        config = bed.write_grid_config(work / "grid.toml", name="keep", backend={"python": sys.executable})
        env = {"HOME": str(work / "home"), "GRID_STATE_DIR": str(work / "state"), "GRID_CONFIG": str(config),
               "XDG_RUNTIME_DIR": str(runtime)}
        (work / "home").mkdir()
        world = {"bed": bed, "config": config, "env": env, "text": config.read_text()}
        started = cli(world, "cluster", "start", timeout=300)
        assert started.returncode == 0, started.stderr
        try:
            yield world
        finally:
            config.write_text(world["text"])
            cli(world, "cluster", "stop", timeout=300)


def cli(world: dict[str, Any], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grid_core", *args], capture_output=True, text=True,
                          env={**os.environ, **world["env"]}, timeout=timeout)


def ok(world: dict[str, Any], *args: str) -> Any:
    result = cli(world, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def info(world: dict[str, Any]) -> dict[str, Any]:
    """The keeper's counters (starting one when none runs, as any command would)."""
    result = subprocess.run([sys.executable, "-c", INFO, str(world["config"])], capture_output=True, text=True,
                            env={**os.environ, **world["env"]}, timeout=60)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def logins(world: dict[str, Any]) -> int:
    return world["bed"].hosts[0].sshd_log.read_text().count("Accepted publickey")


def test_later_commands_reuse_one_connection(world: dict[str, Any]) -> None:
    before, accepted = info(world), logins(world)
    assert before["streamlocal"]["host1"] is True  # sshd forwards the service's socket: no relay on the head
    ok(world, "jobs", "list")
    status = ok(world, "cluster", "status")
    assert status["nodes"][0]["reachable"] and status["nodes"][0]["alive"]
    two = [subprocess.Popen([sys.executable, "-m", "grid_core", *argv, "--json"], env={**os.environ, **world["env"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for argv in (["boost", "list"], ["offload", "auto", "--status"])]
    for proc in two:  # two CLIs at once, on one keeper
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        json.loads(out)
    after = info(world)
    assert after["pid"] == before["pid"]
    assert after["connects"] == before["connects"] and logins(world) == accepted  # no new SSH connection
    assert after["served"] >= before["served"] + 4
    imports = subprocess.run([sys.executable, "-X", "importtime", "-m", "grid_core", "jobs", "list", "--json"],
                             capture_output=True, text=True, env={**os.environ, **world["env"]}, timeout=60)
    assert imports.returncode == 0
    assert not [line for line in imports.stderr.splitlines() if line.rstrip().endswith("| paramiko")]


def test_another_users_connection_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    path = Path(info(world)["socket"])
    # Another user cannot reach the 0700 directory; to see the keeper itself refuse one, it gets
    # a hard link to the socket in a directory it may enter, and the socket's mode opened.
    shared = Path(f"/tmp/grid-keeper-test-{os.getpid()}")
    shared.mkdir(mode=0o755)
    link = shared / "keeper.sock"
    os.link(path, link)
    path.chmod(0o777)
    try:
        probe = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                 "s.sendall(b'{\"op\": \"info\"}\\n'); print(s.recv(4096).decode())")
        other = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                sys.executable, "-c", probe, str(link)], capture_output=True, text=True, timeout=60)
        assert other.returncode == 0, other.stderr
        assert json.loads(other.stdout)[:2] == ["error", "transport"] and "serves only uid 0" in other.stdout
    finally:
        path.chmod(0o600)
        link.unlink()
        shared.rmdir()
    path.parent.chmod(0o711)  # and the CLI will not use a directory that others may enter
    try:
        refused = cli(world, "jobs", "list", "--json")
        assert refused.returncode != 0 and "only you can use" in refused.stderr and "Traceback" not in refused.stderr
    finally:
        path.parent.chmod(0o700)
    ok(world, "jobs", "list")


def test_a_killed_keepers_socket_is_replaced(world: dict[str, Any]) -> None:
    first = info(world)
    os.kill(first["pid"], signal.SIGKILL)
    assert gone(first["pid"])
    assert Path(first["socket"]).exists()  # left behind, as after a crash
    assert ok(world, "jobs", "list") == []
    assert info(world)["pid"] != first["pid"]


def test_a_command_with_threads_starts_it_as_a_new_interpreter(world: dict[str, Any]) -> None:
    """A keeper is a fork of the command that needs it, unless that command runs threads already
    (a fork could inherit a lock another thread holds): then it is a new interpreter."""
    first = info(world)
    assert Path(f"/proc/{first['pid']}/comm").read_text().strip() == "grid-keeper"
    os.kill(first["pid"], signal.SIGKILL)
    assert gone(first["pid"])
    threaded = "import threading, time; threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
    result = subprocess.run([sys.executable, "-c", threaded + INFO.replace("; ", "\n"), str(world["config"])],
                            capture_output=True, text=True, env={**os.environ, **world["env"]}, timeout=60)
    assert result.returncode == 0, result.stderr
    second = json.loads(result.stdout)
    assert "grid_plugin_ssh_paramiko.keeper" in Path(f"/proc/{second['pid']}/cmdline").read_text()
    assert ok(world, "jobs", "list") == [] and info(world)["pid"] == second["pid"]


def test_a_changed_config_replaces_it_and_it_leaves_when_idle(world: dict[str, Any]) -> None:
    first = info(world)
    world["config"].write_text(world["text"] + "\n[ssh]\npersist_seconds = 1.0\n")
    assert ok(world, "jobs", "list") == []
    assert gone(first["pid"])
    second = info(world)
    assert second["pid"] != first["pid"] and second["persist_seconds"] == 1.0
    assert gone(second["pid"]) and not Path(second["socket"]).exists()  # idle for a second
    world["config"].write_text(world["text"] + "\n[ssh]\npersist_seconds = 0\n")
    assert ok(world, "jobs", "list") == []  # as before keepers: a connection of its own
    assert not Path(second["socket"]).exists()
    world["config"].write_text(world["text"])


def test_the_relay_where_sshd_does_not_forward_unix_sockets(world: dict[str, Any]) -> None:
    bed, host = world["bed"], world["bed"].hosts[0]
    config_text = host.sshd_config.read_text()
    host.sshd_config.write_text(config_text + "AllowStreamLocalForwarding no\n")
    bed.kill_sshd(host)
    bed.start_sshd(host)
    try:
        os.kill(info(world)["pid"], signal.SIGKILL)  # its connection predates the change
        assert ok(world, "jobs", "list") == []
        assert info(world)["streamlocal"]["host1"] is False
        doctor = cli(world, "doctor")
        assert "relay.py on the head" in doctor.stdout, doctor.stdout + doctor.stderr
    finally:
        host.sshd_config.write_text(config_text)
        bed.kill_sshd(host)
        bed.start_sshd(host)
    os.kill(info(world)["pid"], signal.SIGKILL)
    assert ok(world, "jobs", "list") == []
    assert info(world)["streamlocal"]["host1"] is True
    assert "streamlocal" in cli(world, "doctor").stdout


def test_cluster_stop_ends_it(world: dict[str, Any]) -> None:
    keeper = info(world)
    stopped = cli(world, "cluster", "stop", timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert gone(keeper["pid"]) and not Path(keeper["socket"]).exists()
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
        sock.connect(keeper["socket"])
    # With no keeper, a command starts one as it begins (KeptTransport.warm); a stop ends that one too.
    again = cli(world, "cluster", "stop", timeout=300)
    assert again.returncode == 0, again.stderr
    assert not Path(keeper["socket"]).exists()
