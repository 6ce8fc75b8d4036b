"""The config's models: attrs classes for every section, and the rules their values keep.

A rule (`Annotated[T, rule]`) runs as the value is read (loading.py), so its message carries the
value's path. The seed's YAML blocks have models here too; seed.py maps them onto grid's own.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import attrs

from grid_core.errors import ConfigError
from grid_core.record import record

__all__ = [
    "CLUSTER_NAME",
    "EMBEDDED_DEFAULT",
    "EXPOSING_FLAGS",
    "INT_MAX",
    "LOCAL_HOSTS",
    "METRICS",
    "NODE_NAME",
    "PRIORITY_WORDS",
    "START_FLAG",
    "AccessSettings",
    "AtLeastOne",
    "BackendSettings",
    "BoostSettings",
    "Bound",
    "ClusterConfig",
    "Count",
    "EnvKey",
    "Environment",
    "ExecutionSettings",
    "Fraction",
    "GpuSpec",
    "Host",
    "LendRules",
    "LoggingSettings",
    "LoginName",
    "Marks",
    "MemoryPoolSettings",
    "MetricsSettings",
    "NodeConfig",
    "NodeSharing",
    "NonNegative",
    "OffloadSettings",
    "Pattern",
    "Percent",
    "Port",
    "Positive",
    "Priority",
    "QueueSettings",
    "Rule",
    "RuntimeEnv",
    "SchedulerSettings",
    "SeedAutoOffload",
    "SeedPercent",
    "SeedPriorities",
    "SeedSharing",
    "SeedThresholds",
    "SshSettings",
    "StartFlag",
    "StartValue",
    "UserLimits",
]

EMBEDDED_DEFAULT = "<embedded default>"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Cluster names become directory and file names (state dir, node dirs): no '/', no leading '.' or '-'.
CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
START_FLAG = re.compile(r"^-{0,2}[A-Za-z][A-Za-z0-9_-]*$")
METRICS = ("cpu", "memory", "gpu")
INT_MAX = 2**63 - 1
# Words for a node's priority as a boost source; numbers (the seed writes 0.8) sort among them.
PRIORITY_WORDS = {"low": 0.25, "normal": 0.5, "high": 0.75, "critical": 1.0}
# `ray start` flags that can bind Ray's servers on every interface; refused without
# backend.allow_public_bind.
EXPOSING_FLAGS = frozenset({"dashboard-host", "ray-client-server-port"})


# --------------------------------------------------------------------------- value rules


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


class _Mismatch(Exception):
    pass


def _show(value: Any) -> str:
    """A value for a message: its repr, cut short (a 400-digit number says nothing more)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Rule:
    """A check on one value, attached with `Annotated[T, rule]` and run as the value is read,
    so its message carries the value's path. `before` sees the raw value, `check` the typed one."""

    def before(self, value: Any) -> Any:
        return value

    def check(self, value: Any) -> None:
        pass


@record
class Bound(Rule):
    low: float
    high: float | None = None
    above: bool = False  # the low end excluded: "must be positive"
    what: str | None = None

    def check(self, value: Any) -> None:
        if self.high is not None and not self.low <= value <= self.high:
            raise _Mismatch(f"expected {self.what or f'{self.low:g}-{self.high:g}'}, got {_show(value)}")
        if self.above and value <= self.low:
            raise _Mismatch(f"must be positive, got {_show(value)}" if self.low == 0 else
                            f"must be above {self.low:g}, got {_show(value)}")
        if value < self.low:
            raise _Mismatch(f"must not be negative, got {_show(value)}" if self.low == 0 else
                            f"must be at least {self.low:g}, got {_show(value)}")


@record
class Pattern(Rule):
    regex: re.Pattern[str]
    message: str

    def check(self, value: Any) -> None:
        if not self.regex.match(value):
            raise _Mismatch(f"{_show(value)} {self.message}")


class _PriorityWords(Rule):
    def before(self, value: Any) -> Any:
        if isinstance(value, str):
            if value.lower() not in PRIORITY_WORDS:
                raise _Mismatch(f"expected a number or one of {', '.join(PRIORITY_WORDS)}, got {_show(value)}")
            return PRIORITY_WORDS[value.lower()]
        return value


class _EnvKey(Rule):
    def check(self, value: Any) -> None:
        if not value or "=" in value or "\0" in value:
            raise _Mismatch(f"environment variable name {_show(value)} must be non-empty, without '=' or NUL")


