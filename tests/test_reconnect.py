"""An attached `grid run` over a channel that breaks, through the real CLI from a machine that is not
a node (this one) against a one-host Ray cluster on a real sshd test host.

One cluster serves the module. The hosts see this interpreter's venv, which is the cluster's venv
too, so nothing is installed. The job prints a numbered line every 100 ms; whatever happens to
the connection, the CLI's output must be exactly 1..N and its exit status the job's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from grid_plugin_ray_backend.attach import SILENT_SECONDS
from tests.conftest import grid, takes_ctrl_c
from tests.testbed import Testbed, require_testbed

pytestmark = [pytest.mark.realhost, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def counting(n: int, status: int) -> list[str]:
    """A job that prints 1..n, one line each 100 ms, then exits with `status`."""
    script = f"import sys, time\nfor i in range(1, {n + 1}):\n    print(i, flush=True)\n    time.sleep(0.1)\n" \
             f"sys.exit({status})\n"
    return ["python3", "-c", script]


def numbers(n: int) -> str:
    return "".join(f"{i}\n" for i in range(1, n + 1))


class Cli:
    """`grid run` in the background, its stdout read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "grid_core", *args], env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=takes_ctrl_c)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        assert len(self.lines) >= count, (self.lines, self.proc.poll())

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        assert self.proc.stderr is not None
        err = self.proc.stderr.read() if self.proc.wait(timeout=timeout) is not None else ""
        self.reader.join(timeout=10)
        return self.proc.returncode, "".join(self.lines), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Testbed, dict[str, str]]]:
    require_testbed()
    root = tmp_path_factory.mktemp("reconnect")
    tb = Testbed(n_hosts=1, workdir=root / "tb")
    try:
        config = tb.write_grid_config(root / "grid.toml", name="rc", ssh={"connect_timeout": 3.0},
                                      node_fields={"cpu_count": 2}, backend={"venv": sys.prefix})
        (root / "home").mkdir()
        env = {"HOME": str(root / "home"), "GRID_STATE_DIR": str(root / "state"), "XDG_STATE_HOME": str(root / "xdg"),
               "RAY_AUTH_MODE": "disabled", "GRID_CONFIG": str(config)}
        started = grid("cluster", "start", "--json", env=env, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        yield tb, env
        grid("cluster", "stop", env=env, timeout=120)
    finally:
        tb.close()  # kills the host, and the Ray inside it, whatever the tests left


def last_job(env: dict[str, str]) -> dict[str, Any]:
    listed = grid("jobs", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)[-1]  # type: ignore[no-any-return]


def test_a_killed_ssh_connection_loses_no_line_and_repeats_none(cluster: tuple[Testbed, dict[str, str]]) -> None:
    tb, env = cluster
    cli = Cli(env, "run", "--node", "host1", "--", *counting(60, 7))
    try:
        cli.wait_for(15)
        # The connection's own sshd processes on the head ("sshd: root@notty", "sshd: root [priv]"),
        # not the listener ("sshd: /usr/sbin/sshd -D ... [listener]").
        tb.host_exec("host1", ["pkill", "-KILL", "-f", "^sshd: root"], check=True)
        status, out, err = cli.finish()
    finally:
        cli.kill()
    assert out == numbers(60), err
    assert status == 7, err
    job = last_job(env)
    assert "lost the connection" in err and f"job {job['id']} is running" in err and "reconnected" in err, err
    assert f"grid jobs logs {job['id']} --follow" in err
    assert (job["state"], job["exit_status"]) == ("failed", 7)


def test_a_cut_link_loses_no_line_and_the_job_ends_while_cut(cluster: tuple[Testbed, dict[str, str]]) -> None:
    """The link goes down without a word (no FIN, no RST): the CLI tells it by the service's
    silence, and the job ends while it is cut; its output and exit status still come whole."""
    tb, env = cluster
    cli = Cli(env, "run", "--node", "host1", "--", *counting(100, 3))
    try:
        cli.wait_for(10)
        tb.link_down("host1")
        try:
            time.sleep(SILENT_SECONDS + 3)  # past the silence that tells a dead link
        finally:
            tb.link_up("host1")
        status, out, err = cli.finish()
    finally:
        cli.kill()
    assert out == numbers(100), err
    assert status == 3, err
    assert "lost the connection" in err and "nothing came" in err and "reconnected" in err, err


def test_a_killed_client_leaves_the_job_to_finish_and_logs_follow_picks_it_up(
        cluster: tuple[Testbed, dict[str, str]]) -> None:
    _, env = cluster
    cli = Cli(env, "run", "--node", "host1", "--", *counting(40, 0))
    try:
        cli.wait_for(5)
        cli.proc.send_signal(signal.SIGKILL)
        cli.proc.wait(timeout=10)
    finally:
        cli.kill()
    job = last_job(env)
    assert job["state"] == "running", job
    followed = grid("jobs", "logs", job["id"], "--follow", env=env, timeout=120)
    assert followed.returncode == 0 and followed.stdout == numbers(40), followed.stderr
    job = last_job(env)
    assert (job["state"], job["exit_status"]) == ("succeeded", 0)
    logs = grid("jobs", "logs", job["id"], env=env)
    assert logs.stdout == numbers(40)


def test_ctrl_c_still_stops_the_job_and_says_so(cluster: tuple[Testbed, dict[str, str]]) -> None:
    _, env = cluster
    cli = Cli(env, "run", "--node", "host1", "--", *counting(3000, 0))
    try:
        cli.wait_for(5)
        cli.proc.send_signal(signal.SIGINT)
        status, out, err = cli.finish(timeout=60)
    finally:
        cli.kill()
    job = last_job(env)
    assert status == 130, err
    assert f"interrupted: stopping job {job['id']}" in err and f"job {job['id']}: stopped" in err, err
    assert job["state"] == "stopped", job
    assert out.splitlines() == [str(i) for i in range(1, len(out.splitlines()) + 1)]  # what came, in order
