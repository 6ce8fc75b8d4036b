"""The cluster config: attrs models, loading from TOML or the seed's YAML, and the lookup order.

One model reads both formats: the seed's YAML differs only in a few spellings (role `master`,
`execution.runtime_env`, `resource_sharing` blocks), which the model accepts and maps onto
grid's own settings after loading. Every error names the file and the path of each bad value.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.v import transform_error

from grid_core.errors import ConfigError

EMBEDDED_DEFAULT = "<embedded default>"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
METRICS = ("cpu", "memory", "gpu")


@attrs.frozen(kw_only=True)
class NodeSharing:
    """The seed's per-node `resource_sharing`: how much of this node others may borrow."""

    can_share: bool = True
    max_share_cpu: float | None = None
    max_share_memory_gb: float | None = None
    max_share_gpu: float | None = None
    priority: str = "normal"
    initialization_commands: list[str] = attrs.Factory(list)


@attrs.frozen(kw_only=True)
class NodeConfig:
    """One machine of the cluster."""

    name: str
    host: str = "localhost"
    user: str | None = None
    port: int | None = None
    role: Literal["head", "worker", "master"] = "worker"
    transport: str | None = None  # None: `local` for this machine, else `ssh`
    cpu_count: int | None = None
    gpu_count: int | None = None
    memory_gb: float | None = None
    tags: list[str] = attrs.Factory(list)
    ssh_key_path: str | None = None
    known_hosts: str | None = None
    host_key_policy: Literal["strict", "accept-new"] | None = None
    connect_timeout: float | None = None
    command_timeout: float | None = None
    python: str | None = None
    ray_start_params: dict[str, Any] = attrs.Factory(dict)
    resource_sharing: NodeSharing | None = None

    @property
    def transport_name(self) -> str:
        return self.transport or ("local" if self.host in LOCAL_HOSTS else "ssh")

    @property
    def is_head(self) -> bool:
        return self.role in ("head", "master")


@attrs.frozen(kw_only=True)
class SshSettings:
    """Cluster-wide SSH defaults; a node's own settings override them."""

    host_key_policy: Literal["strict", "accept-new"] = "strict"
    known_hosts: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float | None = None


@attrs.frozen(kw_only=True)
class BackendSettings:
    """The compute engine on the nodes."""

    name: str = "ray"
    port: int = 6379
    temp_dir: str | None = None
    python: str | None = None  # the interpreter on the nodes; default: the head's
    venv: str | None = None
    env: dict[str, str] = attrs.Factory(dict)
    dashboard: bool = False
    dashboard_port: int = 8265
    namespace: str = "grid"


@attrs.frozen(kw_only=True)
class Marks:
    """Percent thresholds per metric."""

    cpu: float = 80.0
    memory: float = 70.0
    gpu: float = 90.0


@attrs.frozen(kw_only=True)
class OffloadSettings:
    """When the head sheds work: high-water marks hold it, low-water marks (after cooldown) free it."""

    enabled: bool = False
    policy: str = "threshold"
    high: Marks = Marks()
    low: Marks = Marks(cpu=60.0, memory=55.0, gpu=70.0)
    interval_seconds: float = 5.0
    cooldown_seconds: float = 30.0
    window: int = 3


@attrs.frozen(kw_only=True)
class SchedulerSettings:
    name: str = "least-loaded"


@attrs.frozen(kw_only=True)
class SeedSharing:
    """The seed's `execution.resource_sharing` block; its thresholds map onto `offload`."""

    enabled: bool = True
    mode: str | None = None
    policy: str | None = None
    monitoring_interval: float | None = None
    rebalance_interval: float | None = None
    thresholds: dict[str, float] = attrs.Factory(dict)
    priorities: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class RuntimeEnv:
    env_vars: dict[str, str] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class ExecutionSettings:
    working_directory: str | None = None
    environment: dict[str, str] = attrs.Factory(dict)
    timeout_seconds: float | None = None
    retry_attempts: int = 0
    default_nodes: int | None = None
    default_gpus_per_node: int | None = None
    parallel: int = 32
    runtime_env: RuntimeEnv = RuntimeEnv()
    resource_sharing: SeedSharing | None = None


@attrs.frozen(kw_only=True)
class LoggingSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"] = "WARNING"
    format: Literal["text", "json"] = "text"
    file_path: str | None = None


@attrs.frozen(kw_only=True)
class ClusterConfig:
    """A whole cluster: its nodes and how grid runs them."""

    name: str = "grid"
    nodes: list[NodeConfig]
    ssh: SshSettings = SshSettings()
    backend: BackendSettings = BackendSettings()
    offload: OffloadSettings = OffloadSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    execution: ExecutionSettings = ExecutionSettings()
    logging: LoggingSettings = LoggingSettings()
    plugins: dict[str, dict[str, Any]] = attrs.Factory(dict)
    source: str = attrs.field(default=EMBEDDED_DEFAULT, metadata={"internal": True})

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


class _Mismatch(Exception):
    pass


def _type_label(t: Any) -> str:
    return {int: "int", float: "number", str: "string", bool: "true or false"}.get(t, str(t))


def _strict(t: type) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        ok = isinstance(value, t) and not (isinstance(value, bool) and t is not bool)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise _Mismatch(f"expected {_type_label(t)}, got {value!r}")
        return value

    return hook