class _StartValue(Rule):
    """`ray start` takes flags with plain values; a YAML null or date would become garbage there.
    (A table is allowed for `resources` only, which `_check_start_params` checks.)"""

    def check(self, value: Any) -> None:
        if isinstance(value, float) and not _finite(value):
            raise _Mismatch(f"expected a finite number, got {_show(value)}")
        if not isinstance(value, str | int | float | bool | dict):
            raise _Mismatch(f"expected a string, number or true/false, got {_show(value)}")


NonNegative = Annotated[float, Bound(0)]
Positive = Annotated[float, Bound(0, above=True)]
Percent = Annotated[float, Bound(0, 100, what="a percentage 0-100")]
Fraction = Annotated[float, Bound(0, 1, above=True, what="a fraction in (0, 1]")]
Count = Annotated[int, Bound(0)]
AtLeastOne = Annotated[int, Bound(1)]
Port = Annotated[int, Bound(1, 65535)]
Priority = Annotated[float, _PriorityWords(), Bound(0)]
EnvKey = Annotated[str, _EnvKey()]
Environment = dict[EnvKey, str]
StartValue = Annotated[Any, _StartValue()]
StartFlag = Annotated[str, Pattern(START_FLAG, "is not a `ray start` flag name")]
Host = Annotated[str, Pattern(re.compile(r"^\S+$"), "is not a host name or address")]


SeedPercent = Annotated[float, Bound(0, 100, what="a fraction 0-1 or a percentage 0-100")]


# --------------------------------------------------------------------------- grid's models


@record(kw_only=True)
class NodeSharing:
    """The seed's per-node `resource_sharing`: how much of this node others may borrow."""

    can_share: bool = True
    max_share_cpu: NonNegative | None = None
    max_share_memory_gb: NonNegative | None = None
    max_share_gpu: NonNegative | None = None
    priority: Priority | None = None  # mapped onto the node's `priority`
    initialization_commands: list[str] = attrs.Factory(list)


@record(kw_only=True)
class GpuSpec:
    """One GPU a node has, for machines grid cannot read (NVML's answer wins where there is one)."""

    model: Annotated[str, Pattern(re.compile(r"^\S(.*\S)?$"), "is not a GPU model name")]
    memory_gb: Positive  # its total memory, GiB as nvidia-smi counts them (24 for an RTX 4090)


@record(kw_only=True)
class NodeConfig:
    """One machine of the cluster."""

    name: str
    host: Host = "localhost"
    user: str | None = None
    port: Port | None = None
    role: Literal["head", "worker", "master"] = "worker"
    transport: str | None = None  # None: `local` for this machine, else `ssh`
    cpu_count: Count | None = None
    gpu_count: Count | None = None
    gpus: list[GpuSpec] | None = None  # one table a GPU; instead of gpu_count, or beside it when they agree
    memory_gb: NonNegative | None = None
    tags: list[str] = attrs.Factory(list)
    ssh_key_path: str | None = None
    known_hosts: str | None = None
    host_key_policy: Literal["strict", "accept-new"] | None = None
    connect_timeout: Positive | None = None
    command_timeout: Positive | None = None
    python: str | None = None
    priority: Priority = PRIORITY_WORDS["normal"]  # as a boost source: higher is chosen first
    ray_start_params: dict[StartFlag, StartValue] = attrs.Factory(dict)
    resource_sharing: NodeSharing | None = None

    @property
    def transport_name(self) -> str:
        return self.transport or ("local" if self.host in LOCAL_HOSTS else "ssh")

    @property
    def is_head(self) -> bool:
        return self.role in ("head", "master")

    @property
    def gpu_total(self) -> int | None:
        """How many GPUs the config gives the node: gpu_count, else the length of `gpus`; None: unset."""
        if self.gpu_count is not None:
            return self.gpu_count
        return None if self.gpus is None else len(self.gpus)


@record(kw_only=True)
class SshSettings:
    """Cluster-wide SSH defaults; a node's own settings override them."""

    host_key_policy: Literal["strict", "accept-new"] = "strict"
    known_hosts: str | None = None
    connect_timeout: Positive = 10.0
    command_timeout: Positive | None = None
    # A CLI on a machine that is not the node keeps its SSH connections in a keeper process for
    # this long after its last use (docs/remote.md); 0: every command connects anew.
    persist_seconds: NonNegative = 600.0


@record(kw_only=True)
class BackendSettings:
    """The compute engine on the nodes."""

    name: str = "ray"
    port: Port = 6379
    temp_dir: str | None = None
    python: str | None = None  # the interpreter on the nodes; default: the head's
    venv: str | None = None
    env: Environment = attrs.Factory(dict)
    dashboard: bool = False
    dashboard_port: Port = 8265
    namespace: str = "grid"
    # Lets ray_start_params set flags that bind Ray's servers beyond the node's own address.
    allow_public_bind: bool = False
    tls: bool = False  # Ray's gRPC over TLS, with certificates grid makes (auth.py says what the token alone is)


