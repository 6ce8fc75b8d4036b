"""The cluster config: attrs models, loading from TOML or the seed's YAML, and the lookup order.

One model reads both formats. The seed's YAML differs in spellings (role `master`,
`execution.runtime_env`, the `resource_sharing` blocks); after loading, `_map_seed` turns those
into grid's own settings (docs/config.md has the table), so the rest of grid reads only those.
Every error names the file and the path of each bad value; seed keys that mean nothing in grid
are kept as notes for `config validate`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import attrs

from grid_core.errors import ConfigError
from grid_core.record import record

if TYPE_CHECKING:
    import cattrs  # imported with the converter, on first use: see _converter

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


def _percent(value: float) -> float:
    """The seed's percentages: a fraction when at most 1 (`0.8`), else percent (`80`)."""
    return round(value * 100, 9) if value <= 1 else value  # round: 0.29 * 100 is 28.999999999999996


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
class SchedulerSettings:
    name: str = "least-loaded"


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


# --------------------------------------------------------------------------- structuring


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _type_label(t: Any) -> str:
    return {int: "int", float: "number", str: "string", bool: "true or false"}.get(t, str(t))


def _strict(t: type) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        if t is float and _is_number(value):
            # nan and inf pass every comparison a bound makes, then break what uses them.
            if not _finite(value):
                raise _Mismatch(f"expected a finite number, got {_show(value)}")
            return float(value)
        if not isinstance(value, t) or (isinstance(value, bool) and t is not bool):
            raise _Mismatch(f"expected {_type_label(t)}, got {_show(value)}")
        if isinstance(value, int) and abs(value) > INT_MAX:  # what a C long (Ray, select, sleep) holds
            raise _Mismatch(f"too large, got {_show(value)}")
        return value

    return hook


def _literal_hook(t: Any) -> Any:
    choices = get_args(t)

    def hook(value: Any, _type: Any) -> Any:
        if value not in choices:
            raise _Mismatch(f"expected one of {', '.join(map(repr, choices))}, got {_show(value)}")
        return value

    return hook


def _any_hook(value: Any, _type: Any) -> Any:
    return value


def _capacity_hook(value: Any, _type: Any) -> Any:
    """`capacity_gb`: a number for every node, or a table of node name to number."""
    if value is None:
        return None
    return _converter().structure(value, dict[str, NonNegative] if isinstance(value, dict) else NonNegative)


def _make_converter() -> cattrs.Converter:
    import cattrs
    from cattrs.cols import list_structure_factory, mapping_structure_factory
    from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

    conv = cattrs.Converter(forbid_extra_keys=True)
    for t in (int, float, str, bool):
        conv.register_structure_hook(t, _strict(t))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_hook)
    conv.register_structure_hook(Any, _any_hook)

    def annotated(t: Any) -> Callable[[Any, Any], Any]:
        base, *meta = get_args(t)
        rules = [m for m in meta if isinstance(m, Rule)]

        def hook(value: Any, _type: Any) -> Any:
            for rule in rules:
                value = rule.before(value)
            value = conv.structure(value, base)
            for rule in rules:
                rule.check(value)
            return value

        return hook

    conv.register_structure_hook_factory(lambda t: get_origin(t) is Annotated, annotated)
    conv.register_structure_hook(NonNegative | dict[str, NonNegative] | None, _capacity_hook)

    # cattrs takes any iterable as a list ("abc" as three tags) and fails on a non-table with an
    # AttributeError: require the container the model names, and say so.
    def shaped(kind: type, label: str, make: Callable[[Any], Callable[[Any, Any], Any]]) -> Any:
        def factory(t: Any) -> Callable[[Any, Any], Any]:
            inner = make(t)

            def hook(value: Any, _type: Any) -> Any:
                if not isinstance(value, kind):
                    raise _Mismatch(f"expected {label}, got {_show(value)}")
                return inner(value, _type)

            return hook

        return factory

    # `source` and `notes` are grid's records about a file, never keys in one.
    internal = {"source": override(omit=True), "notes": override(omit=True)}
    conv.register_structure_hook_factory(lambda t: get_origin(t) is list, shaped(
        list, "a list", lambda t: list_structure_factory(t, conv)))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is dict, shaped(
        dict, "a table", lambda t: mapping_structure_factory(t, conv)))
    conv.register_structure_hook_factory(attrs.has, shaped(dict, "a table", lambda t: make_dict_structure_fn(
        t, conv, **(internal if t is ClusterConfig else {}))))  # type: ignore[arg-type]
    conv.register_unstructure_hook(ClusterConfig, make_dict_unstructure_fn(
        ClusterConfig, conv, **internal))  # type: ignore[arg-type]
    return conv


