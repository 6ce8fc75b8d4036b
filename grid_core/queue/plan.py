"""Which waiting jobs start now, where, and why the others wait: the queue's rules, without an engine.

Each event (a submission, a job's end, a node's join, a hold's release) the service asks `plan`
with the waiting jobs, the running ones and each node's capacity, and starts what it answers.

- The scheduler orders the waiting jobs (its `order`, else priority, then submission) and places
  each one (its `choose`), as HTCondor's negotiator and Slurm's main loop do.
- No starvation: a job that some node could hold but none can now reserves what it lacks on the
  node closest to holding it. Jobs behind it may use only what that leaves (Slurm's backfill,
  without time estimates: what the reserving job cannot use).
- A waiting job says why: `resources` (no node has room), `priority` (room there is, but an earlier
  job reserved it), `dependency` (--after), `held` (grid jobs hold), `limit` (its array's cap, or
  its user's [access.limits]), `lease` (its last attempt was lost, and runs again once that
  attempt's lease has run out).
- A held node (its owner is busy: docs/offload.md) is no candidate at all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from grid_core.config.models import UserLimits
from grid_core.queue.share import past_limit
from grid_core.types.jobs import JobRecord, UserUsage
from grid_core.types.readings import NodeView, WorkRequest

KEYS = ("CPU", "GPU", "memory")


@attrs.frozen
class Slot:
    """One node as the planner sees it: the scheduler's view, what it has in all, what is free now."""

    view: NodeView
    total: Mapping[str, float]
    free: Mapping[str, float]


@attrs.frozen
class Waiting:
    why: str  # resources, priority, dependency, held, limit, lease
    position: int  # 1: next in line
    reason: str  # in words, for `jobs list` and the submitter


@attrs.frozen
class Plan:
    start: list[tuple[JobRecord, str]]  # (job, node), in the order they should start
    waiting: dict[str, Waiting]
    cancel: list[tuple[JobRecord, str]]  # jobs that can never start now (a dependency failed), and why


def request(job: JobRecord) -> WorkRequest:
    return WorkRequest(cpus=job.cpus, gpus=job.gpus, memory_bytes=job.memory_bytes,
                       gpu_types=job.gpu_types, gpu_memory_bytes=job.gpu_memory_bytes)


def asks(job: JobRecord) -> dict[str, float]:
    return {"CPU": job.cpus, "GPU": job.gpus, "memory": float(job.memory_bytes)}


def shortage(job: JobRecord, have: Mapping[str, float]) -> tuple[str, float] | None:
    """The first resource `have` has too little of for the job, and how much the job asks; None
    when it fits."""
    return next(((key, amount) for key, amount in asks(job).items() if amount > have.get(key, 0.0) + 1e-9), None)


def in_words(key: str, value: float) -> str:
    """`2 CPU`, `1.5 GiB memory`."""
    return f"{value / 2**30:.1f} GiB memory" if key == "memory" else f"{value:g} {key}"


def lacks(job: JobRecord, have: Mapping[str, float]) -> str | None:
    """What `have` has too little of for the job, as what the job asks, in words; None when it fits."""
    short = shortage(job, have)
    return in_words(*short) if short else None