@record(kw_only=True)
class Marks:
    """Percent thresholds per metric."""

    cpu: Percent = 80.0
    memory: Percent = 70.0
    gpu: Percent = 90.0


@record(kw_only=True)
class OffloadSettings:
    """When the head sheds work: high-water marks hold it, low-water marks (after cooldown) free it."""

    enabled: bool = False
    policy: str = "threshold"
    high: Marks = Marks()
    low: Marks = Marks(cpu=60.0, memory=55.0, gpu=70.0)
    interval_seconds: Positive = 5.0
    cooldown_seconds: NonNegative = 30.0
    window: AtLeastOne = 3
    # Presence: held while the owner used a terminal or the desktop within this many seconds,
    # released once idle that long, whatever the load; None: presence is not used.
    owner_idle_seconds: Positive | None = None
    # While the head is held this long, the cluster's tasks still running there are stopped so Ray
    # runs them again on workers; None: never. Actors, and tasks named in never_evict, are kept.
    evict_after: NonNegative | None = None
    never_evict: list[str] = attrs.Factory(list)  # task names (shell patterns) never stopped: max_retries=0 ones


@record(kw_only=True)
class LendRules:
    """When a node may lend: a source whose reading breaks one of these is not chosen."""

    cpu_percent_max: Percent | None = None  # the node's CPU use, percent
    memory_percent_max: Percent | None = None
    gpu_percent_max: Percent | None = None  # its busiest GPU's utilisation
    cpu_min_free: NonNegative | None = None  # cores free for work
    memory_min_free_gb: NonNegative | None = None
    gpu_memory_min_free_mb: NonNegative | None = None  # on its GPU with the most free


@record(kw_only=True)
class BoostSettings:
    """Boosts: one node borrowing capacity on another (grid_core/boost.py)."""

    enabled: bool = True
    default_duration_seconds: Positive | None = None  # None: until released
    max_per_source: AtLeastOne | None = None  # active boosts one node serves at once
    lend: LendRules = LendRules()


@record(kw_only=True)
class QueueSettings:
    """The job store on the head's disk: how many finished jobs it keeps, and how much output.
    A finished job stays while it is among the newest `keep_records` or younger than `keep_days`."""

    # On the head; each cluster and user gets a directory in it. None: grid's state directory
    # there ($XDG_STATE_HOME/grid/jobs, else ~/.local/state/grid/jobs), which survives a reboot.
    directory: str | None = None
    keep_records: AtLeastOne = 10_000
    keep_days: NonNegative = 30.0
    keep_output_gb: NonNegative = 2.0  # all finished jobs' output together; the oldest go first
    # A job's runner renews its lease with the service; one that cannot for this long stops its
    # job, and only then does the service count the attempt lost and run the job again (docs/jobs.md).
    lease_seconds: Annotated[float, Bound(2, 3600)] = 30.0


@record(kw_only=True)
class SchedulerSettings:
    name: str = "fifo"  # the scheduler that orders and places the queue (hookspecs.grid_schedulers)
    # fair-share: a CPU- or GPU-second used this long ago counts half (Slurm's PriorityDecayHalfLife).
    half_life_days: Positive = 7.0


LoginName = Annotated[str, Pattern(re.compile(r"^[a-z_][a-z0-9_.-]*[$]?$", re.IGNORECASE),
                                   "is not a login name")]


@record(kw_only=True)
class UserLimits:
    """The most each user's running jobs may hold at once; None: no limit."""

    cpus: Positive | None = None
    gpus: Count | None = None


@record(kw_only=True)
class AccessSettings:
    """Who besides the cluster's owner may use it (docs/security.md). Without the section, or with it
    empty, the cluster is its owner's alone."""

    users: list[LoginName] = attrs.Factory(list)  # may run jobs and manage their own
    group: LoginName | None = None  # its members may too
    admins: list[LoginName] = attrs.Factory(list)  # may do what the owner does
    limits: UserLimits = UserLimits()

    @property
    def shared(self) -> bool:
        return bool(self.users or self.group or self.admins)


@record(kw_only=True)
class MetricsSettings:
    """Metrics sources asked first, in this order; every other source follows in load order."""

    sources: list[str] = attrs.Factory(list)


# The seed's `resource_sharing` blocks. Every field is None unless written, so that the block
# under `execution` can override the top-level one key by key; `_map_seed` reads them.