_built: cattrs.Converter | None = None


def _converter() -> cattrs.Converter:
    """The converter, built on first use: importing cattrs and building it cost more than all
    else in this module, and a command on the embedded default config structures nothing."""
    global _built
    if _built is None:
        _built = _make_converter()
    return _built


def __getattr__(name: str) -> Any:
    if name == "converter":  # the module's name for it before it was built lazily
        return _converter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _describe(exc: BaseException, _type: Any) -> str:
    from cattrs.errors import ForbiddenExtraKeysError

    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {keys}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, _Mismatch | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _error_lines(exc: Exception, root: str = "") -> list[str]:
    from cattrs.v import transform_error

    lines = []
    for item in transform_error(exc, path=root, format_exception=_describe):
        message, _, path = item.rpartition(" @ ")
        path = path.lstrip(".")
        # A missing key is reported at its parent; cattrs puts the key in the message.
        lines.append(f"{path}: {message}" if path else message)
    return lines


def _structure(data: Any, model: Any, root: str = "") -> tuple[Any, list[str]]:
    """`data` as `model`, or None and one line per bad value."""
    conv = _converter()
    import cattrs

    try:
        return conv.structure(data, model), []
    except cattrs.BaseValidationError as exc:
        return None, _error_lines(exc, root)
    except (_Mismatch, ValueError, TypeError) as exc:
        return None, [f"{root}: {exc}" if root else str(exc)]


def _fail(source: str, problems: list[str]) -> ConfigError:
    return ConfigError(f"{source}: " + "\n  ".join(["invalid config:", *problems]))


def structure(data: Any, source: str) -> ClusterConfig:
    """Build a ClusterConfig from parsed data, or raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings at the top, got {type(data).__name__}")
    config, problems = _structure(data, ClusterConfig)
    if isinstance(data.get("plugins"), dict):  # checked with the rest, not only once it is right
        problems += _plugin_problems(data["plugins"], config)
    if config is None:
        raise _fail(source, problems)
    config = attrs.evolve(config, source=source)
    config, notes = _map_seed(config, problems)
    problems += _check(config)
    if problems:
        raise _fail(source, problems)
    return attrs.evolve(config, notes=tuple(notes))


def _check(config: ClusterConfig) -> list[str]:
    """Rules across fields, on the config with the seed's keys already mapped."""
    problems = []
    if not config.nodes:
        problems.append("nodes: at least one node is required")
    seen: set[str] = set()
    for i, node in enumerate(config.nodes):
        if not NODE_NAME.match(node.name):
            problems.append(f"nodes[{i}].name: {_show(node.name)} may hold only letters, digits, '.', '_' and '-'")
        if node.name in seen:
            problems.append(f"nodes[{i}].name: duplicate node name {node.name!r}")
        seen.add(node.name)
        problems += _check_start_params(config, node, f"nodes[{i}].ray_start_params")
    heads = [n.name for n in config.nodes if n.is_head]
    if len(heads) > 1:
        problems.append(f"nodes: more than one head ({', '.join(heads)})")
    log_path = config.logging.file_path
    if log_path is not None:
        folder = Path(log_path).parent
        if not log_path or Path(log_path).is_dir():
            problems.append(f"logging.file_path: {log_path!r} is not a file name")
        elif not folder.is_dir():
            problems.append(f"logging.file_path: directory {str(folder)!r} does not exist")
        elif not os.access(folder, os.W_OK | os.X_OK) and not os.access(log_path, os.W_OK):
            problems.append(f"logging.file_path: cannot write in {str(folder)!r}")
    return problems


