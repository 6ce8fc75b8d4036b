"""The types that plugins yield from their hooks and the interfaces their objects implement.

Registration objects are frozen attrs classes: a validated lower-case `name`, a one-line
`summary`, and a factory that builds the working object only when it is used, so that listing
plugins never imports a plugin's heavy dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from grid_core.config import ClusterConfig, NodeConfig

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_.-]*$")


def _valid_name(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        raise ValueError(f"registration name {value!r} must be lower-case: [a-z][a-z0-9_.-]*")


def _one_line(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or "\n" in value:
        raise ValueError("summary must be a single line of text")


# --------------------------------------------------------------------------- results and readings


@attrs.frozen
class CommandResult:
    """What a command run through a transport returned."""

    exit_status: int
    stdout: str = ""
    stderr: str = ""


@attrs.frozen
class GpuReading:
    """One GPU's utilisation and memory, in percent and bytes."""

    index: int
    name: str
    util_percent: float
    memory_used_bytes: int
    memory_total_bytes: int

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_used_bytes / self.memory_total_bytes if self.memory_total_bytes else 0.0


@attrs.frozen
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

    @property
    def gpu_percent(self) -> float | None:
        """The busiest GPU's utilisation, or None without GPUs."""
        return max((g.util_percent for g in self.gpus), default=None)


@attrs.frozen
class NodeView:
    """What a scheduler or offload policy sees of one node."""

    name: str
    role: str
    metrics: NodeMetrics | None = None
    available: Mapping[str, float] = attrs.field(factory=dict)
    held: bool = False
    tags: tuple[str, ...] = ()


@attrs.frozen
class WorkRequest:
    """A piece of work to place: the resources it asks for and where it came from."""

    cpus: float = 0.0
    gpus: float = 0.0
    memory_bytes: int = 0
    origin: str | None = None


# --------------------------------------------------------------------------- working interfaces


class TransportError(Exception):
    """A node could not be reached or the transport failed; the message says why."""


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
    ) -> CommandResult:
        """Run argv; `on_output(stream, text)` receives output as it arrives when given."""
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


# --------------------------------------------------------------------------- registrations


@attrs.frozen
class GridTransport:
    """A way to run commands and copy files on a node. `factory(node, cluster)` -> Transport."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[NodeConfig, ClusterConfig], Transport]


@attrs.frozen
class GridBackend:
    """A compute engine's lifecycle on the nodes. `factory(cluster)` -> the backend object."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[ClusterConfig], Any]


@attrs.frozen
class GridScheduler:
    """Chooses a node for work. `factory()` -> Scheduler."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], Scheduler]


@attrs.frozen
class GridOffloadPolicy:
    """Decides from metrics whether the head should shed work. `factory(settings)` -> policy."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[Mapping[str, Any]], Any]


@attrs.frozen
class GridMetricsSource:
    """Live readings for nodes. `factory()` -> MetricsSource."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    factory: Callable[[], MetricsSource]


@attrs.frozen
class GridCommand:
    """A CLI command or group, imported from `import_path` ("pkg.module:attr") only when run."""

    name: str = attrs.field(validator=_valid_name)
    summary: str = attrs.field(validator=_one_line)
    import_path: str = attrs.field(validator=attrs.validators.matches_re(r"^[\w.]+:[\w.]+$"))
