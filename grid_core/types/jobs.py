"""A job: what `grid run` asks the cluster to run, and the record the queue keeps of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig

__all__ = ("ACTIVE", "FINAL", "REQUEUES", "ArrayRow", "Attempt", "JobDefaults", "JobListing", "JobRecord", "JobSpec",
           "JobsText", "UserUsage")

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "stopped", "timeout", "lost")
REQUEUES = 3  # a lost attempt runs again this often by default, as Ray retries a task whose worker died


@record(kw_only=True)
class JobSpec:
    """A command to run as a job, with the resources it holds while it runs and its place in the queue."""

    argv: tuple[str, ...]
    node: str | None = None  # None: the scheduler places it; a name: it runs there, waiting if busy
    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int = 0
    gpu_types: tuple[str, ...] = ()  # only GPUs of these models (docs/gpus.md)
    gpu_memory_bytes: int = 0  # only GPUs with at least this much memory
    cwd: str | None = None  # None: the node's home directory
    env: Mapping[str, str] = attrs.field(factory=dict)
    job_id: str | None = None  # None: the service makes one
    boost: str | None = None  # run inside this boost's reservation on `node`
    timeout_seconds: float | None = None  # then the job is stopped and ends as `timeout` (exit status 124)
    retries: int = 0  # runs again after a failure, up to this many times (execution.retry_attempts)
    requeues: int = REQUEUES  # runs again elsewhere after its node was lost, up to this many times (--retries)
    # Engine resources the job asks for beside its CPUs, GPUs and memory (a GPU's model, its memory class).
    resources: Mapping[str, float] = attrs.field(factory=dict)
    priority: int = 0  # higher runs first; low, normal and high are -10, 0 and 10
    after: tuple[str, ...] = ()  # start once these jobs succeed; cancelled if one does not
    array: tuple[int, ...] = ()  # one member per index, each its own job `ID.INDEX`
    array_cap: int = 0  # at most this many members run at once; 0: no cap
    held: bool = False  # queued, but not started until `grid jobs release`


@record(kw_only=True)
class JobDefaults:
    """What a job takes from the config where `grid run` does not say (the `execution` section),
    and the nodes it may name: kept with a submission's shortcut (grid_core/shortcut.py)."""

    environment: Mapping[str, str]
    timeout_seconds: float | None
    retries: int
    working_directory: str | None
    local: Mapping[str, bool]  # each node's name: whether it is this machine (the local transport)

    @classmethod
    def of(cls, config: ClusterConfig) -> JobDefaults:
        execution = config.execution
        return cls(environment=dict(execution.environment), timeout_seconds=execution.timeout_seconds,
                   retries=execution.retry_attempts, working_directory=execution.working_directory,
                   local={n.name: n.transport_name == "local" for n in config.nodes})


@record(kw_only=True)
class Attempt:
    """One run of a job on a node. A job whose node is lost runs again, as a new attempt; its
    output is the attempt's own (`grid jobs logs --attempt N`)."""

    number: int  # 1 first; the job's environment has it as GRID_ATTEMPT
    node: str
    dispatched: float  # when the queue made its runner
    started: float | None = None  # when its command started
    ended: float | None = None
    state: str = "running"  # or how it ended: a job's final state (lost: its runner's lease ran out)
    exit_status: int | None = None
    hostname: str | None = None
    reason: str | None = None
    lease_seconds: float = 30.0  # the lease its runner was granted (queue.lease_seconds then)
    runner: str = ""  # its runner's Ray actor: a node's spare, or grid-job-ID-N made for it ("": the latter)


@record(kw_only=True)
class JobRecord:
    """A job the cluster knows: what it runs, where, its state and, while it waits, why."""

    id: str
    node: str | None  # where it runs or ran; None while it waits unplaced
    argv: tuple[str, ...]
    state: str  # queued, running, succeeded, failed, stopped, timeout, lost
    submitted: float
    seq: int = 0  # submission order: ties of priority run in it
    user: str = ""
    priority: int = 0
    cwd: str | None = None
    exit_status: int | None = None
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    hostname: str | None = None
    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    gpu_types: tuple[str, ...] = ()
    gpu_memory_bytes: int = 0
    boost: str | None = None  # the boost reservation it runs in, if any
    reason: str | None = None  # why it ended as it did, or why it waits, where grid knows
    waiting: str | None = None  # while queued: resources, priority, dependency, held or limit
    position: int | None = None  # while queued: its place in the queue, 1 first
    after: tuple[str, ...] = ()
    array_id: str | None = None  # the array it belongs to: its id is ARRAY.INDEX
    array_index: int | None = None
    array_cap: int = 0
    timeout_seconds: float | None = None
    held: bool = False
    pinned: bool = False  # the user named its node (--node)
    requeues: int = REQUEUES  # a lost attempt is run again, this many times at most (--retries)
    attempts: tuple[Attempt, ...] = ()  # every run so far, the last the one that counts
    not_before: float | None = None  # queued again after a lost attempt: not before that one's lease ran out


@record(kw_only=True)
class UserUsage:
    """One user's standing in the queue (`grid jobs usage`): recent use, its share, and now."""

    user: str
    cpu_seconds: float = 0.0  # used lately: a second used scheduler.half_life_days ago counts half
    gpu_seconds: float = 0.0
    share: float = 0.0  # of all users' recent use, by the resource this user used most of (0 to 1)
    target: float = 0.0  # the share each user is due: equal among those with jobs lately or now
    running: int = 0
    queued: int = 0
    cpus: float = 0.0  # held by the user's running jobs now
    gpus: float = 0.0


@record(kw_only=True)
class ArrayRow:
    """An array as one row of `grid jobs list`: its first member, and its members' states."""

    first: JobRecord
    size: int
    states: Mapping[str, int]  # state -> how many members are in it
    started: float | None = None  # its first member's start
    ended: float | None = None  # its last member's end, once none waits or runs


@record(kw_only=True)
class JobsText:
    """`grid jobs list --json`'s records as the service wrote them, JSON text the CLI prints as it
    came: 1,000 jobs, 10 ms less than reading and writing each. `fields` are the keys every record
    has; the CLI prints the text only where they are JobRecord's, else it makes the records anew."""

    fields: tuple[str, ...]  # empty where the records' keys differ (some kept by an older grid)
    text: str  # a JSON list of the records, each with JobRecord's fields


@record(kw_only=True)
class JobListing:
    """What `grid jobs list` shows (not --json): each job of its own, an array as one row, and the
    waiting jobs after the first few one count; the service makes it, so that 1,000 waiting jobs
    do not travel to be shown as one line."""

    jobs: tuple[JobRecord, ...] = ()  # in submission order
    arrays: tuple[ArrayRow, ...] = ()
    more_queued: int = 0  # waiting jobs left out, after the first shown (by position)
