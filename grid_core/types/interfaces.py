"""The interfaces plugins' objects implement below the cluster (transports, metrics sources,
schedulers), the errors they raise and the plain results they and backends return. The backend's
own interface, which takes the whole cluster, is one level up (backend.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.config import NodeConfig
    from grid_core.types.readings import NodeMetrics, NodeView, WorkRequest


__all__ = (
    "AuthError",
    "Check",
    "CommandResult",
    "HostKeyError",
    "MetricsSource",
    "NodeOutcome",
    "Progress",
    "Scheduler",
    "ShellEnv",
    "Transport",
    "TransportError",
)


@record
class CommandResult:
    """What a command run through a transport returned."""

    exit_status: int
    stdout: str = ""
    stderr: str = ""


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
    """Chooses a node for a piece of work, or None when nothing fits. A scheduler may also have
    `order(jobs) -> list[JobRecord]`, the waiting jobs in the order they should start
    (hookspecs.grid_schedulers); without it they start by priority, then in submission order."""

    def choose(self, request: WorkRequest, nodes: Sequence[NodeView]) -> NodeView | None: ...


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
