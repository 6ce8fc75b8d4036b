"""The interfaces plugins' objects implement (transports, metrics sources, schedulers, backends),
the errors they raise and the plain results they return."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig
    from grid_core.types.jobs import JobSpec
    from grid_core.types.offload import Boost, ControllerStatus
    from grid_core.types.readings import NodeMetrics, NodeView, WorkRequest
    from grid_core.types.status import EngineNode


__all__ = (
    "AuthError",
    "Backend",
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
    """Chooses a node for a piece of work, or None when nothing fits."""

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

    def restart_service(self, cluster: Cluster) -> None:
        """End the cluster's service and node agents and start them again, so that they run the
        plugins installed now; jobs, holds, boosts and settings carry on."""
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
