"""Jobs: a command run on a chosen node by a detached Ray actor, its output kept on the head.

Two kinds of actor live in grid's namespace, both detached so they outlive the CLI:
- `grid-jobs`, one per cluster, on the head (no CPU): every job's record and its output.
- `grid-job-<id>`, one per job, pinned to its node by the node's `grid-node-<name>` resource and
  holding the job's CPUs, GPUs and memory while it runs: it runs the command in a new session,
  sends its output to `grid-jobs` as it comes, records the exit status and then exits, freeing
  the resources.

This module is imported on the nodes by Ray's workers, so it imports only the standard library at
the top; Ray is there when these classes run.
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

REGISTRY = "grid-jobs"
RUNNER = "grid-job-{}"
MAX_OUTPUT_CHARS = 8 * 2**20  # per job; older output is dropped beyond it
# Retention: beyond these the oldest finished jobs are forgotten, record and output.
MAX_JOBS = 1000
MAX_TOTAL_CHARS = 256 * 2**20
ACTIVE = ("pending", "running")
STOP_GRACE = 5.0
FLUSH_SECONDS = 0.1

Chunk = tuple[str, str]  # (stream, text)
Offsets = tuple[int, int]  # characters of stdout and of stderr since the job began
STREAMS = ("stdout", "stderr")


class JobRegistry:
    """Every job's record and output; one per cluster, on the head.

    A job's output is kept as it came, both streams in order, each chunk with where each stream
    stood after it. A reader names where it is in each stream (Offsets) and gets what follows,
    so a client whose connection dropped resumes exactly where its output stopped."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.output: dict[str, list[Chunk]] = {}
        self.ends: dict[str, list[Offsets]] = {}  # per chunk: both streams' offsets after it
        self.chars: dict[str, int] = {}

    def add(self, info: dict[str, Any]) -> bool:
        """A new job's record; False, changing nothing, when the id is known already (a client
        that lost its connection asks again to run the job it submitted)."""
        job_id = info["id"]
        if job_id in self.jobs:
            return False
        self.jobs[job_id] = {"state": "pending", "exit_status": None, "submitted": time.time(), **info}
        self.output[job_id], self.ends[job_id], self.chars[job_id] = [], [], 0
        self._retain()
        return True

    def _retain(self) -> None:
        finished = [j for j, info in self.jobs.items() if info["state"] not in ACTIVE]  # oldest first
        while finished and (len(self.jobs) > MAX_JOBS or sum(self.chars.values()) > MAX_TOTAL_CHARS):
            job_id = finished.pop(0)
            for table in (self.jobs, self.output, self.ends, self.chars):
                del table[job_id]

    def update(self, job_id: str, fields: Mapping[str, Any]) -> None:
        if job_id in self.jobs and self.jobs[job_id]["state"] in ACTIVE:
            self.jobs[job_id].update(fields)

    def append(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        if job_id not in self.output:
            return
        out, ends = self.output[job_id], self.ends[job_id]
        stdout, stderr = ends[-1] if ends else (0, 0)
        for stream, text in chunks:
            if stream == "stdout":
                stdout += len(text)
            else:
                stderr += len(text)
            out.append((stream, text))
            ends.append((stdout, stderr))
        self.chars[job_id] += sum(len(text) for _, text in chunks)
        dropped = 0
        while self.chars[job_id] > MAX_OUTPUT_CHARS and len(out) - dropped > 1:
            self.chars[job_id] -= len(out[dropped][1])
            dropped += 1
        if dropped:
            del out[:dropped], ends[:dropped]

    def read(self, job_id: str, since: Sequence[int] = (0, 0)) -> tuple[list[Chunk], Offsets, dict[str, Any] | None]:
        """The output after `since` (offsets into stdout and stderr), where both streams then
        stand, and the record. Output dropped for the size limit is skipped."""
        import bisect

        if job_id not in self.jobs:
            return [], (int(since[0]), int(since[1])), None
        out, ends = self.output[job_id], self.ends[job_id]
        want = (int(since[0]), int(since[1]))
        # The first chunk that ends past `since` in either stream: both offsets only grow.
        at = bisect.bisect_left(ends, True, key=lambda end: end[0] > want[0] or end[1] > want[1])
        chunks = []
        for i in range(at, len(out)):
            stream, text = out[i]
            end, mine = ends[i][STREAMS.index(stream)], want[STREAMS.index(stream)]
            if end > mine:  # the part of the chunk the reader has not had
                chunks.append((stream, text[max(0, mine - end + len(text)):]))
        stood = ends[-1] if ends else (0, 0)
        return chunks, (max(stood[0], want[0]), max(stood[1], want[1])), dict(self.jobs[job_id])

    def record(self, job_id: str) -> dict[str, Any] | None:
        """The job's record without its output; None for an unknown job."""
        return dict(self.jobs[job_id]) if job_id in self.jobs else None

    def list(self) -> list[dict[str, Any]]:
        return [dict(job) for job in sorted(self.jobs.values(), key=lambda j: j["submitted"])]


class JobRunner:
    """Runs one job's command on its node from the moment it is placed, reports to the registry,
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
        import ray

        registry = ray.get_actor(REGISTRY, namespace=self.namespace)
        for attempt in range(1 + self.retries):
            exit_status = self._attempt(registry)
            if exit_status in (0, 127) or self.stopping or attempt == self.retries:
                break
            note = f"grid: exit status {exit_status}; retrying ({attempt + 1} of {self.retries})\n"
            registry.append.remote(self.job_id, [("stderr", note)])
        state = "stopped" if self.stopping else "succeeded" if exit_status == 0 else "failed"
        # Calls from one caller run in order, so every append lands before this.
        ray.get(registry.update.remote(self.job_id, {"state": state, "exit_status": exit_status,
                                                     "ended": time.time()}))
        self.done.set()
        return self._exit(exit_status)

    def _attempt(self, registry: Any) -> int:
        """Run the command once, its output sent to the registry as it comes; its exit status
        (127: it could not start; 124: execution.timeout_seconds ran out, as timeout(1) says;
        143, as for SIGTERM, when the job was stopped before this attempt began)."""
        self.timed_out = False
        with self.starting:
            if self.stopping:  # stopped before this attempt's command started: it never starts
                return 128 + signal.SIGTERM
            try:
                self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            except OSError as exc:
                message = f"grid: cannot run {self.argv[0]!r} in {self.cwd}: {exc.strerror or exc}\n"
                registry.append.remote(self.job_id, [("stderr", message)])
                return 127
        registry.update.remote(self.job_id, {"state": "running", "pid": self.proc.pid, "started": time.time(),
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
            if batch:
                registry.append.remote(self.job_id, batch)
        status = self.proc.wait()
        if timer:
            timer.cancel()
        if self.timed_out:
            registry.append.remote(self.job_id, [("stderr", f"grid: timed out after {self.timeout_seconds:g} s\n")])
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
