"""A job's runner (jobs.JobRunner) starting and stopping its command, with real processes and a
reporter the test keeps; the Ray actor around it is tested in test_ray_local.py."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from grid_plugin_ray_backend.jobs import JobRunner, Reporter


class Registry(Reporter):
    """The runner's reports (jobs.Reporter), kept here instead of sent to the service."""

    def __init__(self) -> None:
        super().__init__("j", "ns")
        self.log: list[tuple[str, Any]] = []

    def _send(self, chunks: Sequence[tuple[str, str]], fields: Mapping[str, Any]) -> None:
        self.log.append(("update", dict(fields)) if fields else ("append", list(chunks)))

    def running(self) -> bool:
        return any(name == "update" and value.get("state") == "running" for name, value in self.log)


class Driven(JobRunner):
    """A runner whose attempts the test drives, instead of the thread the actor starts."""

    def run(self) -> int:
        return 0


def test_a_job_stopped_before_its_command_starts_never_starts(tmp_path: Path) -> None:
    """The race `jobs stop` lost: a stop that came while the runner was placed but its command
    not yet started found nothing to stop, and the command then ran on."""
    ran = tmp_path / "ran"
    runner = Driven("j1", [sys.executable, "-c", f"open({str(ran)!r}, 'w')"], str(tmp_path), {}, "ns")
    assert runner.stop()
    assert runner._attempt(Registry()) == 128 + signal.SIGTERM
    assert runner.proc is None and not ran.exists()


def test_stop_ends_the_command_s_whole_session_and_then_reports_it_ended(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(child_pid)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(300)\n")
    runner, registry = Driven("j2", [sys.executable, "-c", script], str(tmp_path), {}, "ns"), Registry()
    statuses: list[int] = []
    attempt = threading.Thread(target=lambda: statuses.append(runner._attempt(registry)))
    attempt.start()
    deadline = time.monotonic() + 30
    while not (registry.running() and child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runner.stop()
    attempt.join(timeout=30)
    assert statuses == [128 + signal.SIGTERM]
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    runner.done.set()  # as run() does once the record is final
    assert not runner.stop()  # it has ended: nothing to stop


def test_a_stop_between_retries_ends_the_retries(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    script = f"open({str(runs)!r}, 'a').write('x'); raise SystemExit(1)"
    runner, registry = Driven("j3", [sys.executable, "-c", script], str(tmp_path), {}, "ns", retries=3), Registry()
    assert runner._attempt(registry) == 1
    assert runner.stop()
    assert runner._attempt(registry) == 128 + signal.SIGTERM
    assert runs.read_text() == "x"  # the retry never ran


def test_each_attempt_has_its_own_time_limit(tmp_path: Path) -> None:
    """A retry after a timeout that succeeds is a success, not another timeout."""
    flag = tmp_path / "tried"
    script = (f"import os, time\nif not os.path.exists({str(flag)!r}):\n"
              f"    open({str(flag)!r}, 'w').close(); time.sleep(60)\n")
    runner, registry = Driven("j4", [sys.executable, "-c", script], str(tmp_path), {}, "ns", 1.0, 1), Registry()
    assert runner._attempt(registry) == 124
    assert runner._attempt(registry) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"