def _plugin_problems(plugins: dict[Any, Any], config: ClusterConfig | None) -> list[str]:
    """The plugin sections whose shape grid knows (PLUGIN_SECTIONS), as their plugin reads them."""
    problems = []
    names = {n.name for n in config.nodes} if config else None
    for name, model in PLUGIN_SECTIONS.items():
        if isinstance(plugins.get(name), dict):  # a non-table is reported with `plugins` itself
            root = f"plugins[{name!r}]"
            section, errors = _structure(plugins[name], model, root)
            problems += errors
            table = getattr(section, "capacity_gb", None)
            if isinstance(table, dict) and names is not None:
                problems += [f"{root}.capacity_gb[{node!r}]: no node named {node!r}"
                             for node in table if node not in names]
    return problems


def start_flag(key: str) -> str:
    """A ray_start_params key as the `ray start` flag it sets: `object_store_memory` is `object-store-memory`."""
    return key.replace("_", "-").lstrip("-")


def _check_start_params(config: ClusterConfig, node: NodeConfig, path: str) -> list[str]:
    problems = []
    for key, value in node.ray_start_params.items():
        flag, where = start_flag(key), f"{path}[{key!r}]"
        if flag in EXPOSING_FLAGS and not config.backend.allow_public_bind:
            problems.append(f"{where}: may bind Ray beyond this node's address; set "
                            "backend.allow_public_bind = true to allow it")
        elif flag == "resources":
            problems += [f"{where}{sub}" for sub in _resource_problems(value)]
        elif isinstance(value, dict):
            problems.append(f"{where}: expected a string, number or true/false, got {_show(value)}")
    return problems


