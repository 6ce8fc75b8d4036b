"""The job runner: one detached Ray actor per attempt of a job.

It is pinned to its node by the node's `grid-node-<name>` resource. It holds the job's CPUs, GPUs
and memory while it runs: it runs the command in a new session, reports its output to the service
as it comes (each batch acknowledged once the service wrote it to the head's disk), records the
exit status and then exits, freeing the resources.

The queue in the grid service (job_queue.py) gets one of two kinds once it placed the job:
- a spare, `grid-spare-<node>-<n>`, made ahead on the node and holding nothing, which `take`s the
  job: it reserves the job's resources in a placement group of its own, and removes it as the
  command ends. The job then starts without waiting for Ray to start a worker process, about
  0.4 s of a CPU here. Jobs without GPUs go to spares: Ray tells only an actor made with GPUs
  which are its. When the job has ended, the service may keep the spare for the node's next job
  (its answer to the last report is AGAIN); else it exits;
- else a runner made for the job, `grid-job-<id>-<attempt>`, holding its resources itself.

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

RUNNER = "grid-job-{}-{}"  # the job's id, the attempt's number
RUNNERS = "grid-job-"
SPARES = "grid-spare-"
SPARE = SPARES + "{}-{}"  # the node's name, a random number
AGAIN = "again"  # the service's answer to a spare's last report of a job: stay for the node's next job
SERVICE = "grid-service"  # layout.SERVICE: the runner reports there
STOP_GRACE = 5.0
JOIN_SECONDS = 2.0  # a kept spare's last job ends a moment after its last report: a take waits this long for it
FLUSH_SECONDS = 0.1
WATCH_SECONDS = 0.5  # how often the runner looks whether its lease has run out
FENCED_PATIENCE = 120.0  # seconds a fenced runner tries to tell the service so

Chunk = tuple[str, str]  # (stream, text)

# The job's session leader, between the runner and the command: when the runner dies (kill -9, its
# node's Ray killed), the kernel sends this SIGUSR1 (PR_SET_PDEATHSIG, Linux), and it kills the
# whole session, the command's children too, so no part of an attempt outlives its runner. It
# ignores the SIGTERM that a stop or a time limit sends the session and waits for the command,
# whose exit status it passes on (a signal N as 128 + N).
GUARD = """\
import os, signal, subprocess, sys
signal.signal(signal.SIGTERM, lambda *_: None)
signal.signal(signal.SIGUSR1, lambda *_: os.killpg(0, signal.SIGKILL))
try:
    import ctypes
    ctypes.CDLL(None).prctl(1, signal.SIGUSR1)
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    os.killpg(0, signal.SIGKILL)
try:
    child = subprocess.Popen(sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"grid: cannot run {sys.argv[2]!r} in {os.getcwd()}: {exc.strerror or exc}\\n")
    sys.exit(127)
