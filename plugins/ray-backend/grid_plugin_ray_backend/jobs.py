"""The job runner: one detached Ray actor per started job, `grid-job-<id>`.

The queue in the grid service (queue.py) makes it once it placed the job. It is pinned to its node
by the node's `grid-node-<name>` resource and holds the job's CPUs, GPUs and memory while it
runs: it runs the command in a new session, reports its output to the service as it comes (each
batch acknowledged once the service wrote it to the head's disk), records the exit status and
then exits, freeing the resources.

This module is imported on the nodes by Ray's workers, so it imports only the standard library at
the top; Ray is there when this class runs.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

RUNNER = "grid-job-{}"
SERVICE = "grid-service"  # layout.SERVICE: the runner reports there
STOP_GRACE = 5.0
FLUSH_SECONDS = 0.1
REPORT_PATIENCE = 120.0  # seconds a report is tried again while the service restarts

Chunk = tuple[str, str]  # (stream, text)


class Reporter:
    """The runner's line to the grid service: each report waits for the service's answer, so
    reports arrive in order and output counts as kept only once the service wrote it. While the
    service restarts (Ray restarts it when it dies), a report is tried again, up to REPORT_PATIENCE."""

    def __init__(self, job_id: str, namespace: str) -> None:
        self.job_id, self.namespace = job_id, namespace
        self.service: Any = None

    def _send(self, chunks: Sequence[Chunk], fields: Mapping[str, Any]) -> None:
        import ray

        deadline, pause = time.monotonic() + REPORT_PATIENCE, 0.1
        while True:
            try:
                if self.service is None:
                    self.service = ray.get_actor(SERVICE, namespace=self.namespace)
                ray.get(self.service.job_report.remote(self.job_id, list(chunks), dict(fields)))
                return
            except Exception:  # the service is restarting: its actor is gone or not yet back
                self.service = None
                if time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def append(self, chunks: Sequence[Chunk]) -> None:
        if chunks:
            self._send(chunks, {})

    def update(self, fields: Mapping[str, Any]) -> None:
        self._send((), fields)


class JobRunner:
    """Runs one job's command on its node from the moment it is placed, reports to the service,
    and ends itself when the command ends."""

    def __init__(self, job_id: str, argv: Sequence[str], cwd: str | None, env: Mapping[str, str],
                 namespace: str, timeout_seconds: float | None = None, retries: int = 0) -> None:
        self.job_id, self.argv, self.namespace = job_id, list(argv), namespace
        self.timeout_seconds, self.retries = timeout_seconds, retries
        self.cwd = os.path.expanduser(cwd or "~")
        # The node's own interpreter (grid's venv there) comes first on PATH, so `python` is the one with Ray.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.starting = threading.Lock()  # a stop and the command's start never cross
        self.timed_out = False
        self.done = threading.Event()
        # The job starts with the actor, not with a method call: a call from a driver that has
        # exited (`grid run --detach`) before the actor was placed would never be delivered.
        threading.Thread(target=self.run, name=f"grid-job-{job_id}", daemon=True).start()

    def finished(self) -> bool:
        """Returns when the job has ended. A caller that gets an actor error before its record is
        final knows the runner was lost with its node (a cut link, a dead raylet)."""
        self.done.wait()
        return True

    def run(self) -> int:
        """The command, again after a failure while retries are left (execution.retry_attempts)."""
        reporter = Reporter(self.job_id, self.namespace)
        for attempt in range(1 + self.retries):
            exit_status = self._attempt(reporter)
            if exit_status in (0, 127) or self.stopping or attempt == self.retries:
                break
            note = f"grid: exit status {exit_status}; retrying ({attempt + 1} of {self.retries})\n"
            reporter.append([("stderr", note)])
        state = "stopped" if self.stopping else "timeout" if self.timed_out else \
            "succeeded" if exit_status == 0 else "failed"
        reporter.update({"state": state, "exit_status": exit_status, "ended": time.time()})
        self.done.set()
        return self._exit(exit_status)

    def _attempt(self, reporter: Reporter) -> int:
        """Run the command once, its output reported as it comes; its exit status (127: it could
        not start; 124: its time ran out, as timeout(1) says; 143, as for SIGTERM, when the job was
        stopped before this attempt began)."""
        self.timed_out = False
        with self.starting:
            if self.stopping:  # stopped before this attempt's command started: it never starts
                return 128 + signal.SIGTERM
            try:
                self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            except OSError as exc:
                why = exc.strerror or exc
                reporter.append([("stderr", f"grid: cannot run {self.argv[0]!r} in {self.cwd}: {why}\n")])
                return 127
        reporter.update({"state": "running", "pid": self.proc.pid, "started": time.time(),
                         "hostname": socket.gethostname()})
        timer = threading.Timer(self.timeout_seconds, self._time_out) if self.timeout_seconds else None
        if timer:
            timer.daemon = True
            timer.start()
        chunks: queue.Queue[Chunk | None] = queue.Queue()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        pumps = [threading.Thread(target=_pump, args=(name, stream, chunks), daemon=True)
                 for name, stream in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))]
        for pump in pumps:
            pump.start()
        open_streams = len(pumps)
        while open_streams:
            batch: list[Chunk] = []
            deadline = time.monotonic() + FLUSH_SECONDS
            while open_streams and time.monotonic() < deadline:
                try:
                    item = chunks.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    open_streams -= 1
                else:
                    batch.append(item)
            reporter.append(batch)
        status = self.proc.wait()
        if timer:
            timer.cancel()
        if self.timed_out:
            reporter.append([("stderr", f"grid: timed out after {self.timeout_seconds:g} s\n")])
            return 124
        return status if status >= 0 else 128 - status

    def _time_out(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            self.timed_out = True
            _signal_group(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=STOP_GRACE)
            _signal_group(proc.pid, signal.SIGKILL)

    def stop(self) -> bool:
        """SIGTERM the job's whole session, SIGKILL it after a grace period; False if it had ended.
        A job stopped before its command starts, or between retries, runs no further attempt."""
        with self.starting:
            if self.done.is_set():
                return False
            self.stopping = True
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return True
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
        return True

    def _exit(self, exit_status: int) -> int:
        """End the actor, so its CPUs and GPUs are free for the next job."""
        import ray

        ray.kill(ray.get_actor(RUNNER.format(self.job_id), namespace=self.namespace))
        return exit_status


def _pump(name: str, stream: Any, chunks: queue.Queue[Chunk | None]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    fd = stream.fileno()
    while True:
        data = os.read(fd, 65536)
        if not data:
            break
        text = decoder.decode(data)
        if text:
            chunks.put((name, text))
    tail = decoder.decode(b"", final=True)
    if tail:
        chunks.put((name, tail))
    chunks.put(None)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pid, sig)