@record(kw_only=True)
class SeedThresholds:
    cpu_pressure_high: SeedPercent | None = None
    cpu_pressure_low: SeedPercent | None = None
    memory_pressure_high: SeedPercent | None = None
    memory_pressure_low: SeedPercent | None = None
    gpu_pressure_high: SeedPercent | None = None
    gpu_pressure_low: SeedPercent | None = None
    excess_threshold: SeedPercent | None = None
    gpu_utilization_max: SeedPercent | None = None
    gpu_memory_min_mb: NonNegative | None = None
    memory_percent_max: SeedPercent | None = None
    memory_min_gb: NonNegative | None = None
    cpu_percent_max: SeedPercent | None = None
    cpu_min_cores: NonNegative | None = None


@record(kw_only=True)
class SeedPriorities:
    master_node: Priority | None = None
    worker_nodes: dict[str, Priority] | None = None


@record(kw_only=True)
class SeedAutoOffload:
    enabled: bool | None = None
    head_only_mode: bool | None = None
    cpu_threshold: SeedPercent | None = None
    memory_threshold: SeedPercent | None = None
    gpu_threshold: SeedPercent | None = None
    check_interval_seconds: Positive | None = None
    cooldown_seconds: NonNegative | None = None


@record(kw_only=True)
class SeedSharing:
    enabled: bool | None = None
    mode: Literal["offload_only", "share_and_offload", "dynamic_balancing"] | None = None
    policy: Literal["conservative", "balanced", "aggressive", "predictive"] | None = None
    monitoring_interval_seconds: Positive | None = None
    rebalance_interval_seconds: Positive | None = None
    allocation_timeout_minutes: Positive | None = None
    check_interval: Positive | None = None
    offer_expiry: Positive | None = None
    max_offers_per_node: AtLeastOne | None = None
    thresholds: SeedThresholds | None = None
    priorities: SeedPriorities | None = None
    auto_offload: SeedAutoOffload | None = None


@record(kw_only=True)
class RuntimeEnv:
    env_vars: Environment = attrs.Factory(dict)


@record(kw_only=True)
class ExecutionSettings:
    working_directory: str | None = None
    environment: Environment = attrs.Factory(dict)
    timeout_seconds: Positive | None = None  # for `grid run`
    retry_attempts: Count = 0  # for `grid run`
    default_nodes: AtLeastOne | None = None  # seed only: no effect
    default_gpus_per_node: Count | None = None  # seed only: no effect
    parallel: AtLeastOne = 32
    runtime_env: RuntimeEnv = RuntimeEnv()
    resource_sharing: SeedSharing | None = None


@record(kw_only=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = "WARNING"
    format: Literal["text", "json"] = "text"
    file_path: str | None = None


@record(kw_only=True)
class MemoryPoolSettings:
    """`plugins.memory-pool`, read by that plugin (grid_plugin_memory_pool.cluster); checked here
    so that `config validate` reports what the pool would otherwise silently replace by its default."""

    capacity_gb: NonNegative | dict[str, NonNegative] | None = None  # one number, or per node
    capacity_share: Fraction | None = None  # of each node's object store


# Plugin sections whose shape is known; others are free-form tables for their plugin.
PLUGIN_SECTIONS: dict[str, type] = {"memory-pool": MemoryPoolSettings}


@record(kw_only=True)
class ClusterConfig:
    """A whole cluster: its nodes and how grid runs them."""

    name: Annotated[str, Pattern(CLUSTER_NAME, "may hold only letters, digits, '-', '_' and '.', "
                                               "and must not start with '.' or '-'")] = "grid"
    nodes: list[NodeConfig]
    ssh: SshSettings = SshSettings()
    backend: BackendSettings = BackendSettings()
    offload: OffloadSettings = OffloadSettings()
    boost: BoostSettings = BoostSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    queue: QueueSettings = QueueSettings()
    access: AccessSettings = AccessSettings()
    metrics: MetricsSettings = MetricsSettings()
    execution: ExecutionSettings = ExecutionSettings()
    logging: LoggingSettings = LoggingSettings()
    resource_sharing: SeedSharing | None = None  # the seed's top-level block; execution's wins
    plugins: dict[str, dict[str, Any]] = attrs.Factory(dict)
    source: str = EMBEDDED_DEFAULT  # not read from the file
    notes: tuple[str, ...] = ()  # seed keys accepted without effect; not read from the file

    @property
    def head(self) -> NodeConfig:
        """The node with role head (or the seed's master), else the first node."""
        return next((n for n in self.nodes if n.is_head), self.nodes[0])

    def node(self, name: str) -> NodeConfig:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise ConfigError(f"no node named {name!r} in {self.source} (nodes: {known})")


