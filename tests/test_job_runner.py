"""A job's runner (jobs.JobRunner) starting and stopping its command, and keeping its lease,
with real processes and a service the test plays (its answers, or none while "cut off"); the Ray
actor around it is tested in test_ray_local.py and test_queue_cluster.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from grid_plugin_ray_backend.jobs import AGAIN, Fenced, JobRunner, Reporter


class Registry(Reporter):
    """The runner's reports (jobs.Reporter), kept here instead of sent to the service; while `cut`,
    every try fails as an unreachable service's; `counts` False: the service says the attempt is lost."""

    def __init__(self, lease: float = 30.0) -> None:
        super().__init__("j", 1, "ns", lease)
        self.log: list[tuple[str, Any]] = []
        self.tries: list[int] = []
        self.cut, self.counts = False, True

    def _deliver(self, number: int, chunks: Sequence[tuple[str, str]], fields: Mapping[str, Any]) -> bool:
        self.tries.append(number)
        if self.cut:
            raise ConnectionError("the link is cut")
        if self.counts:
            self.log.append(("update", dict(fields)) if fields else ("append", list(chunks)))
        return self.counts

    def tell_fenced(self, message: str) -> None:
        self.log.append(("fenced", message))

    def running(self) -> bool:
        return any(name == "update" and value.get("state") == "running" for name, value in self.log)


class Driven(JobRunner):
    """A runner whose attempts the test drives, instead of the thread the actor starts."""

    def run(self) -> int:
        return 0

    def _keep_lease(self, done: threading.Event) -> None:
        pass


def test_a_job_stopped_before_its_command_starts_never_starts(tmp_path: Path) -> None:
    """The race `jobs stop` lost: a stop that came while the runner was placed but its command
    not yet started found nothing to stop, and the command then ran on."""
    ran = tmp_path / "ran"
    runner = Driven("j1", 1, [sys.executable, "-c", f"open({str(ran)!r}, 'w')"], str(tmp_path), {}, "ns")
    assert runner.stop()
    assert runner._attempt(Registry()) == 128 + signal.SIGTERM
    assert runner.proc is None and not ran.exists()


