"""The types that plugins yield from their hooks, the interfaces their objects implement, and the
records the cluster answers with (what `--json` prints; see the end of this module).

Registration objects are frozen attrs classes: a validated lower-case `name`, a one-line
`summary`, and a factory that builds the working object only when it is used, so that listing
plugins never imports a plugin's heavy dependencies.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig, NodeConfig

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")


def _valid_name(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"registration name {value!r} must be lower-case: [a-z][a-z0-9_.-]*")


def _one_line(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or "\n" in value:
        raise ValueError("summary must be a single line of text")


# --------------------------------------------------------------------------- results and readings


@record
class CommandResult:
    """What a command run through a transport returned."""

    exit_status: int
    stdout: str = ""
    stderr: str = ""


@record
class GpuProcess:
    """A process on a GPU, its GPU memory, and the grid job or Ray task it belongs to."""

    pid: int
    memory_used_bytes: int | None  # None where the driver cannot say (it hides other users' figures)
    kind: str = "compute"  # or "graphics"
    command: str = ""
    owner: str = ""  # "grid job", "ray <task>" or "" for anything else
    job_pid: int | None = None  # the pid of the grid job's own command, to match a job's recorded pid


@record
class GpuReading:
    """One GPU's utilisation and memory, in percent and bytes; temperature and power where known."""

    index: int
    name: str
    util_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_c: float | None = None
    power_watts: float | None = None
    processes: tuple[GpuProcess, ...] = ()

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


@record
class NodeMetrics:
    """A node's live readings. Percentages are 0-100; `source` names the metrics source."""

    source: str
    cpu_percent: float
    memory_percent: float
    swap_percent: float = 0.0
    load1: float = 0.0
    cpu_count: int = 0
    memory_total_bytes: int = 0
    gpus: tuple[GpuReading, ...] = ()
    # The cluster's own processes on the node apart from the rest (the owner's): each None where
    # the source cannot tell them apart. CPU percentages, like cpu_percent, are of the node's
    # allowed CPUs (affinity and cgroup quota), and cpu_count is their number.
    cluster_cpu_percent: float | None = None
    owner_cpu_percent: float | None = None  # cpu_percent less the cluster's, never below 0
    cluster_memory_bytes: int | None = None  # the cluster's processes' private resident memory
    cluster_memory_percent: float | None = None  # of memory_total_bytes
    owner_memory_percent: float | None = None  # memory_percent less the cluster's, never below 0
    owner_idle_seconds: float | None = None  # since a terminal or the desktop was last used

    @property
    def gpu_percent(self) -> float | None:
        """The busiest GPU's utilisation, or None without GPUs."""
        return max((g.util_percent for g in self.gpus), default=None)


@record
class NodeView:
    """What a scheduler or offload policy sees of one node."""

    name: str
    role: str
    metrics: NodeMetrics | None = None
    available: Mapping[str, float] = attrs.field(factory=dict)
    held: bool = False
    tags: tuple[str, ...] = ()


@record
class WorkRequest:
    """A piece of work to place: the resources it asks for and where it came from."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    origin: str | None = None


# --------------------------------------------------------------------------- working interfaces


class TransportError(Exception):
    """A node could not be reached or the transport failed; the message says why."""


class HostKeyError(TransportError):
    """The node answered, but its host key is unknown or has changed; the message says what to do."""


class AuthError(TransportError):
    """The node's host key checked out, but it refused the credentials offered."""


