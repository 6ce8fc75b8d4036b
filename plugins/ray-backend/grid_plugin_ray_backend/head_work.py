"""The cluster's work running on the held head, and the last of the steps it takes aside: eviction.

While the head is held the controller lowers the cluster's work there at once
(grid_core/priority.py). Once the hold has lasted `evict_after`, it stops the tasks among it, so
Ray runs them again elsewhere: Ray retries a task whose worker died (`max_retries`, 3 by default),
and the hold reserves the CPUs this frees before the retry is placed (grid starts Ray with a
retry delay, layout.RETRY_DELAY_MS), so the retry lands on a worker.

Never stopped, only lowered:
- actors, grid's job runners among them (an actor's state would be lost, and Ray restarts only
  those with `max_restarts`);
- tasks named in `offload.never_evict`. Ray 2.60 tells only a task's owner its `max_retries`
  (the GCS's task events and the raylet's worker stats do not carry it), so a task with
  `max_retries=0` cannot be told apart from outside and must be named there.

Ray's view comes from the GCS, without the dashboard: the actor table says which workers are
actors, and the task events say where an evicted task's next attempt runs.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from grid_core.types import GpuReading, HeldWork

# Ray's and grid's own processes that stay at their priority while the head is held: lowering
# them would slow the cluster's answers, not its work. Ray's system processes (raylet, GCS) are
# not `ray::` workers and are never lowered one by one (their session's autogroup is).
SPARED = ("ray::IDLE", "ray::GridService", "ray::JobRegistry", "ray::DashboardAgent", "ray::RuntimeEnvAgent",
          "ray::Directory", "ray::Holder", "ray::Feed", "ray::NodeAgent")
FOLLOW_SECONDS = 120.0  # how long an evicted task's next attempt is looked for, to say where it went
ACTORS_FRESH = 15.0  # the longest the actor table read is trusted, for the rows shown

Table = Mapping[int, tuple[int, Sequence[str]]]  # pid: (parent pid, argv)


def process_table(markers: Sequence[str]) -> tuple[dict[int, tuple[int, Sequence[str]]], set[int]]:
    """Every process here (pid: parent, argv) and the cluster's among them."""
    import psutil

    from grid_core.builtin.psutil_metrics import cluster_pids

    table = {p.pid: (p.info["ppid"], p.info.get("cmdline") or ()) for p in psutil.process_iter(["ppid", "cmdline"])
             if p.info.get("ppid") is not None}
    return table, cluster_pids(table, markers)


def working(table: Table, cluster: set[int]) -> dict[int, str]:
    """Ray's workers doing the cluster's work (running a task or an actor; not idle ones, not
    grid's services), pid: the name in its title (`ray::train` is `train`)."""
    titles = {pid: " ".join(table[pid][1]).strip() for pid in cluster if pid in table}
    return {pid: title[len("ray::"):].split(" ")[0] for pid, title in titles.items()
            if title.startswith("ray::") and not title.startswith(SPARED)}


@attrs.define
class Evicted:
    pid: int
    name: str
    when: float