status = child.wait()
sys.exit(status if status >= 0 else 128 - status)
"""


def owner_account(user: str) -> Any:
    """The account a job of `user` runs as here, where it is not this process's own: theirs when
    this runner is root (as slurmd runs a job as its submitter), else None. KeyError: the node has
    no account of that name."""
    import pwd

    if os.geteuid() != 0 or not user or user == "root":
        return None
    return pwd.getpwnam(user)


class Fenced(Exception):
    """The service no longer counts this attempt: the lease ran out, or it was told so."""


class Reporter:
    """The runner's line to the grid service, and its lease.

    Each report waits for the service's answer, so reports arrive in order and output counts as
    kept only once the service wrote it. A report that fails (the service restarting, the link
    cut) is sent again, with the same number, so the service applies it once. Every answered
    report renews the lease, from the moment it was sent: the service counts from when it got it,
    which is later, so the runner's lease always runs out first. Once it has (no answer for
    `lease` seconds) or the service answers that the attempt no longer counts, every report
    raises Fenced."""

    def __init__(self, job_id: str, attempt: int, namespace: str, lease: float) -> None:
        self.job_id, self.attempt, self.namespace, self.lease = job_id, attempt, namespace, lease
        self.service: Any = None
        self.number = 0  # of the last report
        self.renewed = time.monotonic()  # when the last answered report was sent
        self.fenced = False
        self.lock = threading.Lock()  # one report at a time, in order

    def expired(self) -> bool:
        return self.fenced or time.monotonic() - self.renewed > self.lease

    def _send(self, chunks: Sequence[Chunk], fields: Mapping[str, Any]) -> Any:
        """The service's answer (true: kept; AGAIN: kept, and stay for the next job)."""
        with self.lock:
            self.number += 1
            pause = 0.1
            while True:
                if self.expired():
                    self.fenced = True
                    raise Fenced(f"no answer from the grid service for {self.lease:g} s")
                sent = time.monotonic()
                try:
                    kept = self._deliver(self.number, chunks, fields)
                except Exception:  # the service is restarting, or out of reach: try again within the lease
                    time.sleep(pause)
                    pause = min(2.0, pause * 2)
                    continue
                if not kept:
                    self.fenced = True
                    raise Fenced("the grid service counts this attempt lost")
                self.renewed = max(self.renewed, sent)
                return kept

    def _deliver(self, number: int, chunks: Sequence[Chunk], fields: Mapping[str, Any]) -> Any:
        """One try at report `number`: the service's answer (false: the attempt no longer counts)."""
        import ray

        try:
            if self.service is None:
                self.service = ray.get_actor(SERVICE, namespace=self.namespace)
            return ray.get(self.service.job_report.remote(self.job_id, self.attempt, number, list(chunks),
                                                         dict(fields)), timeout=max(1.0, self.lease / 3))
        except Exception:
            self.service = None  # looked up again: the service may have restarted
            raise

    def tell_fenced(self, message: str) -> None:
        """Tell the service that this attempt's command was killed, while it can be reached at all."""
        import ray

        deadline = time.monotonic() + FENCED_PATIENCE
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                service = ray.get_actor(SERVICE, namespace=self.namespace)
                ray.get(service.job_fenced.remote(self.job_id, self.attempt, message), timeout=10)
                return
            time.sleep(2.0)

    def claim(self) -> None:
        """The first report, before the command starts: an empty one (nothing for the service to
        write), answered only while this attempt counts."""
        self._send((), {})

    def renew(self) -> None:
        """A report with nothing in it, if none was answered for a sixth of the lease: the service
        restarting (a few seconds) leaves most of the lease."""
        if time.monotonic() - self.renewed > self.lease / 6:
            self._send((), {})

    def append(self, chunks: Sequence[Chunk]) -> None:
        if chunks:
            self._send(chunks, {})

    def update(self, fields: Mapping[str, Any]) -> Any:
        return self._send((), fields)