def _literal_hook(t: Any) -> Any:
    choices = get_args(t)

    def hook(value: Any, _type: Any) -> Any:
        if value not in choices:
            raise _Mismatch(f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return hook


def _any_hook(value: Any, _type: Any) -> Any:
    return value


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)
    for t in (int, float, str, bool):
        conv.register_structure_hook(t, _strict(t))
    conv.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_hook)
    conv.register_structure_hook(Any, _any_hook)
    return conv


converter = _make_converter()


def _describe(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, ForbiddenExtraKeysError):
        keys = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        return f"unknown key{'s' if len(exc.extra_fields) > 1 else ''} {keys}"
    if isinstance(exc, KeyError):
        return "required key is missing"
    if isinstance(exc, _Mismatch | ValueError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _error_lines(exc: Exception) -> list[str]:
    lines = []
    for item in transform_error(exc, path="", format_exception=_describe):
        message, _, path = item.rpartition(" @ ")
        path = path.lstrip(".")
        # A missing key is reported at its parent; cattrs puts the key in the message.
        lines.append(f"{path}: {message}" if path else message)
    return lines


def structure(data: Any, source: str) -> ClusterConfig:
    """Build a ClusterConfig from parsed data, or raise ConfigError listing every problem."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings at the top, got {type(data).__name__}")
    data = {k: v for k, v in data.items() if k != "source"}
    try:
        config = converter.structure(data, ClusterConfig)
    except (cattrs.BaseValidationError, _Mismatch, ValueError, TypeError) as exc:
        lines = _error_lines(exc) if isinstance(exc, cattrs.BaseValidationError) else [str(exc)]
        raise ConfigError(f"{source}: " + "\n  ".join(["invalid config:", *lines])) from None
    return _checked(attrs.evolve(config, source=source))


def _checked(config: ClusterConfig) -> ClusterConfig:
    """Rules across fields, and the seed's spellings mapped onto grid's settings."""
    problems = []
    if not config.nodes:
        problems.append("nodes: at least one node is required")
    seen: set[str] = set()
    for i, node in enumerate(config.nodes):
        if not NODE_NAME.match(node.name):
            problems.append(f"nodes[{i}].name: {node.name!r} may hold only letters, digits, '.', '_' and '-'")
        if node.name in seen:
            problems.append(f"nodes[{i}].name: duplicate node name {node.name!r}")
        seen.add(node.name)
        for field in ("cpu_count", "gpu_count", "memory_gb", "port"):
            value = getattr(node, field)
            if value is not None and value < 0:
                problems.append(f"nodes[{i}].{field}: must not be negative, got {value!r}")
        if node.port is not None and not 0 < node.port < 65536:
            problems.append(f"nodes[{i}].port: expected 1-65535, got {node.port}")
    heads = [n.name for n in config.nodes if n.is_head]
    if len(heads) > 1:
        problems.append(f"nodes: more than one head ({', '.join(heads)})")
    offload = config.offload
    sharing = config.execution.resource_sharing
    if sharing is not None:
        offload, seed_problems = _apply_seed_thresholds(offload, sharing)
        problems.extend(seed_problems)
    for level in ("high", "low"):
        for metric in METRICS:
            value = getattr(getattr(offload, level), metric)
            if not 0 <= value <= 100:
                problems.append(f"offload.{level}.{metric}: expected a percentage 0-100, got {value!r}")
    for metric in METRICS:
        if getattr(offload.low, metric) > getattr(offload.high, metric):
            problems.append(f"offload.low.{metric}: must not exceed offload.high.{metric}")
    if offload.interval_seconds <= 0:
        problems.append("offload.interval_seconds: must be positive")
    if offload.window < 1:
        problems.append("offload.window: must be at least 1")
    if config.execution.parallel < 1:
        problems.append("execution.parallel: must be at least 1")
    if problems:
        raise ConfigError(f"{config.source}: " + "\n  ".join(["invalid config:", *problems]))
    env = {**config.execution.runtime_env.env_vars, **config.execution.environment}
    execution = attrs.evolve(config.execution, environment=env)
    return attrs.evolve(config, offload=offload, execution=execution)


def _apply_seed_thresholds(offload: OffloadSettings, sharing: SeedSharing) -> tuple[OffloadSettings, list[str]]:
    """Map `cpu_pressure_high: 0.8` (fraction or percent) onto offload.high.cpu = 80."""
    high, low, problems = attrs.asdict(offload.high), attrs.asdict(offload.low), []
    for key, value in sharing.thresholds.items():
        metric = key.removesuffix("_pressure_high").removesuffix("_pressure_low")
        level = "high" if key.endswith("_pressure_high") else "low" if key.endswith("_pressure_low") else None
        if level is None or metric not in METRICS:
            problems.append(f"execution.resource_sharing.thresholds: unknown key {key!r}")
            continue
        percent = value * 100 if value <= 1 else value
        (high if level == "high" else low)[metric] = float(percent)
    interval = sharing.monitoring_interval or offload.interval_seconds
    return attrs.evolve(offload, high=Marks(**high), low=Marks(**low), interval_seconds=interval), problems


def unstructure(config: ClusterConfig) -> dict[str, Any]:
    """The config as plain data, without unset values (TOML has no null)."""

    def prune(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: prune(v) for k, v in value.items() if v is not None and v != {}}
        if isinstance(value, list):
            return [prune(v) for v in value]
        return value

    data = converter.unstructure(config)
    data.pop("source", None)
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
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_file(path: Path | str) -> ClusterConfig:
    path = Path(path)
    return structure(parse_file(path), str(path))


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
