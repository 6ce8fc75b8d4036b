"""Following a job over a channel that may drop: a lost connection is not a Ctrl-C.

The service keeps every job's output (jobs.JobRegistry) and never stops a job because its client
went away. So when the channel breaks (the network, a laptop's sleep, a killed SSH connection, a
service that restarted), the CLI says so on stderr, connects again with backoff and asks for the
output after where it stood in each stream: no line lost, none printed twice. A link that dies
without a word (a cut cable keeps a TCP connection open for minutes) is told by silence: the
service sends a beat each second while it follows a job. Past RECONNECT_SECONDS the CLI gives up
and says how to follow the job, which runs on as if detached.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from grid_core.errors import GridError
from grid_core.types import TransportError
from grid_plugin_ray_backend import channel

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig

RECONNECT_SECONDS = 120.0  # how long a lost channel is tried again before the job is left to run on
SILENT_SECONDS = 10.0  # nothing from the service (it beats each second) this long: the link is dead
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)  # seconds between attempts, the last repeated
STREAMS = ("stdout", "stderr")
POLL = 0.2


class Detached(GridError):
    """The channel could not be had back in time: the job runs on without this client."""

    exit_code = 255  # as ssh says a connection was lost


def note(text: str) -> None:
    """grid's own message, on stderr beside the job's (never inside its stream)."""
    sys.stderr.write(f"grid: {text}\n")
    sys.stderr.flush()


class Follower:
    """One job's output through a channel that may drop and come back."""

    def __init__(self, config: ClusterConfig, cluster: Cluster, job_id: str,
                 on_output: Callable[[str, str], None]) -> None:
        self.config, self.cluster, self.job_id, self.on_output = config, cluster, job_id, on_output
        self.offsets = [0, 0]  # characters of stdout and of stderr delivered
        self.job_attempt = 0  # the job's attempt those are of (0: the one that counts when asked)
        self.lock = threading.Lock()
        self.attempt_no = 0  # only the current attempt's output is delivered
        self.heard = 0.0  # when bytes last came on the current attempt
        self.lost_at: float | None = None  # when the channel was lost, until it is back
        self.state = "submitted"  # the job's state as last known here
        self.ever_heard = False  # whether the service ever answered this client

    def follow(self, op: str, params: dict[str, Any]) -> int:
        """The answer's exit status, following the job again from where it was after each loss."""
        tries = 0
        while True:
            try:
                return self._attempt(op, params)
            except (channel.ChannelLost, TransportError) as exc:
                self._lost(exc)
            except GridError:  # the service refused or failed: still say what became of the job
                if self.ever_heard:
                    self._say_fate()
                raise
            time.sleep(BACKOFF[min(tries, len(BACKOFF) - 1)])
            tries += 1

    def _lost(self, exc: Exception) -> None:
        """Say the channel is lost, once per loss; give up past RECONNECT_SECONDS."""
        head, job, follow = self.config.head.name, self.job_id, f"grid jobs logs {self.job_id} --follow"
        if not self.ever_heard:  # no answer at all: nothing says the job was ever started
            raise GridError(f"{exc}; whether job {job} started, `grid jobs list` tells") from None
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at = now
            note(f"lost the connection to the grid service on {head} ({exc}); job {job} is {self.state} and "
                 f"runs on; reconnecting for up to {RECONNECT_SECONDS:g} s (or follow it later: {follow})")
        elif now - self.lost_at > RECONNECT_SECONDS:
            raise Detached(f"could not reconnect to {head} within {RECONNECT_SECONDS:g} s (last: {exc}); job {job} "
                           f"was {self.state} when last heard of and runs on as if detached; follow it: {follow}")

    def _say_fate(self) -> None:
        """The job's state from its record, after an answer that did not end with its exit status."""
        try:
            listed = channel.call(self.config, self.cluster, "jobs").result or []
            found = [j for j in listed if j.get("id") == self.job_id]
        except (GridError, TransportError) as exc:
            note(f"cannot ask what became of job {self.job_id} ({exc}); see: grid jobs list")
            return
        if not found:  # the service's own error says so
            return
        job = found[0]
        status = "" if job.get("exit_status") is None else f", exit status {job['exit_status']}"
        why = f": {job['reason']}" if job.get("reason") else ""
        note(f"job {self.job_id} is {job['state']}{status}{why}; follow it: grid jobs logs {self.job_id} --follow")

    def _attempt(self, op: str, params: dict[str, Any]) -> int:
        """One connection, watched from here: a silent one is given up and its transport dropped."""
        with self.lock:
            self.attempt_no += 1
            mine = self.attempt_no
            since = [*self.offsets, self.job_attempt] if self.job_attempt else list(self.offsets)
        self.heard, first = time.monotonic(), [True]

        def out(stream: str, text: str) -> None:
            with self.lock:
                if mine != self.attempt_no:  # a connection given up on: its late output is not ours
                    return
                self.state = "running"
                self.offsets[STREAMS.index(stream)] += len(text)
                self.on_output(stream, text)

        def attempt(number: int) -> None:  # the job runs again: its output starts anew
            with self.lock:
                if mine == self.attempt_no:
                    self.job_attempt, self.offsets = number, [0, 0]

        def heard() -> None:
            self.heard, self.ever_heard = time.monotonic(), True
            if first[0]:
                first[0] = False
                if self.lost_at is not None and mine == self.attempt_no:
                    self.lost_at = None
                    note(f"reconnected to {self.config.head.name}; job {self.job_id}'s output resumes where it stopped")

        done, outcome = threading.Event(), dict[str, Any]()

        def work() -> None:
            try:
                outcome["answer"] = channel.call(self.config, self.cluster, op, {**params, "since": since},
                                                 on_output=out, streaming=True, on_bytes=heard, on_attempt=attempt)
            except BaseException as exc:  # handed to the waiting thread
                outcome["error"] = exc
            done.set()

        threading.Thread(target=work, name=f"grid-follow-{self.job_id}", daemon=True).start()
        while not done.wait(POLL):  # here, not in the worker: Ctrl-C reaches the main thread at once
            # Before the first bytes the transport's own timeouts and the service's start apply.
            limit = channel.CALL_TIMEOUT if first[0] else SILENT_SECONDS
            if time.monotonic() - self.heard > limit:
                with self.lock:
                    self.attempt_no += 1
                self.cluster.reconnect(self.config.head)
                raise channel.ChannelLost(f"nothing came for {limit:g} s")
        if "error" in outcome:
            raise outcome["error"]
        answer = outcome["answer"]
        if answer.events:
            self.state = "running"
        return int(answer.status)