def _resource_problems(value: Any) -> list[str]:
    """Custom resources: a table or a JSON object of name -> non-negative number."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            return [f": not a JSON object: {exc}"]
    if not isinstance(value, dict):
        return [f": expected a table or JSON object of name -> number, got {_show(value)}"]
    problems = []
    for name, amount in value.items():
        if not name or not _is_number(amount) or not _finite(amount) or amount < 0:
            problems.append(f"[{name!r}]: expected a resource name with a non-negative number, got {_show(amount)}")
    return problems


# --------------------------------------------------------------------------- the seed's keys

# Seed keys grid accepts without effect, with why (one line each from `config validate`).
EXECUTION_NO_EFFECT = {
    "default_nodes": "grid run picks its node with --node, else the scheduler",
    "default_gpus_per_node": "grid run's --gpus says what a job needs",
}
SHARING_NO_EFFECT = {
    ("mode",): "grid always offloads from a held head and lends by boosts",
    ("policy",): "offload.policy names grid's policy",
    ("rebalance_interval_seconds",): "grid does not rebalance on a timer",
    ("check_interval",): "boosts are granted on request, not offered on a timer",
    ("thresholds", "excess_threshold"): "lending is decided by boost.lend",
    ("auto_offload", "head_only_mode"): "grid's offload always watches only the head",
}


def _seed_values(config: ClusterConfig) -> dict[tuple[str, ...], tuple[Any, str]]:
    """Every written key of the seed's resource_sharing blocks -> (value, its path); the block under
    `execution` wins key by key over the top-level one."""
    values: dict[tuple[str, ...], tuple[Any, str]] = {}

    def walk(obj: Any, key: tuple[str, ...], path: str) -> None:
        if attrs.has(type(obj)):
            for field in attrs.fields(type(obj)):
                value = getattr(obj, field.name)
                if value is not None:
                    walk(value, (*key, field.name), f"{path}.{field.name}")
        elif isinstance(obj, dict):
            for name, value in obj.items():
                values[(*key, name)] = (value, f"{path}[{name!r}]")
        else:
            values[key] = (obj, path)

    for block, path in ((config.resource_sharing, "resource_sharing"),
                        (config.execution.resource_sharing, "execution.resource_sharing")):
        if block is not None:
            walk(block, (), path)
    return values


def _map_seed(config: ClusterConfig, problems: list[str]) -> tuple[ClusterConfig, list[str]]:
    """The seed's spellings as grid's settings (docs/config.md, "The seed's keys"); returns the
    config without the seed-only blocks, and the notes for keys that have no effect."""
    seed = _seed_values(config)
    notes = [f"note: execution.{key} has no effect in grid: {why}"
             for key, why in EXECUTION_NO_EFFECT.items() if getattr(config.execution, key) is not None]
    notes += [f"note: {path} has no effect in grid: {why}"
              for key, why in SHARING_NO_EFFECT.items() if (path := seed.get(key, (None, ""))[1])]

    def value(*key: str) -> Any:
        return seed.get(key, (None, ""))[0]

    # Offload: marks, interval, cooldown, on/off. auto_offload is the more specific block, so it wins.
    offload = config.offload
    marks = {"high": attrs.asdict(offload.high), "low": attrs.asdict(offload.low)}
    origin = {(level, m): f"offload.{level}.{m}" for level in marks for m in METRICS}
    for m in METRICS:
        for level, key in (("high", ("thresholds", f"{m}_pressure_high")), ("low", ("thresholds", f"{m}_pressure_low")),
                           ("high", ("auto_offload", f"{m}_threshold"))):
            if key in seed:
                marks[level][m], origin[(level, m)] = _percent(seed[key][0]), seed[key][1]
        if origin[("high", m)] != f"offload.high.{m}" and origin[("low", m)] == f"offload.low.{m}":
            # Only the high mark was given: keep the default band below it, as `offload auto` does.
            marks["low"][m] = min(marks["low"][m], marks["high"][m] * 0.75)
        if marks["low"][m] > marks["high"][m]:
            problems.append(f"{origin[('low', m)]}: {marks['low'][m]:g}% must not exceed "
                            f"{origin[('high', m)]} ({marks['high'][m]:g}%)")
    interval = value("auto_offload", "check_interval_seconds") or value("monitoring_interval_seconds")
    enabled, cooldown = value("auto_offload", "enabled"), value("auto_offload", "cooldown_seconds")
    offload = attrs.evolve(
        offload, high=Marks(**marks["high"]), low=Marks(**marks["low"]),
        interval_seconds=interval or offload.interval_seconds,
        enabled=offload.enabled if enabled is None else enabled,
        cooldown_seconds=offload.cooldown_seconds if cooldown is None else cooldown)

    # Boosts: on/off, default duration, per-source count, and when a node may lend.
    boost = config.boost
    minutes, expiry = value("allocation_timeout_minutes"), value("offer_expiry")
    lend_keys = {"cpu_percent_max": "cpu_percent_max", "memory_percent_max": "memory_percent_max",
                 "gpu_utilization_max": "gpu_percent_max", "cpu_min_cores": "cpu_min_free",
                 "memory_min_gb": "memory_min_free_gb", "gpu_memory_min_mb": "gpu_memory_min_free_mb"}
    lend = {grid: value("thresholds", key) for key, grid in lend_keys.items() if ("thresholds", key) in seed}
    lend = {k: _percent(v) if k.endswith("_percent_max") else v for k, v in lend.items()}
    boost = attrs.evolve(
        boost, enabled=boost.enabled if value("enabled") is None else value("enabled"),
        default_duration_seconds=minutes * 60 if minutes else expiry or boost.default_duration_seconds,
        max_per_source=value("max_offers_per_node") or boost.max_per_source,
        lend=attrs.evolve(boost.lend, **lend))

    # Source priorities: the node's own resource_sharing.priority, else the cluster's table.
    names = {n.name for n in config.nodes}
    problems += [f"{path}: no node named {key[-1]!r}" for key, (_, path) in seed.items()
                 if key[:2] == ("priorities", "worker_nodes") and key[-1] not in names]
    nodes = []
    for node in config.nodes:
        keys: list[tuple[str, ...]] = [("priorities", "master_node")] if node is config.head else []
        keys.append(("priorities", "worker_nodes", node.name))
        own = node.resource_sharing.priority if node.resource_sharing else None
        priority = own if own is not None else next((seed[k][0] for k in keys if k in seed), None)
        nodes.append(node if priority is None else attrs.evolve(node, priority=priority))

    runtime = config.execution.runtime_env.env_vars
    execution = attrs.evolve(config.execution, environment={**runtime, **config.execution.environment},
                             runtime_env=RuntimeEnv(), resource_sharing=None)
    mapped = attrs.evolve(config, nodes=nodes, offload=offload, boost=boost, execution=execution,
                          resource_sharing=None)
    return mapped, notes


def unstructure(config: ClusterConfig) -> dict[str, Any]:
    """The config as plain data, without unset values (TOML has no null)."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            pruned = {k: prune(v) for k, v in value.items() if v is not None}
            return {k: v for k, v in pruned.items() if v != {}}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    # attrs' asdict, not cattrs: the same data (tests/test_config.py checks), without generating
    # code for twenty classes, which cost every request to the grid service 6 to 13 ms.
    import attr

    internal = (attrs.fields(ClusterConfig).source, attrs.fields(ClusterConfig).notes)
    data = attr.asdict(config, retain_collection_types=False, filter=lambda a, _v: all(a is not f for f in internal))
    return prune(data)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- files and lookup


