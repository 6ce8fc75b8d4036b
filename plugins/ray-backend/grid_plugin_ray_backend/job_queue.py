"""The queue's Ray side, in the grid service on the head: the store's one writer, and the planner.

grid_core.queue holds the rules (order, placement, why a job waits) and the store; this module
reads what they need from Ray (each node's capacity, what is free), starts a runner
(jobs.JobRunner) for each job the plan starts, and commits what runners report.

- Events, not polls: a submission, a runner's report of a job's end, a hold's release or a node's
  join (the agents' reports) wake the planner. A timer of SAFETY_SECONDS is only a safety net.
- What is free on a node is the smaller of Ray's own figure and the node's total less the jobs
  this queue started there: Ray's figure lags a runner's start and end by a moment, and ours
  does not see holds, boosts and work of Ray's own.
- A job is `running` from the moment its runner exists. Its runner holds a lease (jobs.Reporter):
  every report it sends, and one at least every sixth of `queue.lease_seconds`, renews it. An
  attempt ends as `lost` when its lease runs out, or at once when Ray no longer knows its runner
  (its node lost, the whole cluster restarted). The job then waits until that attempt's lease has
  run out (by then a runner cut off from the head has killed its command: fenced) and runs again,
  at its old place in line, up to its `requeues` (--retries); reports of an attempt that no longer
  counts are refused, which fences a runner that was only cut off.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import traceback
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from grid_core.queue.plan import KEYS, Slot, Waiting, lacks, plan, shortage, takes_usage
from grid_core.queue.share import Ledger
from grid_core.queue.store import JobRow, JobStore
from grid_core.types.jobs import ACTIVE, Attempt, JobRecord, UserUsage
from grid_plugin_ray_backend.jobs import AGAIN, RUNNER, RUNNERS, SPARE, SPARES, JobRunner
from grid_plugin_ray_backend.layout import node_resource

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig
    from grid_core.types import NodeView

SAFETY_SECONDS = 2.0  # the planner runs at least this often while jobs wait
LAG_SECONDS = 0.05  # how soon it looks again while Ray's figures lag its own
LAG_TRIES = 60  # ... for at most this many looks after an event
# A runner that reported its job's end holds its CPUs in Ray's figures until its actor has gone
# and the GCS has heard (about 0.1 s): for this long they count as free on its node. Grid's own
# count still bounds what starts; at worst the next runner waits in Ray's queue for that moment.
FREEING_SECONDS = 1.0
REAP_SECONDS = 5.0  # how often running jobs whose runner is gone are looked for
# How often stray placement groups are looked for (_free_stray_reservations), and at once after a
# spare was killed: Ray lists every group it has known, 37 ms for 1,500 here.
STRAY_SECONDS = 15.0
LEASE_LOOK_SECONDS = 0.5  # how often leases are looked at
FENCE_GRACE = 2.0  # past a lost attempt's lease: its runner looks each 0.5 s, then kills its command
PRUNE_SECONDS = 60.0
GPU_LOOK_SECONDS = 5.0  # a job whose GPUs another cluster holds looks again this soon, then less often
RECENT_READ_SECONDS = 1.0  # a submission checks what the cluster could ever hold against a read this recent
TAKE_SECONDS = 5.0  # a node's spare runner answers that it took a job within this (it does in milliseconds)
# Spare runners kept on a node for its next jobs, at most (and no more than its CPUs): each is an
# idle worker process; each kept saves the next job there starting one (about 0.4 s of a CPU).
SPARES_KEPT = 4
Spare = tuple[str, Any, Any]  # (actor name, handle, a reference ready once the actor is)
STOPPED_BY_CLUSTER = "stopped by grid cluster stop"


@attrs.frozen
class Seen:
    """One read of Ray (JobQueue._read_ray)."""

    slots: list[Slot]
    ids: dict[str, str]  # grid node name -> its Ray node id
    available: dict[str, dict[str, float]]  # Ray node id -> what Ray has available there
    resources: dict[str, set[str]]  # grid node name -> the resource names it has


class QueueError(Exception):
    """A request the queue refuses (the service sends it as an error frame)."""


def store_directory(config: ClusterConfig, service_directory: str) -> str:
    """Where the store lives on the head: `queue.directory`, else grid's state directory there,
    which a reboot keeps (the service's own directory is under /tmp); in it, a directory named as
    the service's (one per user, cluster and head)."""
    base = config.queue.directory or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "grid", "jobs")
    return os.path.join(os.path.expanduser(base), os.path.basename(service_directory.rstrip("/")))