def default_order(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    """Priority, higher first, then submission order."""
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


def could_hold(job: JobRecord, slot: Slot, gpus_fit: Callable[[JobRecord, NodeView], bool]) -> bool:
    """Whether the node could ever hold the job: named by it (if it names one), big enough, its GPUs."""
    named = not job.pinned or job.node == slot.view.name
    return named and lacks(job, slot.total) is None and gpus_fit(job, slot.view)


def takes_usage(scheduler: Any) -> bool:
    """Whether the scheduler orders by each user's standing: its `order(jobs, usage)` (fair share)."""
    order = getattr(scheduler, "order", None)
    if order is None:
        return False
    import inspect

    try:
        return len(inspect.signature(order).parameters) >= 2
    except (TypeError, ValueError):  # a callable without a signature Python can read
        return False


def ordered_by(scheduler: Any, waiting: Sequence[JobRecord], usage: Mapping[str, UserUsage]) -> list[JobRecord]:
    """The scheduler's order: its `order(jobs)`, or `order(jobs, usage)`; without one, priority
    then submission."""
    order = getattr(scheduler, "order", None)
    if order is None:
        return default_order(waiting)
    return list(order(list(waiting), usage) if takes_usage(scheduler) else order(list(waiting)))


def plan(waiting: Sequence[JobRecord], running: Sequence[JobRecord], slots: Sequence[Slot],
         scheduler: Any, after: Mapping[str, str],
         gpus_fit: Callable[[JobRecord, NodeView], bool] = lambda _job, _view: True, now: float = 0.0,
         usage: Mapping[str, UserUsage] | None = None, limits: UserLimits | None = None) -> Plan:
    """The jobs to start now and where; why each other waits, and its place in line.

    `after` maps every job id that a waiting job names in --after to that job's state (an array's
    id: `succeeded` once all its members did, a final state once one ended otherwise). `now`: the
    time (time.time()) that jobs requeued after a lost attempt wait for (JobRecord.not_before).
    `usage`: each user's standing, for a scheduler that orders by it; `limits`: what one user's
    running jobs may hold at once ([access.limits])."""
    free = {s.view.name: {k: float(s.free.get(k, 0.0)) for k in KEYS} for s in slots}
    open_ = {name: dict(have) for name, have in free.items()}  # free less what started, not less reservations
    running_in = dict[str, int]()
    holding: dict[str, tuple[float, float]] = {}  # user -> (CPUs, GPUs) their running jobs hold
    for job in running:
        if job.array_id:
            running_in[job.array_id] = running_in.get(job.array_id, 0) + 1
        cpus, gpus = holding.get(job.user, (0.0, 0.0))
        holding[job.user] = (cpus + job.cpus, gpus + job.gpus)
    ordered = ordered_by(scheduler, waiting, usage or {})
    start, cancel, held_back = [], [], {}
    shapes: dict[tuple[Any, ...], list[Slot]] = {}  # the nodes that could ever hold a job of that shape
    blocked: dict[tuple[Any, ...], tuple[str, str, str]] = {}  # a shape that could not start: (node, why, reason)
    position = 0

    def wait(job: JobRecord, why: str, reason: str) -> None:
        nonlocal position
        position += 1
        held_back[job.id] = Waiting(why, position, reason)

    for job in ordered:
        states = [after.get(dep, "unknown") for dep in job.after]
        failed = next(((dep, s) for dep, s in zip(job.after, states, strict=True)
                       if s not in ("succeeded", "queued", "running")), None)
        if failed:
            cancel.append((job, f"dependency: job {failed[0]} {failed[1]}"))
            continue
        if job.held:
            wait(job, "held", "held: grid jobs release " + job.id)
            continue
        if job.not_before is not None and job.not_before > now and job.attempts:
            last = job.attempts[-1]
            if last.state == "claimed":  # another cluster holds the GPUs it was given (gpu_claims.py)
                wait(job, "resources", f"{last.reason}; it looks again in {job.not_before - now:.0f} s")
            else:
                wait(job, "lease", f"attempt {last.number} on {last.node} was lost; it runs again once that "
                                   f"attempt's lease has run out, in {job.not_before - now:.0f} s")
            continue
        if any(s != "succeeded" for s in states):
            pending = [dep for dep, s in zip(job.after, states, strict=True) if s != "succeeded"]
            wait(job, "dependency", f"waits for job {', '.join(pending)} to succeed")
            continue
        if job.array_id and job.array_cap and running_in.get(job.array_id, 0) >= job.array_cap:
            wait(job, "limit", f"array {job.array_id} runs at most {job.array_cap} at once")
            continue
        beyond = past_limit(job, holding, limits) if limits is not None else None
        if beyond:
            wait(job, "limit", beyond)
            continue
        shape = (job.cpus, job.gpus, job.memory_bytes, job.gpu_types, job.gpu_memory_bytes, job.pinned and job.node)
        if shape not in shapes:  # an array's members, a sweep's jobs: one shape, worked out once
            shapes[shape] = [s for s in slots if not s.view.held and could_hold(job, s, gpus_fit)]
        candidates = shapes[shape]
        if not candidates:
            held = [s.view.name for s in slots if s.view.held]
            wait(job, "resources", "no running node can hold it now" + (f" ({', '.join(held)} held)" if held else ""))
            continue
        ask = asks(job)
        if shape in blocked:  # what is free only shrinks during a plan: it waits as the last of its shape did
            best_name, why, reason = blocked[shape]
            wait(job, why, reason)
            for key, amount in ask.items():
                free[best_name][key] = max(0.0, free[best_name][key] - amount)
            continue
        chosen = None
        if any(lacks(job, free[s.view.name]) is None for s in candidates):  # else no scheduler could place it
            views = tuple(attrs.evolve(s.view, available=free[s.view.name]) for s in candidates)
            chosen = scheduler.choose(request(job), views)
        if chosen is not None and chosen.name in free and lacks(job, free[chosen.name]) is None:
            start.append((job, chosen.name))
            for key, amount in ask.items():
                free[chosen.name][key] -= amount
                open_[chosen.name][key] -= amount
            if job.array_id:
                running_in[job.array_id] = running_in.get(job.array_id, 0) + 1
            cpus, gpus = holding.get(job.user, (0.0, 0.0))
            holding[job.user] = (cpus + job.cpus, gpus + job.gpus)
            continue
        # Reserve on the candidate closest to holding it: what it lacks there, no one behind it takes.
        best = max(candidates, key=lambda s: _closeness(job, free[s.view.name]))
        short = lacks(job, free[best.view.name]) or "room"
        if any(lacks(job, open_[s.view.name]) is None for s in candidates):
            blocked[shape] = (best.view.name, "priority",
                              f"an earlier job keeps the room on {best.view.name} for itself")
        else:
            blocked[shape] = (best.view.name, "resources", f"{job.node} does not have {short} free now"
                              if job.pinned else f"no node has {short} free now")
        wait(job, *blocked[shape][1:])
        for key, amount in ask.items():
            free[best.view.name][key] = max(0.0, free[best.view.name][key] - amount)
    return Plan(start, held_back, cancel)


def _closeness(job: JobRecord, free: Mapping[str, float]) -> tuple[float, float]:
    """How near the node is to holding the job: the smallest share of each ask that is free, then
    the most free CPUs."""
    shares = [min(1.0, free.get(k, 0.0) / amount) for k, amount in asks(job).items() if amount > 0]
    return (min(shares) if shares else 1.0, free.get("CPU", 0.0))