def test_stop_ends_the_command_s_whole_session_and_then_reports_it_ended(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    script = ("import subprocess, sys, time\n"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(child_pid)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(300)\n")
    runner, registry = Driven("j2", 1, [sys.executable, "-c", script], str(tmp_path), {}, "ns"), Registry()
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
    runner, registry = Driven("j3", 1, [sys.executable, "-c", script], str(tmp_path), {}, "ns", retries=3), Registry()
    assert runner._attempt(registry) == 1
    assert runner.stop()
    assert runner._attempt(registry) == 128 + signal.SIGTERM
    assert runs.read_text() == "x"  # the retry never ran


def test_each_attempt_has_its_own_time_limit(tmp_path: Path) -> None:
    """A retry after a timeout that succeeds is a success, not another timeout."""
    flag = tmp_path / "tried"
    script = (f"import os, time\nif not os.path.exists({str(flag)!r}):\n"
              f"    open({str(flag)!r}, 'w').close(); time.sleep(60)\n")
    runner, registry = Driven("j4", 1, [sys.executable, "-c", script], str(tmp_path), {}, "ns", 1.0, 1), Registry()
    assert runner._attempt(registry) == 124
    assert runner._attempt(registry) == 0


def test_a_report_that_goes_unanswered_past_the_lease_fences_and_one_sent_again_keeps_its_number() -> None:
    registry = Registry(lease=1.0)
    registry.update({"hostname": "h"})
    registry.cut = True
    began = time.monotonic()
    with pytest.raises(Fenced, match="no answer from the grid service for 1 s"):
        registry.append([("stdout", "lost\n")])
    assert 0.9 < time.monotonic() - began < 5
    assert registry.tries[0] == 1 and set(registry.tries[1:]) == {2} and len(registry.tries) > 2
    with pytest.raises(Fenced):  # fenced for good, even once the link is back
        registry.cut = False
        registry.append([("stdout", "late\n")])
    assert registry.log == [("update", {"hostname": "h"})]


def test_the_service_saying_the_attempt_is_lost_fences_at_once() -> None:
    registry = Registry()
    registry.counts = False
    with pytest.raises(Fenced, match="counts this attempt lost"):
        registry.update({"hostname": "h"})
    assert registry.expired()


def test_a_runner_whose_lease_runs_out_kills_its_command_s_whole_session(tmp_path: Path,
                                                                         capfd: pytest.CaptureFixture[str]) -> None:
    """Cut off from the service (a partition), the runner kills its command when its lease runs
    out, on its own: the service runs the job again elsewhere only after that."""
    child_pid = tmp_path / "child"
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(child_pid)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(300)\n")

    class Leased(JobRunner):
        def run(self) -> int:
            return 0

    runner = Leased("j5", 2, [sys.executable, "-c", script], str(tmp_path), {}, "ns", lease=2.0)
    registry = runner.reporter = Registry(lease=2.0)
    statuses: list[int] = []
    attempt = threading.Thread(target=lambda: statuses.append(runner._attempt(registry)))
    attempt.start()
    deadline = time.monotonic() + 30
    while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.5)  # renewed meanwhile: the command runs on past one lease
    assert attempt.is_alive() and not runner.fenced
    registry.cut = True
    cut_at = time.monotonic()
    attempt.join(timeout=30)
    assert statuses == [128 + signal.SIGKILL] and runner.fenced
    assert time.monotonic() - cut_at < 2.0 + 3.0  # the lease, and a look each 0.5 s
    pid = int(child_pid.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    assert "grid: job j5 attempt 2 fenced at" in capfd.readouterr().err  # in the node's Ray log
    deadline = time.monotonic() + 5
    while registry.log[-1][0] != "fenced" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "fenced at" in registry.log[-1][1] and "no answer from the grid service for 2 s" in registry.log[-1][1]
    runner.done.set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_runner_killed_outright_leaves_no_part_of_its_command(tmp_path: Path) -> None:
    """kill -9 of the runner (its node's Ray killed): the command's children die too, so no part of
    an attempt outlives it while the job runs again elsewhere."""
    child_pid = tmp_path / "child"
    script = ("import subprocess, sys, time\n"
              "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
              f"open({str(child_pid)!r}, 'w').write(str(p.pid))\n"
              "time.sleep(300)\n")
    runner_script = ("import sys\n"
                     "from tests.test_job_runner import Driven, Registry\n"
                     f"Driven('j6', 1, [sys.executable, '-c', {script!r}], {str(tmp_path)!r}, {{}}, 'ns')"
                     "._attempt(Registry())\n")
    runner = subprocess.Popen([sys.executable, "-c", runner_script], cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 30
        while not (child_pid.exists() and child_pid.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = int(child_pid.read_text())
        assert _alive(pid)
    finally:
        runner.kill()
        runner.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_a_command_that_cannot_start_says_why_and_ends_with_127(tmp_path: Path) -> None:
    runner, registry = Driven("j7", 1, ["no-such-command-here"], str(tmp_path), {}, "ns"), Registry()
    assert runner._attempt(registry) == 127
    said = "".join(text for kind, chunks in registry.log if kind == "append" for _, text in chunks)
    assert said == f"grid: cannot run 'no-such-command-here' in {tmp_path}: No such file or directory\n"


class Again(Registry):
    """The service's side of a kept spare: its answer to a job's last report is AGAIN while `keep`."""

    keep = True

    def __init__(self, job_id: str, attempt: int, namespace: str, lease: float) -> None:
        super().__init__(lease)

    def _deliver(self, number: int, chunks: Sequence[tuple[str, str]], fields: Mapping[str, Any]) -> Any:
        kept = super()._deliver(number, chunks, fields)
        return AGAIN if kept and self.keep and fields.get("state") in ("succeeded", "stopped") else kept


class Spare(JobRunner):
    """A spare with no Ray: it holds nothing (no placement group), and records that it would end."""

    reporter_class = Again
    exited = False

    def _reserve(self) -> None:
        pass

    def _exit(self, exit_status: int) -> int:
        self.exited = True
        return exit_status


def test_a_kept_spare_runs_the_next_job_as_its_own_and_exits_when_not_kept(tmp_path: Path) -> None:
    """A spare the service keeps (AGAIN to its job's last report) stays for the node's next job,
    which it runs with that job's environment; a stop naming the job before misses the new one.
    Not kept, it ends, and then refuses a job (the service makes a runner for it instead)."""
    out = tmp_path / "out"
    runner = Spare()

    def take(job: str, command: str) -> bool:
        return runner.take(job, 1, ["sh", "-c", f"echo $GRID_JOB_ID >> {out}; {command}"], str(tmp_path),
                           {"GRID_JOB_ID": job}, "ns", reserve={"CPU": 1.0})

    assert take("a", "true") and runner.done.wait(30) and not runner.exited
    assert take("b", "sleep 30")
    deadline = time.monotonic() + 30
    while out.read_text().split() != ["a", "b"] and time.monotonic() < deadline:  # b's command runs
        time.sleep(0.05)
    assert not runner.stop("a")  # the last job's stop, come late: this one runs on
    assert runner.stop("b") and runner.done.wait(30) and not runner.exited
    ends = [value for name, value in runner.reporter.log if name == "update" and "exit_status" in value]
    assert [(end["state"], end["exit_status"]) for end in ends] == [("stopped", 143)]
    Again.keep = False
    try:
        assert take("c", "true") and runner.done.wait(30) and runner.exited
        assert not take("d", "true")
    finally:
        Again.keep = True
    assert out.read_text().split() == ["a", "b", "c"]