@runtime_checkable
class Transport(Protocol):
    """Runs commands on one node and copies files to and from it.

    `argv` is a list of arguments: a transport that goes through a shell quotes each one, so
    the command arrives literally. Raise TransportError when the node cannot be reached.
    """

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: Callable[[str, str], None] | None = None,
        stdin: bytes | str | None = None,
    ) -> CommandResult:
        """Run argv; `on_output(stream, text)` receives output as it arrives when given.

        `stdin` is written to the command's standard input, then EOF (str as UTF-8); without it
        the command reads EOF at once. Neither `env` nor `stdin` may appear on a command line
        another user can read (`ps`): they carry secrets (the job environment, Ray's settings).
        """
        ...

    def put(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to the node."""
        ...

    def get(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the node."""
        ...

    def close(self) -> None:
        """Release connections; the transport may not be used afterwards."""
        ...


class MetricsSource(Protocol):
    """Reads a node's live metrics. Returns None where the source does not apply to the node."""

    def sample(self, node: NodeConfig, transport: Transport) -> NodeMetrics | None: ...


class Scheduler(Protocol):
    """Chooses a node for a piece of work, or None when nothing fits."""

    def choose(self, request: WorkRequest, nodes: Sequence[NodeView]) -> NodeView | None: ...


# --------------------------------------------------------------------------- backends

Progress = Callable[[str, str], None]
"""`progress(node name, message)`: what a backend is doing on a node, as it happens."""


@record
class NodeOutcome:
    """One node's result of a backend action: what was done, and the reason when it failed."""

    node: str
    ok: bool
    action: str  # e.g. "started", "running", "stopped", "installed", "up to date", "would start", "failed"
    reason: str = ""
    seconds: float = 0.0


@record
class JobSpec:
    """A command to run as a job on one node, with the resources it holds while it runs."""

    argv: tuple[str, ...]
    node: str
    cpus: float = 1.0
    gpus: float = 0.0
    memory_bytes: int = 0
    cwd: str | None = None  # None: the node's home directory
    env: Mapping[str, str] = attrs.field(factory=dict)
    job_id: str | None = None  # None: the backend makes one
    boost: str | None = None  # run inside this boost's reservation on `node`
    timeout_seconds: float | None = None  # then the job is stopped and fails with exit status 124
    retries: int = 0  # runs again after a failure, up to this many times


@record
class Check:
    """One of `grid doctor`'s verdicts on a node: the check's name (the column users see), whether it
    passed, and what was found (a version first, where there is one) or why it failed, with the remedy."""

    name: str
    ok: bool
    detail: str


@record
class ShellEnv:
    """What a shell needs so the engine's own tools reach the running cluster (`grid cluster env`)."""

    cluster: str
    variables: Mapping[str, str]
    unset: tuple[str, ...] = ()  # variables that would override these if the shell had them
    notes: tuple[str, ...] = ()  # what the variables do not cover, e.g. a job server that is off


class Backend(Protocol):
    """A compute engine's lifecycle on the cluster's nodes and the jobs that run on it.

    `grid cluster ...`, `grid run` and `grid jobs ...` own the commands and call these methods;
    a backend never prints tables itself. Methods that touch nodes report per node
    (`NodeOutcome`) rather than raising for one bad node; they raise GridError only when nothing
    can be done at all (e.g. no cluster running).
    """

    def check(self, cluster: Cluster) -> list[NodeOutcome]:
        """Whether each node can run the engine (reachable, versions, ports); changes nothing."""
        ...

    def install(self, cluster: Cluster, nodes: Sequence[NodeConfig], *, wheelhouse: str | None,
                extra: Sequence[str], progress: Progress) -> list[NodeOutcome]:
        """Give each node the head's engine and grid; nodes that already match are skipped."""
        ...

    def start(self, cluster: Cluster, *, dry_run: bool, progress: Progress) -> list[NodeOutcome]:
        """Start the head, then the workers; nodes already up are left alone. Idempotent."""
        ...

    def stop(self, cluster: Cluster, *, progress: Progress) -> list[NodeOutcome]:
        """Stop what grid started on each node, nothing else. Harmless when nothing runs."""
        ...

    def status(self, cluster: Cluster) -> dict[str, EngineNode]:
        """Per node name, the node as the engine sees it; answers within seconds when the cluster is down."""
        ...

    def submit(self, cluster: Cluster, spec: JobSpec, *, detach: bool,
               on_output: Callable[[str, str], None]) -> tuple[str, int | None]:
        """Run a job; stream its output to `on_output(stream, text)` unless detached.
        Returns the job id and its exit status (None when detached)."""
        ...

    def jobs(self, cluster: Cluster) -> list[dict[str, Any]]:
        """Every job the cluster knows, each with JobRecord's fields (the CLI structures them into it)."""
        ...

    def logs(self, cluster: Cluster, job_id: str, *, follow: bool,
             on_output: Callable[[str, str], None]) -> int | None:
        """A job's output so far (until it ends when following); its exit status once ended."""
        ...

    def stop_job(self, cluster: Cluster, job_id: str) -> dict[str, Any]:
        """Stop a running job; the job's record after stopping."""
        ...

    def boost_for(self, cluster: Cluster, request: WorkRequest) -> tuple[str, str] | None:
        """A boost lent to `request.origin` with room for the request: (node, reservation), or None."""
        ...

    def python_problem(self, version: str, head_version: str | None) -> str | None:
        """Why the engine would refuse a node whose Python is `version` beside the head's, with the
        remedy; None when it would not."""
        ...

    def engine_probe(self) -> str:
        """Python source that `grid doctor`'s probe runs with each node's interpreter (in its own
        namespace, in the same process that reports the node's Python): it prints
        `engine=<version>` when the engine is usable there, else `engine_error=<why>`; an exception
        it raises is reported as `engine_error` for it. Python 2 and 3 syntax, so that an old
        interpreter still reports its own version."""
        ...

    def engine_check(self, facts: Mapping[str, str], head_facts: Mapping[str, str] | None, *,
                     is_head: bool, python: str) -> Check:
        """`grid doctor`'s verdict on the engine at a node, from the `key=value` lines its probe
        printed (`engine`, `engine_error`, `python`, ...) beside the head's (None when the head did not
        answer); `python` names the node's interpreter. The Check's name is the engine's, as users
        know it; a failure's detail says what to do."""
        ...

    def shell_env(self, cluster: Cluster) -> ShellEnv:
        """The variables that point the engine's own tools at this running cluster, from this
        machine; paths only, never a secret itself. GridError when the cluster is not running."""
        ...

    def stray_engines(self, cluster: Cluster) -> list[str]:
        """Warnings about engine state on this machine that would catch a program meant for this
        cluster (another local instance, a default token that differs); empty when all is well."""
        ...

    # The cluster's offload controller (started on first use). A refused request raises GridError
    # with the controller's reason; each answer is the record the controller sent.

    def offload_status(self, cluster: Cluster) -> ControllerStatus:
        """The controller's settings in force, holds, nodes, boosts, last decision and events."""
        ...

    def configure_offload(self, cluster: Cluster, *, enabled: bool | None = None, policy: str | None = None,
                          high: Mapping[str, float] | None = None) -> ControllerStatus:
        """Set automatic offload on or off, its policy and high-water marks, at run time (these win
        over the config file until the file's own value changes)."""
        ...

    def hold(self, cluster: Cluster, node: str, reason: str) -> ControllerStatus:
        """Hold a node by hand: its free CPUs and GPUs are reserved, so new work goes elsewhere."""
        ...

    def release(self, cluster: Cluster, node: str) -> ControllerStatus:
        """End a hold on a node."""
        ...

    def boost(self, cluster: Cluster, *, target: str, resource: str, amount: float, priority: str,
              duration: float | None = None, source: str | None = None) -> Boost:
        """Lend `amount` of `resource` (memory in GB) to `target` from `source` (or the best node)."""
        ...

    def release_boost(self, cluster: Cluster, boost_id: str) -> Boost:
        """End a boost and free its reservation; the boost's final record."""
        ...


# --------------------------------------------------------------------------- registrations


@record
class GridTransport:
    """A way to run commands and copy files on a node. `factory(node, cluster)` -> Transport."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[NodeConfig, ClusterConfig], Transport]


@record
class GridBackend:
    """A compute engine's lifecycle on the nodes. `factory(config)` -> Backend."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[ClusterConfig], Backend]


@record
class GridScheduler:
    """Chooses a node for work. `factory()` -> Scheduler."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], Scheduler]


@record
class GridOffloadPolicy:
    """Decides from metrics whether the head should shed work. `factory(settings)` -> policy."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[Mapping[str, Any]], Any]


@record
class GridMetricsSource:
    """Live readings for nodes. `factory()` -> MetricsSource."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], MetricsSource]


@record
class GridCommand:
    """A CLI command or group, imported from `import_path` ("pkg.module:attr") only when run."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    import_path: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))


@record
class GridServiceOp:
    """A request the grid service on the head answers for a plugin. `import_path` ("pkg.module:attr")
    names its handler, imported in the service's process only when asked:
    `handler(client, config, **params) -> int` (an exit status), where `client.frame(kind, value)`
    sends an answer frame, `client.read_data()` reads the bytes the request carries and
    `client.send_data(data)` sends bytes back, and `config` is the ClusterConfig in force."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    import_path: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))


# --------------------------------------------------------------------------- offload


@record
class OffloadDecision:
    """A policy's answer for one interval: hold the head or not, why, and where work should go."""

    hold: bool
    reason: str
    pressure: tuple[str, ...] = ()  # the metrics over their marks, e.g. ("cpu", "gpu")
    targets: tuple[str, ...] = ()  # preferred nodes for the head's work, best first
    # While held: seconds after which the cluster's tasks still running on the head are stopped so
    # the engine runs them again elsewhere (what it would not retry is never stopped); None: never.
    evict_after: float | None = None


@record
class ControllerState:
    """What the controller tells a policy about itself."""

    head: str
    held: bool
    now: float


# --------------------------------------------------------------------------- records the cluster answers with
#
# What crosses from the cluster to the CLI, and what `--json` prints (its cattrs unstructure):
# plain fields, tuples and mappings, so `cattrs.structure(data, Record)` reads them back.


class Wire:
    """How a CLI reads answers and writes `--json`: records from plain data, and back with attrs'
    asdict. The same as cattrs (tests/test_watch_render.py checks both ways, records of every
    shape) for what records hold: attrs classes, tuples, lists, mappings, optional values and
    literals of plain ones; keys a record does not have are ignored. A CLI process reads one
    answer, and importing cattrs cost it more than reading it (10 ms against 0.4)."""

    def __init__(self) -> None:
        self.fields: dict[type, list[tuple[str, Any, str]]] = {}

    def _fields(self, kind: type) -> list[tuple[str, Any, str]]:
        """(name, type, init argument) of each field, its string annotation resolved once."""
        if kind not in self.fields:
            attrs.resolve_types(kind)
            self.fields[kind] = [(f.name, f.type, f.alias) for f in attrs.fields(kind) if f.init]
        return self.fields[kind]

    def structure(self, data: Any, kind: Any) -> Any:
        import types
        import typing

        if isinstance(kind, type) and attrs.has(kind):
            return kind(**{alias: self.structure(data[name], hint)
                           for name, hint, alias in self._fields(kind) if name in data})
        origin, args = typing.get_origin(kind), typing.get_args(kind)
        if origin is typing.Union or origin is types.UnionType:
            if data is None and type(None) in args:
                return None
            values = [a for a in args if a is not type(None)]
            if len(values) != 1:
                raise TypeError(f"a record field may be one type or None, not {kind}")
            return self.structure(data, values[0])
        if origin is Literal:
            if data not in args:
                raise ValueError(f"{data!r} is not one of {args}")
            return data
        if origin is tuple:
            if args[-1] is Ellipsis:
                return tuple(self.structure(item, args[0]) for item in data)
            return tuple(self.structure(item, arg) for item, arg in zip(data, args, strict=True))
        if origin is list:
            return [self.structure(item, args[0]) for item in data]
        if origin in (dict, Mapping):
            return {self.structure(k, args[0]): self.structure(v, args[1]) for k, v in data.items()}
        if kind is Any:
            return data
        if kind in (str, int, float, bool):
            return kind(data)
        raise TypeError(f"no rule to read {kind}")

    @staticmethod
    def unstructure(record: Any) -> Any:
        """A record, or a list of records, as plain data (tuples as lists)."""
        import attr

        if isinstance(record, list):
            return [attr.asdict(r, retain_collection_types=False) for r in record]
        return attr.asdict(record, retain_collection_types=False)


@functools.cache
def wire() -> Wire:
    return Wire()


BoostState = Literal["active", "released", "expired", "preempted"]


@record
class Event:
    """Something the controller did or saw: when, what kind, on which node (None: the cluster), why."""

    time: float
    kind: str  # hold, release, boost, boost-expired, boost-released, boost-preempted, boost-restored, settings, ...
    node: str | None
    reason: str


@record
class Hold:
    """A node kept free of new work: why, by hand or by the policy, since when, and its reservations."""

    node: str
    reason: str
    manual: bool
    since: float
    gpus: bool = False  # its free GPUs are reserved too, not only its CPUs
    groups: tuple[str, ...] = ()  # the engine's reservations that do it


@record
class Boost:
    """A node borrowing capacity on another: a reservation on `source` that only `target`'s work uses."""

    id: str
    target: str
    source: str
    resource: str  # cpu, gpu or memory (GB)
    amount: float
    priority: str  # low, normal, high, critical
    created: float
    expires_at: float | None  # None: until released
    state: BoostState = "active"
    note: str = ""  # e.g. which boosts it preempted, or how it ended
    group: str = ""  # the engine's reservation


@record(kw_only=True)
class OffloadInForce:
    """The offload settings the controller runs with, and where each value came from."""

    enabled: bool = False
    policy: str = "threshold"
    thresholds: Mapping[str, float] = attrs.field(factory=dict)  # high-water marks, percent per metric
    low: Mapping[str, float] = attrs.field(factory=dict)  # low-water marks
    interval_seconds: float = 5.0
    cooldown_seconds: float = 30.0
    window: int = 3
    # Per value ("enabled", "policy", "high.cpu", "low.cpu", ..., "window"): "file" (the config in
    # force) or "run time" (`offload auto`, which wins until the file's own value changes).
    origin: Mapping[str, str] = attrs.field(factory=dict)


@record
class Decision:
    """The offload policy's last answer and when it was given."""

    hold: bool
    reason: str
    targets: tuple[str, ...] = ()  # preferred nodes for the head's work, best first
    time: float = 0.0
    pressure: tuple[str, ...] = ()  # the metrics over their marks
    evict_after: float | None = None  # OffloadDecision's


@record(kw_only=True)
class HeldWork:
    """The cluster's work found running on a held node, and what the controller does with it."""

    pid: int
    name: str  # the engine's name for it: a task's function, an actor's class
    kind: str  # "task" (the engine runs it again elsewhere if stopped) or "actor"
    action: str  # "lowered" (lowest priority), "evicted" (stopped), "kept" (lowered, never stopped)
    reason: str = ""


@record(kw_only=True)
class NodeState:
    """One node as the controller last saw it: its readings, free resources and hold."""

    name: str
    role: str = "worker"
    cpu_percent: float | None = None
    memory_percent: float | None = None
    gpu_percent: float | None = None
    available: Mapping[str, float] = attrs.field(factory=dict)  # the engine's free logical resources
    hold: str | None = None  # the hold's reason, None when free
    gpus: tuple[GpuReading, ...] = ()
    # The owner's load beside the cluster's, and presence (NodeMetrics; None where unknown).
    owner_cpu_percent: float | None = None
    cluster_cpu_percent: float | None = None
    owner_idle_seconds: float | None = None
    # free, held, lowered (the cluster's processes there at the lowest priority), evicting (its
    # tasks are being stopped so they run elsewhere)
    step: str = "free"
    lowered: int = 0  # how many of the cluster's processes are lowered
    work: tuple[HeldWork, ...] = ()  # while held: the cluster's work running there


@record(kw_only=True)
class OffloadStatus(OffloadInForce):
    """What `grid offload auto` shows: the settings in force, the config revision, holds, decision, events."""

    cluster: str = ""
    revision: str = ""  # of the config the controller runs with
    held: Mapping[str, Hold] = attrs.field(factory=dict)
    decision: Decision | None = None
    events: tuple[Event, ...] = ()  # the most recent, oldest first
    last_event: Event | None = None


@record(kw_only=True)
class ControllerStatus(OffloadStatus):
    """Everything the controller answers `status` with: OffloadStatus, each node's row and every boost."""

    nodes: tuple[NodeState, ...] = ()
    boosts: tuple[Boost, ...] = ()


@record(kw_only=True)
class ResourceUse:
    """One of a node's logical resources as the engine schedules it: in all, free and held."""

    total: float
    available: float
    used: float


@record(kw_only=True)
class EngineNode:
    """One node as the compute engine sees it (`Backend.status`); None where the engine cannot say."""

    alive: bool = False
    cpus: float | None = None
    gpus: float | None = None
    memory_bytes: int | None = None
    resources: Mapping[str, ResourceUse] = attrs.field(factory=dict)
    address: str | None = None  # the node's address in the engine
    node_id: str | None = None
    error: str | None = None  # why it is not alive, or the engine could not be asked
    # The node's latest reading as the cluster took it, and its age in seconds, where fresh.
    metrics: NodeMetrics | None = None
    metrics_age: float | None = None


@record(kw_only=True)
class NodeStatus:
    """One row of `grid cluster status`: the transport's and metrics' view, then the engine's."""

    name: str
    host: str
    role: str
    transport: str
    reachable: bool
    error: str | None = None  # why the transport or the metrics failed
    alive: bool | None = None  # None: the engine could not be asked
    # The engine's figures where it has them, else the configured ones, else the metrics'.
    cpus: float | None = None
    gpus: float | None = None
    memory_bytes: int | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    swap_percent: float | None = None
    load1: float | None = None
    gpu_percent: float | None = None
    metrics_source: str | None = None
    metrics_age: float | None = None  # seconds, where the reading is the cluster's; None: read by this command
    resources: Mapping[str, ResourceUse] = attrs.field(factory=dict)
    address: str | None = None
    node_id: str | None = None
    engine_error: str | None = None  # EngineNode.error, or why the engine could not be asked


@record(kw_only=True)
class ClusterStatus:
    """What `grid cluster status` shows: the cluster, its config file and one row per node."""

    cluster: str
    source: str
    nodes: tuple[NodeStatus, ...] = ()


@record(kw_only=True)
class JobRecord:
    """A job the cluster knows: where and what it runs, its state, exit status and times."""

    id: str
    node: str
    argv: tuple[str, ...]
    state: str  # pending, running, succeeded, failed, stopped
    submitted: float
    cwd: str | None = None
    exit_status: int | None = None
    started: float | None = None
    ended: float | None = None
    pid: int | None = None
    hostname: str | None = None
    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    boost: str | None = None  # the boost reservation it runs in, if any
    reason: str | None = None  # why it failed or ended, where grid knows


@record(kw_only=True)
class PoolEntry:
    """A memory-pool entry: its key, node, size in bytes, times, and `ok` or `lost` (its node left)."""

    key: str
    node: str
    size: int
    created: float
    last_read: float
    state: str = "ok"