class JobRunner:
    """Runs one attempt of a job on its node from the moment it is placed, reports to the service,
    and ends itself when the command ends, or when its lease runs out (then it kills the command:
    the service runs the job again elsewhere only after that). Made without a job, it is a spare
    that waits for one (`take`), and that the service may keep for another when that one ends."""

    reporter_class = Reporter  # a test's stands in for the service

    def __init__(self, *job: Any, **options: Any) -> None:
        self.done = threading.Event()
        self.thread: threading.Thread | None = None  # the last job's
        self.ending = threading.Lock()  # a take and this runner's decision to exit never cross
        self.exiting = False
        if job or options:
            self.take(*job, **options)

    def take(self, job_id: str, attempt: int, argv: Sequence[str], cwd: str | None, env: Mapping[str, str],
             namespace: str, timeout_seconds: float | None = None, retries: int = 0, lease: float = 30.0,
             user: str = "", claim: Mapping[str, str] | None = None,
             reserve: Mapping[str, float] | None = None) -> bool:
        """Start this attempt of the job. `reserve`: the job's resources, which a spare reserves on
        its node as the command starts (_reserve). False: this runner is exiting (the service makes
        one for the job)."""
        previous = self.thread
        if previous is not None:  # kept for this job a moment after the last one's end: that thread is ending
            previous.join(JOIN_SECONDS)
        with self.ending:
            if self.exiting or (previous is not None and previous.is_alive()):
                return False
        self.done = threading.Event()
        self.job_id, self.attempt, self.argv, self.namespace = job_id, attempt, list(argv), namespace
        self.reserve = dict(reserve) if reserve else None
        self.group: Any = None  # the spare's placement group, holding the job's resources
        self.timeout_seconds, self.retries = timeout_seconds, retries
        # The node's own interpreter (grid's venv there) comes first on PATH, so `python` is the one with Ray.
        path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        self.env = {**os.environ, "PATH": path, **env}
        self.account, self.no_account = None, None  # whom the command runs as, where not this process's account
        try:
            self.account = owner_account(user)
        except KeyError:
            self.no_account = f"grid: job {job_id} runs as its submitter, {user}, who has no account on " \
                              f"{socket.gethostname()}\n"
        home = self.account.pw_dir if self.account else os.path.expanduser("~")
        self.cwd = home if cwd is None or cwd == "~" else \
            home + cwd[1:] if cwd.startswith("~/") else os.path.expanduser(cwd)
        if self.account:
            self.env |= {"HOME": home, "USER": self.account.pw_name, "LOGNAME": self.account.pw_name}
        self.claim = claim  # who this job's GPUs are claimed for (grid_core/gpu_claims.py); None: no GPUs
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.starting = threading.Lock()  # a stop and the command's start never cross
        self.timed_out = False
        self.fenced = False
        self.reporter = self.reporter_class(job_id, attempt, namespace, lease)
        # The job starts here, not with a later call: a runner made for a job by a driver that has
        # exited before the actor was placed would never get that call.
        self.thread = threading.Thread(target=self.run, name=f"grid-job-{job_id}", daemon=True)
        self.thread.start()
        threading.Thread(target=self._keep_lease, args=(self.done,), name=f"grid-lease-{job_id}", daemon=True).start()
        return True

    def finished(self) -> bool:
        """Returns when the job has ended. A caller that gets an actor error before its record is
        final knows the runner was lost with its node (a cut link, a dead raylet)."""
        self.done.wait()
        return True

    def run(self) -> int:
        """The command, again after a failure while retries are left (execution.retry_attempts),
        all under the lease: the service first answers that this attempt counts."""
        reporter, exit_status, again = self.reporter, 128 + signal.SIGKILL, False
        from grid_core.gpu_claims import Claims

        claims = Claims()
        try:
            if self.reserve is None:
                reporter.claim()
            else:  # the service handed the job to this spare a moment ago: that answer was the claim
                self._reserve()
            if self.claim is not None and not self._claim_gpus(claims, reporter):
                return self._end(exit_status, again)
            for attempt in range(1 + self.retries):
                exit_status = self._attempt(reporter)
                if exit_status in (0, 127) or self.stopping or attempt == self.retries:
                    break
                note = f"grid: exit status {exit_status}; retrying ({attempt + 1} of {self.retries})\n"
                reporter.append([("stderr", note)])
            state = "stopped" if self.stopping else "timeout" if self.timed_out else \
                "succeeded" if exit_status == 0 else "failed"
            self._release()  # before the report: the queue may start the next job here at once
            answer = reporter.update({"state": state, "exit_status": exit_status, "ended": time.time()})
            again = answer == AGAIN and self.reserve is not None  # a spare, kept for the node's next job
        except Fenced as exc:
            self._fence(str(exc), reporter)
        finally:
            self._release()  # fenced, or failed: Ray would free a dead actor's group only later, if at all
            claims.release()  # the GPUs are free for anyone once the command has ended
        return self._end(exit_status, again)

    def _end(self, exit_status: int, again: bool) -> int:
        """The job has ended here: wait for the next (`again`), else end the actor."""
        with self.ending:
            self.exiting = not again
        self.done.set()
        return exit_status if again else self._exit(exit_status)

    def _reserve(self) -> None:
        """A spare's job: its resources held on this node, in Ray's figures, as a runner made for it
        holds them. The command does not wait for that: the queue started it because its own count
        of what its jobs hold says they are free, and Ray's figures lag a job's end by 0.1 to 0.3 s
        (docs/jobs.md)."""
        from ray.util.placement_group import placement_group

        self.group = placement_group([dict(self.reserve or {})], name=RUNNER.format(self.job_id, self.attempt))

    def _release(self) -> None:
        """A spare's reservation goes as its command ends (Ray would remove it with the actor, later)."""
        from ray.util.placement_group import remove_placement_group

        if self.group is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(self.group)
            self.group = None

    def _claim_gpus(self, claims: Any, reporter: Reporter) -> bool:
        """Claim the GPUs Ray assigned, against every other cluster on this machine; where another
        holds one, tell the service (the job goes back to the queue) and start nothing."""
        import ray

        assigned = [int(i) for i in ray.get_gpu_ids()]
        stood = claims.take(assigned, dict(self.claim or {}))
        if stood:
            host = socket.gethostname()
            reporter.update({"gpus_busy": "; ".join(dict.fromkeys(c.words(host) for c in stood))})
            return False
        self.env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, assigned))
        return True

    def _keep_lease(self, done: threading.Event) -> None:
        """Renew the lease while the command runs (its job's: `done`); once it has run out, kill
        the command at once."""
        threading.Thread(target=self._renew, args=(done,), daemon=True).start()
        while not done.wait(WATCH_SECONDS):
            reporter = self.reporter
            if done is not self.done:  # a job this runner ran before
                return
            if reporter.expired():
                self._fence(f"no answer from the grid service for {reporter.lease:g} s", reporter)
                return

    def _renew(self, done: threading.Event) -> None:
        while not done.wait(max(0.5, self.reporter.lease / 12)):
            reporter = self.reporter
            if done is not self.done:
                return
            try:
                reporter.renew()
            except Fenced:
                return

    def _fence(self, why: str, reporter: Reporter) -> None:
        """This attempt (`reporter`'s) no longer counts: its command's whole session is killed, and
        the service is told so when it can be reached (it records it on the attempt)."""
        with self.starting:
            if self.fenced or reporter is not self.reporter:  # fenced already, or a job this runner ran before
                return
            self.fenced = self.reporter.fenced = self.stopping = True
            proc = self.proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
        message = f"grid: job {self.job_id} attempt {self.attempt} fenced at {time.strftime('%H:%M:%S')}: {why}"
        print(message, file=sys.stderr, flush=True)  # the node's Ray log keeps it, whatever comes next
        threading.Thread(target=self.reporter.tell_fenced, args=(message,), daemon=True).start()

    def _attempt(self, reporter: Reporter) -> int:
        """Run the command once, its output reported as it comes; its exit status (127: it could
        not start; 124: its time ran out, as timeout(1) says; 143, as for SIGTERM, when the job was
        stopped before this attempt began)."""
        self.timed_out = False
        with self.starting:
            if self.stopping:  # stopped before this attempt's command started: it never starts
                return 128 + signal.SIGTERM
            if self.no_account:
                reporter.append([("stderr", self.no_account)])
                return 127
            who: dict[str, Any] = {} if self.account is None else {
                "user": self.account.pw_uid, "group": self.account.pw_gid,
                "extra_groups": os.getgrouplist(self.account.pw_name, self.account.pw_gid)}
            try:
                self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", GUARD, str(os.getpid()), *self.argv],
                                             cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                             **who)
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

    def stop(self, job_id: str | None = None) -> bool:
        """SIGTERM the job's whole session, SIGKILL it after a grace period; False if it had ended
        (or this runner, a spare kept, runs another now). A job stopped before its command starts,
        or between retries, runs no further attempt."""
        with self.starting:
            if self.done.is_set() or (job_id is not None and job_id != getattr(self, "job_id", None)):
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

        with contextlib.suppress(Exception):  # cut off from the cluster: it ends with its node's Ray
            ray.kill(ray.get_runtime_context().current_actor)
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