def embedded_default() -> ClusterConfig:
    """A one-node cluster of this machine, through the `local` transport."""
    node = NodeConfig(name="local", host="localhost", role="head", transport="local")
    return ClusterConfig(name="local", nodes=[node])


def parse_file(path: Path) -> Any:
    """Read TOML, or YAML (the seed's format) by extension."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as exc:  # ValueError: a date YAML cannot build
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    import tomllib  # here: a cached config is never parsed

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_file(path: Path | str) -> ClusterConfig:
    """The file's config, from the cache of parsed configs when its bytes are those seen before."""
    path = Path(path)
    try:
        key = _cache_key(path, path.read_bytes())
    except OSError:
        return structure(parse_file(path), str(path))  # which says what is wrong with the file
    cached = _cached(path, key)
    if cached is not None:
        return cached
    config = structure(parse_file(path), str(path))
    _keep(path, key, config)
    return config


# Parsed configs are kept in grid's state directory (0700), one file per config path: checking a
# config costs a command 20 to 30 ms (cattrs generates code for twenty classes), reading it back
# well under one. An entry counts only for the same bytes, path, Python and this module's own
# file (a new grid brings a new one); a config with problems is never kept. The entry holds its
# whole key, so the file name needs no strong hash (hashlib costs a command 2 ms to import).


def _cache_file(path: Path) -> Path:
    import zlib

    from grid_core.state import state_base

    name = f"{zlib.crc32(os.path.abspath(path).encode()):08x}"
    return Path(state_base()) / "config-cache" / f"{name}.pickle"


def _cache_key(path: Path, raw: bytes) -> tuple[bytes, str]:
    import sys

    here = os.stat(__file__)  # this module's own file: a new grid (not its version: that costs 12 ms)
    return raw, f"{os.path.abspath(path)}\0{path}\0{sys.version}\0{here.st_ino}\0{here.st_mtime_ns}\0{here.st_size}"


def _cached(path: Path, key: tuple[bytes, str]) -> ClusterConfig | None:
    import pickle

    try:
        with open(_cache_file(path), "rb") as f:
            kept_key, config = pickle.load(f)
    except Exception:  # missing, unreadable, or written by another version: parse the file
        return None
    return config if kept_key == key and isinstance(config, ClusterConfig) else None


def _keep(path: Path, key: tuple[bytes, str], config: ClusterConfig) -> None:
    import pickle
    import tempfile

    from grid_core.errors import GridError
    from grid_core.state import state_dir

    target = _cache_file(path)
    with contextlib.suppress(OSError, GridError, pickle.PicklingError):  # no cache is only slower
        state_dir()  # grid's own directory, 0700, made first
        target.parent.mkdir(exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump((key, config), f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def find_config_path(explicit: str | None) -> Path | None:
    """The lookup order: -c/--config, then $GRID_CONFIG, then ./grid.toml, else None."""
    if explicit:
        return Path(explicit)
    if os.environ.get("GRID_CONFIG"):
        return Path(os.environ["GRID_CONFIG"])
    local = Path("grid.toml")
    return local if local.is_file() else None


def load(explicit: str | None = None) -> ClusterConfig:
    path = find_config_path(explicit)
    return embedded_default() if path is None else load_file(path)