class JobQueue:
    """The cluster's jobs: submitted, planned, started, reported, stopped, listed."""

    def __init__(self, ray: Any, namespace: str, address: str, controller: Any, directory: str) -> None:
        self.ray, self.namespace, self.address, self.controller = ray, namespace, address, controller
        self.store = JobStore(store_directory(self.config, directory))
        self.waiting: dict[str, Waiting] = {}  # the last plan's word on each waiting job
        self.lock = threading.RLock()  # one plan at a time, and no start crosses a stop
        self.wake = threading.Event()
        self.draining = False  # `cluster stop` under way: nothing new starts
        self.last_read: tuple[float, Seen | None] = (0.0, None)  # (monotonic, the read): _recent_read
        # Made once: each ray.remote(JobRunner) exports the class to the GCS anew (14 to 100 ms a job).
        self.runner = ray.remote(JobRunner)
        self.dispatched: dict[str, float] = {}  # job -> when its runner was made (monotonic), since this start
        self.missing: dict[str, int] = {}  # job -> looks in a row that found no runner
        # job -> when its runner's lease was last renewed (monotonic). A job running before this
        # start gets a whole lease from now: its runner may be alive and renew it.
        self.renewed: dict[str, float] = dict.fromkeys(self.store.active, time.monotonic())
        self.numbers: dict[str, int] = {}  # job -> its runner's last report applied (one sent again is not)
        # (monotonic, node, what) of the jobs that ended lately (FREEING_SECONDS); appended as reports come
        self.freeing: deque[tuple[float, str, dict[str, float]]] = deque(maxlen=256)
        # node -> its spare runners, each (actor name, handle, a reference ready once the actor is)
        self.spares: dict[str, list[Spare]] = {}
        self.lent: dict[str, Spare] = {}  # job -> the spare running it, which may be kept when it ends
        self.spare_lock = threading.Lock()  # for these two; taken with no other lock inside it
        self.spare_killed = False  # since the reaper last looked for stray placement groups
        self.read_finished: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (text, data): jobs()'s cache
        self.wanted: set[str] = set()  # nodes that want a spare, made by the planner between its rounds
        import pwd

        self.account = pwd.getpwuid(os.getuid()).pw_name  # the cluster's: GPU claims name it
        self.ledger: Ledger | None = None  # each user's use of finished jobs, for fair share (usage)
        self.ledger_since: float | None = None  # when the ledger last read the store
        self._lost_without_runner("the cluster or its head restarted while it ran")
        self._end_idle_spares()
        threading.Thread(target=self._planner, name="grid-queue", daemon=True).start()
        threading.Thread(target=self._reaper, name="grid-queue-reaper", daemon=True).start()
        threading.Thread(target=self._lease_keeper, name="grid-queue-leases", daemon=True).start()

    @property
    def config(self) -> ClusterConfig:
        config: ClusterConfig = self.controller.rules.config
        return config

    # ------------------------------------------------------------------ submitting

    def submit(self, spec: Mapping[str, Any], user: str = "") -> list[JobRecord]:
        """Commit the job (an array: each member) and preview the plan; the records as they then
        stand. The caller wakes the planner, which starts it. A job that no running node could ever
        hold is refused, naming what the cluster has."""
        from grid_core.types import JobSpec, wire

        job: JobSpec = wire().structure(dict(spec), JobSpec)
        job_id = str(job.job_id)
        self._check_after(job.after)
        base = JobRecord(id=job_id, node=job.node, argv=job.argv, state="queued", submitted=time.time(), user=user,
                         requeues=job.requeues,
                         priority=job.priority, cwd=job.cwd, cpus=job.cpus, gpus=job.gpus,
                         memory_bytes=job.memory_bytes, gpu_types=job.gpu_types, gpu_memory_bytes=job.gpu_memory_bytes,
                         after=job.after, timeout_seconds=job.timeout_seconds, held=job.held,
                         pinned=job.node is not None)
        seen = self._recent_read()
        try:
            self._check_fits(base, seen.slots)
        except QueueError:  # a node may have joined since that read
            seen = self._read_ray()
            self._check_fits(base, seen.slots)
        if not (job.node or job.array or job.after or job.held):
            base = self._into_boost(base, seen)
        runner = {"env": dict(job.env), "resources": dict(job.resources), "retries": job.retries}
        rows = [(attrs.evolve(base, id=f"{job_id}.{i}", array_id=job_id, array_index=i, array_cap=job.array_cap),
                 runner) for i in job.array] or [(base, runner)]
        # Under the store's lock only: the planner's is held while it starts runners (milliseconds
        # each), and a submission need not wait for that.
        with self.store.lock:
            if any(self.store.get(r.id) for r, _ in rows):
                raise QueueError(f"job {job_id} exists already")
            added = self.store.add(rows)
            active = list(self.store.active.values())
        self._preview(active, seen)
        return [self.record(r.id) or r for r in added]

    def _recent_read(self) -> Seen:
        """The last read of Ray if it is younger than RECENT_READ_SECONDS, else a new one."""
        read_at, seen = self.last_read
        return seen if seen is not None and time.monotonic() - read_at < RECENT_READ_SECONDS else self._read_ray()

    def _preview(self, active: Sequence[JobRecord], seen: Seen) -> None:
        """Each waiting job's place in line as the planner will see it, for the submitter's answer."""
        waiting = [j for j in active if j.state == "queued" and not j.boost]
        running = [j for j in active if j.state == "running"]
        used = self._used(active)  # jobs started since that read hold their share already
        slots = [attrs.evolve(s, free={k: min(v, s.total.get(k, 0.0) - used.get(s.view.name, {}).get(k, 0.0))
                                       for k, v in s.free.items()}) for s in seen.slots]
        result = plan(waiting, running, slots, self._scheduler()[0], self._after_states(waiting),
                      self._gpus_fit, time.time())
        self.waiting = {**self.waiting, **result.waiting}

    def _into_boost(self, job: JobRecord, seen: Seen) -> JobRecord:
        """The job inside a boost lent to the head with room for it, where there is one: `grid run`
        on the head uses what it borrowed first (docs/boosts.md)."""
        head = self.config.head.name
        if not any(b.state == "active" and b.target == head for b in self.controller.rules.boosts):
            return job
        from ray.util import placement_group_table

        names = {ray_id: name for name, ray_id in seen.ids.items()}
        views = {s.view.name: s.view for s in seen.slots}
        for group_id, info in placement_group_table().items():
            group = info["name"]
            if info["state"] != "CREATED" or not (group.startswith("grid-boost-") and group.endswith(f"-for-{head}")):
                continue
            ray_id = info["bundles_to_node_id"][0]
            node = names.get(ray_id)
            suffix = f"_group_{group_id}"
            free = {k[: -len(suffix)]: float(v) for k, v in seen.available.get(ray_id, {}).items()
                    if k.endswith(suffix)}
            if node and lacks(job, free) is None and self._gpus_fit(job, views[node]):
                return attrs.evolve(job, node=node, boost=group, pinned=True)
        return job

    def _check_after(self, after: Sequence[str]) -> None:
        for dep in after:
            if self.store.get(dep) is None and not self.store.members(dep):
                raise QueueError(f"--after {dep}: no such job")

    def _check_fits(self, job: JobRecord, slots: Sequence[Slot]) -> None:
        from grid_core import gpus
        from grid_core.queue.plan import request as request_of

        if not slots:
            raise QueueError(f"cluster {self.config.name!r} has no running node; start it with grid cluster start")
        names = {s.view.name for s in slots}
        if job.node is not None:
            self.config.node(job.node)  # an unknown name is a config error naming the nodes
            if job.node not in names:
                raise QueueError(f"node {job.node} is not running in cluster {self.config.name!r}")
            slots = [s for s in slots if s.view.name == job.node]
        request = request_of(job)
        if gpus.asks_kind(request):
            if job.node and not gpus.satisfies(slots[0].view.gpus, request):
                raise QueueError(f"node {job.node} does not have {gpus.describe(request)}: it has "
                                 f"{gpus.summary(slots[0].view.gpus)}")
            if problem := gpus.shortfall(request, {s.view.name: s.view.gpus for s in slots}):
                raise QueueError(problem)
        if all(lacks(job, s.total) for s in slots):
            short = [f"node {s.view.name} has {_short(job, s.total)}" for s in slots]
            raise QueueError(short[0] if job.node else f"no node could ever hold the job: {'; '.join(short)}")

    # ------------------------------------------------------------------ planning

    def _read_ray(self) -> Seen:
        """One read of Ray: each running node of the config (its view for the scheduler, its total,
        what is free), its Ray node id, and what Ray has available on each Ray node."""
        from ray._private.state import available_resources_per_node
        from ray._private.worker import global_worker

        from grid_core import gpus
        from grid_core.types import NodeView

        # After a repair the GCS lists the killed raylet as alive too, with the same resource, until
        # its health checks fail: the newest one (by start time) is the node.
        alive = sorted((info.start_time_ms, node_id.hex(), dict(info.resources_total))
                       for node_id, info in global_worker.gcs_client.get_all_node_info(timeout=30).items()  # type: ignore[attr-defined]
                       if info.state == 0)
        prefix = node_resource("")
        ids = {k[len(prefix):]: ray_id for _, ray_id, res in alive for k in res if k.startswith(prefix)}
        names = {ray_id: name for name, ray_id in ids.items()}
        totals = {names[ray_id]: res for _, ray_id, res in alive if ray_id in names}
        by_id = {i: {k: float(v) for k, v in res.items()} for i, res in available_resources_per_node().items()}
        available = {names[i]: res for i, res in by_id.items() if i in names}
        now = time.monotonic()
        freeing: dict[str, dict[str, float]] = {}
        for _, name, amounts in [f for f in list(self.freeing) if now - f[0] < FREEING_SECONDS]:
            mine = freeing.setdefault(name, dict.fromkeys(KEYS, 0.0))
            for k in KEYS:
                mine[k] += amounts[k]
        used = self._used()
        readings = {name: m for name, (_, m, _) in self.controller.fresh_readings().items()}
        held = set(self.controller.rules.holds)
        slots = []
        for node in self.config.nodes:
            if node.name not in totals:
                continue
            total = {k: float(totals[node.name].get(k, 0.0)) for k in KEYS}
            ours = used.get(node.name, {})
            free = {k: min(total[k] - ours.get(k, 0.0), float(available.get(node.name, {}).get(k, 0.0))
                           + freeing.get(node.name, {}).get(k, 0.0)) for k in KEYS}
            found = gpus.read_or_declared(node, readings.get(node.name))[0]
            view = NodeView(name=node.name, role="head" if node.is_head else "worker", metrics=readings.get(node.name),
                            held=node.name in held, tags=tuple(node.tags), gpus=found)
            slots.append(Slot(view, total, free))
        seen = Seen(slots, ids, by_id, {name: set(res) for name, res in totals.items()})
        self.last_read = (time.monotonic(), seen)
        return seen

    def _used(self, active: Sequence[JobRecord] | None = None) -> dict[str, dict[str, float]]:
        """What the jobs this queue started hold on each node (outside boosts)."""
        used: dict[str, dict[str, float]] = {}
        for job in list(self.store.active.values()) if active is None else active:
            if job.state == "running" and job.node and not job.boost:
                mine = used.setdefault(job.node, dict.fromkeys(KEYS, 0.0))
                mine["CPU"] += job.cpus
                mine["GPU"] += job.gpus
                mine["memory"] += job.memory_bytes
        return used

    @staticmethod
    def _gpus_fit(job: JobRecord, view: NodeView) -> bool:
        """Whether the node has the kind of GPU the job names (any, where it names none)."""
        from grid_core import gpus
        from grid_core.queue.plan import request

        wanted = request(job)
        return not gpus.asks_kind(wanted) or gpus.satisfies(view.gpus, wanted)

    def _after_states(self, jobs: Sequence[JobRecord]) -> dict[str, str]:
        states = {}
        for dep in {d for j in jobs for d in j.after}:
            found = self.store.get(dep)
            if found is not None:
                states[dep] = found.state
                continue
            members = [m.state for m in self.store.members(dep)] or ["unknown"]
            final = [s for s in members if s not in ACTIVE and s != "succeeded"]
            states[dep] = final[0] if final else "succeeded" if all(s == "succeeded" for s in members) else "queued"
        return states

    def dispatch(self, seen: Seen | None = None) -> bool:
        """Plan once and start what the plan says; whether Ray's figures lag ours (look again soon).
        `seen`: a read of Ray made a moment ago under this lock, instead of a new one."""
        with self.lock:
            if self.draining:
                return False
            active = list(self.store.active.values())
            waiting = [j for j in active if j.state == "queued"]
            if not waiting:
                self.waiting = self._unplanned(waiting)
                return False
            seen = seen or self._read_ray()
            for job in waiting:  # into its boost's reservation, where submit found room
                if job.boost and job.node:
                    self._start(job, job.node, seen)
            waiting = [j for j in waiting if not j.boost]
            slots = seen.slots
            scheduler, problem = self._scheduler()
            running = [j for j in active if j.state == "running"]
            usage = {u.user: u for u in self.usage(active)} if takes_usage(scheduler) else {}
            result = plan(waiting, running, slots, scheduler, self._after_states(waiting), self._gpus_fit, time.time(),
                          usage=usage, limits=self.config.access.limits)
            if problem:
                result.waiting.update({k: attrs.evolve(w, reason=f"{w.reason}; {problem}")
                                       for k, w in result.waiting.items()})
            now = time.time()
            for job, why in result.cancel:
                self.store.update(job.id, state="stopped", ended=now, reason=why)
            for job, node in result.start:
                self._start(job, node, seen)
            self.waiting = {**self._unplanned(waiting), **result.waiting}
            used = self._used()
            lagging = any(s.free.get("CPU", 0.0) < s.total.get("CPU", 0.0) - used.get(s.view.name, {}).get("CPU", 0.0)
                          - 1e-9 for s in slots)
            return bool(result.waiting) and lagging

    def _unplanned(self, planned: Sequence[JobRecord]) -> dict[str, Waiting]:
        """The word on jobs submitted while this plan was made (their submissions' preview), which
        it must not wipe out; of those that still wait."""
        ids = {j.id for j in planned}
        return {k: w for k, w in self.waiting.items() if k not in ids and k in self.store.active}

    def usage(self, active: Sequence[JobRecord] | None = None) -> list[UserUsage]:
        """Each user's standing (grid_core/queue/share.py): the finished jobs' decayed use, read
        from the store as they end, and the active jobs' now."""
        from grid_core.queue.share import Ledger, standing

        now = time.time()
        with self.lock:
            half_life = self.config.scheduler.half_life_days
            if self.ledger is None or self.ledger.half_life != half_life * 86400.0:
                self.ledger, self.ledger_since = Ledger(half_life, now), None  # all finished jobs, read again
            since = None if self.ledger_since is None else self.ledger_since - 5.0  # a moment's overlap: counted once
            for job in self.store.finished(since=since):
                self.ledger.add(job)
            self.ledger.forget_before(since)
            self.ledger_since = now
            return standing(self.ledger.used(now), list(self.store.active.values()) if active is None else active, now)

    def _scheduler(self) -> tuple[Any, str | None]:
        """The configured scheduler, looked for again among what pip installed since the service
        started; while it cannot be had, the built-in fifo, and why."""
        from grid_core import plugins
        from grid_core.builtin.least_loaded import LeastLoaded
        from grid_core.errors import GridError

        name = self.config.scheduler.name
        try:
            try:
                return plugins.host().get("grid_schedulers", name).factory(), None
            except GridError:
                plugins.configure()  # a scheduler pip-installed since this process loaded its plugins
                return plugins.host().get("grid_schedulers", name).factory(), None
        except Exception as exc:
            return LeastLoaded(), f"scheduler.name {name!r} cannot be used on the head ({exc}); fifo orders the queue"

    def _start(self, job: JobRecord, node: str, seen: Seen) -> None:
        """The job's runner on `node`: the node's spare, where the job can use one, else one made
        for it. The job is `running` from now (its record says where, and which runner)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from grid_core import gpus

        spec = self.store.spec(job.id)
        resources = dict(spec.get("resources", {}))
        request = None
        if job.gpu_types or job.gpu_memory_bytes:
            from grid_core.queue.plan import request as request_of

            request = request_of(job)
            slot = next(s for s in seen.slots if s.view.name == node)
            resources |= gpus.job_resources(request, slot.view.gpus, seen.resources.get(node, set()))
        number = len(job.attempts) + 1
        resources[node_resource(node)] = 0.001
        options: dict[str, Any] = {
            "name": RUNNER.format(job.id, number), "lifetime": "detached", "max_concurrency": 4, "max_restarts": 0,
            "num_cpus": job.cpus, "num_gpus": job.gpus, "resources": resources,
        }
        if job.memory_bytes:
            options["memory"] = job.memory_bytes
        spare = None
        try:
            if job.boost:  # inside the boost's reservation on its node: only this target's jobs go there
                from ray.util.placement_group import get_placement_group
                from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

                try:
                    group = get_placement_group(job.boost)
                except ValueError:
                    raise QueueError(f"boost reservation {job.boost} is gone (released or expired)") from None
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
            else:
                if node not in seen.ids:
                    raise QueueError(f"node {node} is not in the Ray cluster")
                options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(seen.ids[node], soft=False)
            env = {**spec.get("env", {}), "RAY_ADDRESS": self.address, "GRID_JOB_ID": job.id,
                   "GRID_ATTEMPT": str(number)}
            if job.array_id:
                env |= {"GRID_ARRAY_ID": job.array_id, "GRID_ARRAY_INDEX": str(job.array_index)}
            now = time.time()
            spare = None if job.gpus or job.boost else self._ready_spare(node)
            with self.store.lock:
                attempt = Attempt(number=number, node=node, dispatched=now, lease_seconds=self.lease,
                                  runner=spare[0] if spare else options["name"])
                self.store.update(job.id, state="running", node=node, reason=None, not_before=None, started=None,
                                  pid=None, hostname=None, attempts=(*job.attempts, attempt))
                self.renewed[job.id] = self.dispatched[job.id] = time.monotonic()
                self.numbers[job.id] = 0
            args = (job.id, number, job.argv, job.cwd, env, self.namespace, job.timeout_seconds,
                    int(spec.get("retries", 0)), attempt.lease_seconds, job.user,
                    {"user": job.user, "cluster": self.config.name, "job": job.id, "account": self.account}
                    if job.gpus else None)
            reserve = {k: float(v) for k, v in {"CPU": job.cpus, "memory": job.memory_bytes, **resources}.items() if v}
            if spare is None or not self._hand(job.id, spare, args, reserve):
                if spare is not None:  # it had gone: one made for the job instead
                    self.store.update(job.id, attempts=(*job.attempts, attrs.evolve(attempt, runner=options["name"])))
                self.runner.options(**options).remote(*args)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, QueueError) else f"could not start on {node}: {exc}"
            self.store.update(job.id, state="failed", ended=time.time(), reason=reason)

    def _ready_spare(self, node: str) -> Spare | None:
        """One of the node's spares, taken from them, if one is up: one still starting stays there
        (a runner made for the job is as quick), and one whose start failed is let go."""
        with self.spare_lock:
            kept = self.spares.get(node, [])
            ready = next((s for s in kept if self.ray.wait([s[2]], timeout=0)[0]), None)
            if ready is None:
                return None
            kept.remove(ready)
        try:
            self.ray.get(ready[2])
        except Exception:
            return None
        return ready

    def _hand(self, job_id: str, spare: Spare, args: tuple[Any, ...], reserve: Mapping[str, float]) -> bool:
        """Give the job to the node's spare runner; False where the spare has died since it was up
        (killed, or with its node's Ray), or is exiting. One that does not answer in time, or that
        Ray only calls unavailable (a cut link), may yet start it: that attempt counts as lost (its
        lease then fences the spare) and the job runs again."""
        name, handle, _ = spare
        try:
            if not self.ray.get(handle.take.remote(*args, reserve=reserve), timeout=TAKE_SECONDS):
                return False
            with self.spare_lock:
                self.lent[job_id] = spare
            return True
        except self.ray.exceptions.ActorDiedError:
            return False
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.ray.kill(handle)
            self.spare_killed = True  # it may have left its placement group: the reaper looks soon
            job = self.store.get(job_id)
            if job is not None:
                self._lose(job, f"its node's spare runner {name} did not take it ({type(exc).__name__})")
            return True

    def _make_spares(self) -> None:
        """A spare runner on each node that wants one, made ahead for its next job without GPUs
        (jobs.py): once such a job has started or ended there, so a node that never ran one holds
        no idle worker process; and only where none is kept and the node has a CPU free for that
        next job (a full node's next job takes the spare of the job that ends, kept for it)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        with self.store.lock:
            wanted, self.wanted = self.wanted, set()
        seen = self.last_read[1]
        if seen is None or not wanted:
            return
        used = self._used()
        with self.spare_lock:
            wanted = {n for n in wanted if not self.spares.get(n) and n in seen.ids
                      and used.get(n, {}).get("CPU", 0.0) < _cpus(seen, n)}
        with self.lock:
            for node in wanted:
                name = SPARE.format(node, os.urandom(3).hex())
                try:
                    handle = self.runner.options(
                        name=name, lifetime="detached", max_concurrency=4, max_restarts=0, num_cpus=0,
                        resources={node_resource(node): 0.001},
                        scheduling_strategy=NodeAffinitySchedulingStrategy(seen.ids[node], soft=False)).remote()
                except Exception:  # only slower: the next job there gets a runner of its own
                    traceback.print_exc()
                    continue
                with self.spare_lock:
                    self.spares.setdefault(node, []).append((name, handle, handle.__ray_ready__.remote()))

    def _end_idle_spares(self) -> None:
        """Spares that a service before this one made and that took no job: they would hold a worker
        process each for nothing."""
        taken = {j.attempts[-1].runner for j in self.store.active.values() if j.attempts}
        with contextlib.suppress(Exception):  # a tidy-up
            for actor in self.ray.util.list_named_actors(all_namespaces=True):
                if actor["namespace"] == self.namespace and actor["name"].startswith(SPARES) \
                        and actor["name"] not in taken:
                    self.ray.kill(self.ray.get_actor(actor["name"], namespace=self.namespace))

    @property
    def lease(self) -> float:
        """The lease a new attempt is granted; each attempt keeps its own (a config changed since
        must not cut short the lease of a runner that renews at the old pace)."""
        return float(self.config.queue.lease_seconds)

    def _planner(self) -> None:
        lag = 0
        while True:
            due = min((j.not_before for j in list(self.store.active.values()) if j.not_before), default=None)
            soon = SAFETY_SECONDS if due is None else min(SAFETY_SECONDS, max(0.0, due - time.time()) + 0.01)
            self.wake.wait(LAG_SECONDS if 0 < lag < LAG_TRIES else soon)
            if self.wake.is_set():
                self.wake.clear()
                lag = 0
            try:
                lag = lag + 1 if self.dispatch() else 0
                self._make_spares()
            except Exception:  # one failed round must not end it
                traceback.print_exc()

    # ------------------------------------------------------------------ what runners report

    def report(self, job_id: str, attempt: int, number: int, chunks: Sequence[tuple[str, str]],
               fields: Mapping[str, Any]) -> bool | str:
        """A runner's report `number`: output (kept on disk before this returns) and changes to its
        record. It renews the attempt's lease; False: the attempt no longer counts (its runner
        fences itself); AGAIN, to a spare's report of its job's end: it is kept for the next."""
        with self.store.lock:
            job = self.store.active.get(job_id)
            if job is None or job.state != "running" or len(job.attempts) != attempt:
                return False
            self.renewed[job_id] = time.monotonic()
            if number <= self.numbers.get(job_id, 0):
                return True  # sent again after its answer was lost: applied once
            self.numbers[job_id] = number
            if fields.get("gpus_busy"):  # its GPUs are another cluster's now: it never started
                self._back_in_line(job, str(fields["gpus_busy"]))
                return True
            self.store.append(job_id, [(str(s), str(t)) for s, t in chunks])
            changes = {k: v for k, v in fields.items() if k in UPDATABLE}
            if changes:
                mine = {k: v for k, v in changes.items() if k in attrs.fields_dict(Attempt)}
                changes["attempts"] = (*job.attempts[:-1], attrs.evolve(job.attempts[-1], **mine))
                job = self.store.update(job_id, **changes) or job
            if changes.get("state") == "running" and job.node and not (job.gpus or job.boost):
                # A spare for the node's next job, made once this one's command has started: a
                # worker process starting (about 0.4 s of a CPU) would slow this job's start.
                self.wanted.add(job.node)
                self.wake.set()
            if job.state not in ACTIVE and job.node and not job.boost:
                self.freeing.append((time.monotonic(), job.node,
                                     {"CPU": job.cpus, "GPU": job.gpus, "memory": float(job.memory_bytes)}))
            answer = self._keep_spare(job) if job.state not in ACTIVE else True
            if answer is True and job.state not in ACTIVE and job.node and not (job.gpus or job.boost):
                self.wanted.add(job.node)  # its runner exits: one made ahead, if the node has room
        if job.state not in ACTIVE:
            self.wake.set()
        return answer

    def _keep_spare(self, job: JobRecord) -> bool | str:
        """The answer to the report of the job's end: AGAIN where it ran in a spare that its node
        keeps for its next job (fewer than SPARES_KEPT and its CPUs are kept there)."""
        seen = self.last_read[1]
        with self.spare_lock:
            spare = self.lent.pop(job.id, None)
            kept = self.spares.setdefault(job.node or "", [])
            if spare is None or self.draining or seen is None or len(kept) >= min(SPARES_KEPT, _cpus(seen, job.node)):
                return True
            kept.append(spare)
        return AGAIN

    def _back_in_line(self, job: JobRecord, why: str) -> None:
        """The attempt's GPUs are claimed by another cluster on its node: the job waits at its place
        in line and looks again after GPU_LOOK_SECONDS, three times, then doubling (to a minute).
        Such an attempt never ran, and counts against no --retries."""
        now = time.time()
        bounced = attrs.evolve(job.attempts[-1], state="claimed", ended=now, reason=why)
        attempts = (*job.attempts[:-1], bounced)
        streak = 0  # this and the looks right before it that found the GPUs taken
        for earlier in reversed(attempts):
            if earlier.state != "claimed":
                break
            streak += 1
        self.store.end_attempt(job.id, bounced.number)
        mine = job.pinned and not job.boost
        self.store.update(job.id, state="queued", attempts=attempts, node=job.node if mine else None, pinned=mine,
                          boost=None, started=None, pid=None, hostname=None, reason=why,
                          not_before=now + min(60.0, GPU_LOOK_SECONDS * 2 ** max(0, streak - 3)))
        self.renewed.pop(job.id, None)
        self.wake.set()

    def fenced(self, job_id: str, attempt: int, message: str) -> None:
        """A runner's word that it killed its attempt's command when its lease ran out: kept on the attempt."""
        with self.store.lock:
            job = self.store.get(job_id)
            if job is None or not 0 < attempt <= len(job.attempts):
                return
            mine = job.attempts[attempt - 1]
            note = message.removeprefix("grid: ")
            attempts = list(job.attempts)
            attempts[attempt - 1] = attrs.evolve(mine, reason=f"{mine.reason}; {note}" if mine.reason else note)
            self.store.amend(job_id, attempts=tuple(attempts))

    def _lose(self, job: JobRecord, why: str) -> None:
        """The job's attempt ended as lost: the job waits until the attempt's lease has run out, then
        runs again, while requeues are left; else it ends as lost."""
        with self.store.lock:
            job = self.store.active.get(job.id) or job
            if job.state != "running" or not job.attempts:
                return
            now = time.time()
            lost = attrs.evolve(job.attempts[-1], state="lost", ended=now, reason=why)
            attempts = (*job.attempts[:-1], lost)
            losses = sum(1 for a in attempts if a.state == "lost")
            quiet = time.monotonic() - self.renewed.pop(job.id, 0.0)  # since its lease was last renewed
            if losses > job.requeues:
                spent = "--no-requeue" if job.requeues == 0 else f"its {job.requeues} retries are spent"
                self.store.update(job.id, state="lost", ended=now, attempts=attempts,
                                  reason=f"{why}; not run again ({spent})")
            else:
                self.store.end_attempt(job.id, lost.number)
                mine = job.pinned and not job.boost  # where the user put it (--node); else anywhere
                self.store.update(job.id, state="queued", attempts=attempts, node=job.node if mine else None,
                                  pinned=mine, boost=None, started=None, pid=None, hostname=None,
                                  not_before=now + max(0.0, lost.lease_seconds - quiet) + FENCE_GRACE,
                                  reason=f"attempt {lost.number} on {lost.node} was lost: {why}")
        self.wake.set()

    # ------------------------------------------------------------------ what users ask

    def record(self, job_id: str) -> JobRecord | None:
        """The record, with its place in line while it waits."""
        job = self.store.get(job_id)
        if job is not None and job.state == "queued" and job_id in self.waiting:
            why = self.waiting[job_id]
            job = attrs.evolve(job, waiting=why.why, position=why.position, reason=why.reason)
        return job

    def jobs(self, everything: bool = False) -> list[dict[str, Any]]:
        """The active jobs and the recent finished ones (the last day's, at most RECENT; all with
        `everything`), in submission order, as JobRecord's plain data, which callers only read. A
        finished record read for the last such listing is not read again while its text is the
        same: `jobs list` every few seconds reads only what changed (2,000 records cost 15 ms)."""
        import json

        before, read = self.read_finished, {}
        out = []
        for record in self._listed(everything):
            if isinstance(record, JobRow):
                known = before.get(record.id)
                data = known[1] if known is not None and known[0] == record.text else json.loads(record.text)
                read[record.id] = (record.text, data)
                record = data
            out.append(record)
        if not everything:  # the cache holds what the last usual listing showed, and no more
            self.read_finished = read
        return out

    def jobs_text(self, everything: bool = False) -> str:
        """The same, as one JSON list: finished records are spliced in as the text they are kept
        as, neither read nor written again (2,000 of them cost 30 ms each way)."""
        import json

        listed = self._listed(everything)
        return f"[{', '.join(r.text if isinstance(r, JobRow) else json.dumps(r) for r in listed)}]"

    def _listed(self, everything: bool) -> list[JobRow | dict[str, Any]]:
        """What `jobs` lists in submission order: finished records as kept (their JSON text),
        active ones as data, a waiting one with its place in line."""
        since = None if everything else time.time() - 86400
        finished = self.store.finished_rows(None if everything else RECENT, since)
        with self.store.lock:
            active = [dict(data) for data in self.store.active_data.values()]
        waiting = self.waiting
        for data in active:
            if data["state"] == "queued" and data["id"] in waiting:
                why = waiting[data["id"]]
                data.update(waiting=why.why, position=why.position, reason=why.reason)
        if not everything:  # an array shown is shown whole, so its row's counts are its own
            listed = {row.id for row in finished} | {d["id"] for d in active}
            # A member's id is ARRAY.INDEX (submit).
            for array in {job_id.partition(".")[0] for job_id in listed if "." in job_id}:
                finished += [row for row in self.store.member_rows(array, finished=True) if row.id not in listed]
        together: list[tuple[int, JobRow | dict[str, Any]]] = [(row.seq, row) for row in finished]
        together += [(int(data["seq"]), data) for data in active]
        return [record for _, record in sorted(together, key=lambda pair: pair[0])]

    def matching(self, job_id: str) -> list[JobRecord]:
        """The job, or every member of the array with that id."""
        found = self.store.get(job_id)
        members = [] if found else self.store.members(job_id)
        if not found and not members:
            raise QueueError(f"no job {job_id!r}")
        return [found] if found else members

    def hold(self, job_id: str, held: bool) -> list[JobRecord]:
        """Hold (or release) a waiting job, or an array's waiting members."""
        with self.lock:
            jobs = self.matching(job_id)
            waiting = [j for j in jobs if j.state == "queued"]
            if not waiting:
                raise QueueError(f"job {job_id} is {jobs[0].state}: only a waiting job can be held or released")
            changed = [self.store.update(j.id, held=held) for j in waiting]
        self.wake.set()
        return [j for j in changed if j is not None]

    def stop(self, job_id: str) -> list[JobRecord]:
        """Stop the job, or every member of the array: a waiting one never starts, a running one gets
        SIGTERM and then SIGKILL (jobs.STOP_GRACE)."""
        with self.lock:
            jobs = self.matching(job_id)
            now = time.time()
            for job in jobs:
                if job.state == "queued":
                    self.store.update(job.id, state="stopped", ended=now, reason="stopped before it started")
        self._stop_running([j for j in jobs if j.state == "running"], reason=None)
        self.wake.set()
        return [self.store.get(j.id) or j for j in jobs]

    def _stop_running(self, jobs: Sequence[JobRecord], reason: str | None) -> None:
        """Stop these jobs' runners at once, and wait for each to record its end (or say so for it)."""
        stops = {}
        for job in jobs:
            if reason:
                self.store.update(job.id, reason=reason)
            try:
                stops[job.id] = self.ray.get_actor(runner_name(job), namespace=self.namespace).stop.remote(job.id)
            except ValueError:
                self.store.update(job.id, state="stopped", ended=time.time())
        with contextlib.suppress(Exception):  # a runner that is gone: recorded below
            self.ray.get(list(stops.values()), timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(j in self.store.active for j in stops):
            time.sleep(0.05)
        for job_id in stops:
            self.store.update(job_id, state="stopped", ended=time.time())  # no-op where the runner recorded it

    def drain(self) -> int:
        """For `cluster stop`: running jobs end, recorded as stopped by it; waiting ones stay
        queued for the next start. How many wait."""
        with self.lock:
            self.draining = True
        self._stop_running([j for j in self.store.active.values() if j.state == "running"], STOPPED_BY_CLUSTER)
        return sum(1 for j in self.store.active.values() if j.state == "queued")

    def end_jobs_in(self, group: str) -> None:
        """Before a boost's reservation goes: its jobs end, recorded as ended by it."""
        inside = [j for j in self.store.active.values() if j.boost == group and j.state == "running"]
        self._stop_running(inside, f"ended with the boost reservation {group}")

    # ------------------------------------------------------------------ tidying

    def _lost_without_runner(self, why: str, misses: int = 1) -> None:
        """Running jobs whose runner is not found `misses` looks in a row (one look may fail while
        the GCS is busy) are lost. A runner started less than REAP_SECONDS ago is not looked for."""
        with self.lock:
            running = [j for j in self.store.active.values() if j.state == "running"]
            self.missing = {j.id: self.missing.get(j.id, 0) for j in running}
            self.dispatched = {j.id: self.dispatched[j.id] for j in running if j.id in self.dispatched}
            with self.spare_lock:  # jobs that ended without their runner's word
                self.lent = {j.id: self.lent[j.id] for j in running if j.id in self.lent}
        for job in running:
            if time.monotonic() - self.dispatched.get(job.id, 0.0) < REAP_SECONDS:
                continue
            try:
                self.ray.get_actor(runner_name(job), namespace=self.namespace)
                self.missing[job.id] = 0
                continue
            except ValueError:
                self.missing[job.id] += 1
            if self.missing[job.id] >= misses:
                self._lose(job, f"its runner on {job.node} ended without an exit status ({why})")

    def _free_stray_reservations(self) -> None:
        """Removes spares' placement groups (jobs.py: _reserve) of attempts that no longer run. A
        spare removes its own as its command ends; but a spare killed while it made one (a take
        that timed out, `_hand`) can leave it behind, CREATED and holding the job's CPUs for good.
        Killing a detached actor a moment after it asked for a group left 8 of 10 groups behind
        here, one of them holding its CPU."""
        from ray.util import placement_group_table
        from ray.util.placement_group import PlacementGroup

        table = placement_group_table()  # read before the jobs: a group of an attempt begun since is kept
        running = {RUNNER.format(j.id, len(j.attempts)) for j in list(self.store.active.values())
                   if j.state == "running"}
        for group_id, info in table.items():
            name = str(info.get("name") or "")
            if name.startswith(RUNNERS) and name not in running and info.get("state") != "REMOVED":
                with contextlib.suppress(Exception):  # removed meanwhile by its runner
                    self.ray.util.remove_placement_group(PlacementGroup(self.ray.PlacementGroupID.from_hex(group_id)))

    def _lease_keeper(self) -> None:
        """Attempts whose runner has not renewed its lease in time are lost."""
        while True:
            time.sleep(LEASE_LOOK_SECONDS)
            try:
                now = time.monotonic()
                for job in [j for j in self.store.active.values() if j.state == "running" and j.attempts]:
                    lease = job.attempts[-1].lease_seconds
                    if now - self.renewed.setdefault(job.id, now) > lease:
                        self._lose(job, f"no word from its runner on {job.node} for {lease:g} s: its lease ran out "
                                        "(the node was lost or cut off)")
            except Exception:  # one failed round must not end it
                traceback.print_exc()

    def _reaper(self) -> None:
        pruned = swept = 0.0
        while True:
            time.sleep(REAP_SECONDS)
            try:
                self._lost_without_runner("the node was lost, or Ray ended it", misses=2)
                if self.spare_killed or time.monotonic() - swept > STRAY_SECONDS:
                    self.spare_killed, swept = False, time.monotonic()
                    self._free_stray_reservations()
                if time.monotonic() - pruned > PRUNE_SECONDS:
                    pruned = time.monotonic()
                    keep = self.config.queue
                    self.store.prune(keep.keep_records, keep.keep_days * 86400, int(keep.keep_output_gb * 2**30))
            except Exception:  # a tidy-up: one failed round must not end it
                traceback.print_exc()


UPDATABLE = frozenset({"state", "exit_status", "started", "ended", "pid", "hostname", "reason"})
RECENT = 100  # finished jobs `jobs list` shows without --all


def _cpus(seen: Seen, node: str | None) -> float:
    """The node's CPUs in all, as Ray last said."""
    return next((s.total.get("CPU", 0.0) for s in seen.slots if s.view.name == node), 0.0)


def runner_name(job: JobRecord) -> str:
    """The Ray actor that runs the job's last attempt."""
    return job.attempts[-1].runner or RUNNER.format(job.id, len(job.attempts))


def _short(job: JobRecord, total: Mapping[str, float]) -> str:
    """What the node has too little of, in all, beside what the job asks."""
    key, asked = shortage(job, total) or ("CPU", job.cpus)
    have = total.get(key, 0.0)
    if key == "memory":
        return f"{have / 2**30:.1f} GiB memory in all, the job asks for {asked / 2**30:.1f}"
    return f"{have:g} {key} in all, the job asks for {asked:g}"