@attrs.define
class Eviction:
    """Stops the held head's tasks once due and follows where Ray runs them again."""

    pending: list[Evicted] = attrs.Factory(list)
    actors: set[int] = attrs.Factory(set)  # the live actors' pids, as last read from the GCS
    seen: set[int] = attrs.Factory(set)  # the workers there were at that read
    actors_read: float = -ACTORS_FRESH

    def _actors(self, workers: Mapping[int, str], candidates: Callable[[set[int]], list[int]], due: bool) -> set[int]:
        """The actor pids. A GCS call each interval costs the held head more than the rows are
        worth, so the table is read again only for a worker not seen at the last read, every
        ACTORS_FRESH seconds, and always before a task is stopped (a worker that ran tasks may
        have become an actor since)."""
        if not workers.keys() <= self.seen or (due and candidates(self.actors)) \
                or time.monotonic() - self.actors_read > ACTORS_FRESH:
            self.actors, self.seen, self.actors_read = actor_pids(), set(workers), time.monotonic()
        return self.actors

    def step(self, table: Table, workers: Mapping[int, str], due: bool,
             never_evict: Sequence[str]) -> tuple[tuple[HeldWork, ...], list[str], int]:
        """This interval's work rows, events (each a sentence) and how many tasks it stopped."""
        from grid_core.builtin.psutil_metrics import with_descendants

        def named(name: str) -> bool:
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in never_evict)

        def candidates(actors: set[int]) -> list[int]:  # what would be stopped, were these the actors
            return [pid for pid, name in workers.items() if pid not in actors and not named(name)]

        actors = self._actors(workers, candidates, due) if workers else set()
        rows, events, stopped = [], [], 0
        for pid, name in sorted(workers.items()):
            if pid in actors:
                why = "a grid job: its runner is an actor" if name.startswith("JobRunner") else \
                    "an actor: stopping it would lose its state"
                rows.append(HeldWork(pid=pid, name=name, kind="actor", action="kept", reason=why))
            elif named(name):
                rows.append(HeldWork(pid=pid, name=name, kind="task", action="kept",
                                     reason="named in offload.never_evict"))
            elif not due:
                rows.append(HeldWork(pid=pid, name=name, kind="task", action="lowered",
                                     reason="stopped once the hold lasts offload.evict_after"))
            else:
                for victim in with_descendants(table, (pid,)):
                    with contextlib.suppress(OSError):
                        os.kill(victim, signal.SIGKILL)
                self.pending.append(Evicted(pid, name, time.time()))
                stopped += 1
                events.append(f"evicted task {name} (pid {pid}); Ray runs it again on another node")
        events += self._follow()
        rows += [HeldWork(pid=e.pid, name=e.name, kind="task", action="evicted", reason="Ray runs it again elsewhere")
                 for e in self.pending]
        return tuple(rows), events, stopped

    def _follow(self) -> list[str]:
        """Where the evicted tasks' next attempts run, once Ray says; those it has placed are done."""
        if not self.pending:
            return []
        placed = next_attempts({e.pid for e in self.pending})
        events, still = [], []
        for e in self.pending:
            if e.pid in placed:
                events.append(f"evicted task {e.name} (pid {e.pid}) runs again on {placed[e.pid]}")
            elif time.time() - e.when < FOLLOW_SECONDS:
                still.append(e)
        self.pending = still
        return events


def gpu_work(gpus: Sequence[GpuReading], cluster: set[int], lowered: set[int]) -> tuple[HeldWork, ...]:
    """The cluster's processes on the held head's GPUs, listed whether or not they could be lowered.
    Lowering reaches a GPU process's CPU side only (its kernel launches, its data loading): the
    driver shares a GPU's time among contexts with no priority per process."""
    rows = []
    for gpu in gpus:
        for p in gpu.processes:
            if p.pid not in cluster:
                continue
            memory = "" if p.memory_used_bytes is None else f", {p.memory_used_bytes // 2**20} MiB"
            done = p.pid in lowered
            rows.append(HeldWork(
                pid=p.pid, name=p.owner or "cluster process", kind="gpu", action="lowered" if done else "kept",
                reason=f"on GPU {gpu.index}{memory}; " + ("its CPU side at the lowest priority, its GPU time "
                                                          "shared as before (no GPU priority per process)"
                                                          if done else "not among the work grid lowers")))
    return tuple(rows)


def actor_pids() -> set[int]:
    """The processes of the cluster's live actors, from the GCS's actor table."""
    from ray._private.state import actors

    return {int(a["Pid"]) for a in actors(actor_state_name="ALIVE").values() if a.get("Pid")}


def next_attempts(pids: set[int]) -> dict[int, str]:
    """For tasks whose attempt ran in one of `pids`: the grid node a later attempt runs on."""
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    from grid_plugin_ray_backend.layout import grid_names

    names = grid_names(ray.nodes())
    attempts: dict[bytes, dict[int, Any]] = {}  # task: attempt: its gcs_pb2.TaskEvents
    for raw in state._connect_and_get_accessor().get_task_events():
        event = gcs_pb2.TaskEvents.FromString(raw)  # type: ignore[attr-defined]
        attempts.setdefault(event.task_id, {})[event.attempt_number] = event
    found = {}
    for by_attempt in attempts.values():
        for number, event in by_attempt.items():
            pid = event.state_updates.worker_pid
            later = by_attempt.get(number + 1)
            if pid in pids and later is not None and later.state_updates.node_id:
                found[pid] = names.get(later.state_updates.node_id.hex(), later.state_updates.node_id.hex()[:8])
    return found
