"""The interface a compute engine implements (the `grid_backends` hook's objects).

It sits above grid_core.cluster, since every method takes the composed cluster; what the cluster
itself needs (transports and their errors) is in interfaces.py, below it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from grid_core.record import record

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig
    from grid_core.types.interfaces import Check, NodeOutcome, Progress, ShellEnv
    from grid_core.types.jobs import JobSpec, JobsText
    from grid_core.types.offload import Boost, ControllerStatus
    from grid_core.types.status import EngineNode

__all__ = ("Backend", "Shortcut", "ShortcutClient", "StatusAnswer", "StatusBasis", "StreamRoute")

Stamp = tuple[str, int, int, int]  # a file's path, st_mtime_ns, st_size and st_ino; -1s for a missing one


@record
class StreamRoute:
    """A stream to the service's socket, made with nothing of the transport loaded: connect to
    `socket` on this machine; where `hello` is given, send it and read one line, which must be the
    JSON `ready`; the connection then carries the stream. Void once a file of `checks` is not as
    stamped (an edited known_hosts, say). A `private` socket is used only while its directory is
    this user's alone (a keeper's: a socket another user could put there would pose as it)."""

    socket: str
    hello: str = ""
    ready: str = ""
    checks: tuple[Stamp, ...] = ()
    private: bool = False


@record
class Shortcut:
    """How the commands that only ask the service (a detached `grid run`, `grid jobs list`,
    `grid cluster status`, `grid offload auto --status`, `grid boost list`, `grid memory ls`)
    reach it with neither the config's classes nor a plugin loaded (grid_core/shortcut.py):
    `client`, a class named `module:Class`, is made with this shortcut and is a ShortcutClient. It
    sends its requests by `route`, each with `payload` (what the backend sends with every
    request). `checks` are the backend's own files (its record of the running cluster)."""

    client: str
    route: StreamRoute
    payload: Mapping[str, Any]
    checks: tuple[Stamp, ...] = ()


@record(kw_only=True)
class StatusBasis:
    """What `grid cluster status` by the shortcut takes from this machine, kept beside it: the
    config's name as shown, and this machine's plugin distributions (plugin_set.Here's versions
    and where each counts), which the service compares with those it started with."""

    source: str
    versions: Mapping[str, str]
    counts_on: Mapping[str, str | None]


@record(kw_only=True)
class StatusAnswer:
    """The service's `grid cluster status` for a caller by its shortcut: the ClusterStatus as JSON
    text, made from the caller's config and StatusBasis, where every node is alive with a fresh
    reading; else no text (the caller reads the others through their transports, the usual way)."""

    text: str | None = None


class ShortcutClient(Protocol):
    """Backend's methods of the same names, by a shortcut: no cluster, and Unusable
    (grid_core.shortcut) where the usual path must try instead."""

    def submit(self, spec: JobSpec) -> None:
        """Queue the job, detached (the job's notes, such as its place in line, go to stderr)."""
        ...

    def jobs_text(self, *, everything: bool = False, user: str | None = None, mine: bool = False) -> JobsText:
        ...

    def listing(self, *, shown: int, expand: bool = False, everything: bool = False, user: str | None = None,
                mine: bool = False) -> dict[str, Any]:
        ...

    def offload_status(self) -> ControllerStatus:
        ...

    def cluster_status(self, basis: StatusBasis) -> StatusAnswer:
        """`cluster status` from the service alone, for the config the shortcut was kept with."""
        ...

    def service_op(self, op: str, params: dict[str, Any]) -> Any:
        """A request that a plugin's op answers in the service (the `grid_service_ops` hook): its result."""
        ...


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
        """Queue a job (it starts when a node has room: docs/jobs.md); stream its output to
        `on_output(stream, text)` unless detached. Returns the job id and its exit status (None
        when detached). A job that waits says why on stderr."""
        ...

    # Optional: `shortcut(cluster) -> Shortcut | None`, asked after a command that could have taken
    # one took the usual path; it speeds the next (grid_core/shortcut.py).

    def jobs(self, cluster: Cluster, *, everything: bool = False, user: str | None = None,
             mine: bool = False) -> list[dict[str, Any]]:
        """The active jobs and the recent finished ones (all with `everything`), oldest first, each
        with JobRecord's fields (the CLI structures them into it); only `user`'s, or with `mine`
        only those of the user the cluster sees asking."""
        ...

    def jobs_text(self, cluster: Cluster, *, everything: bool = False, user: str | None = None,
                  mine: bool = False) -> JobsText:
        """The same records as `jobs`, as JSON text (`grid jobs list --json` prints it as it came)."""
        ...

    def listing(self, cluster: Cluster, *, shown: int, expand: bool = False, everything: bool = False,
                user: str | None = None, mine: bool = False) -> dict[str, Any]:
        """What `grid jobs list` shows of the same jobs (JobListing's fields): each job of its own,
        an array as one row unless `expand`, the waiting jobs after the first `shown` as a count."""
        ...

    def usage(self, cluster: Cluster) -> list[dict[str, Any]]:
        """Each user's recent use and share (UserUsage's fields)."""
        ...

    def logs(self, cluster: Cluster, job_id: str, *, follow: bool,
             on_output: Callable[[str, str], None], attempt: int | None = None) -> int | None:
        """A job's output so far (until it ends when following); its exit status once ended. The
        output is the attempt's that counts (the last one), or that of `attempt` (1 first)."""
        ...

    def stop_job(self, cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
        """Stop a job, waiting or running (an array's id: every member); the records after stopping."""
        ...

    def hold_job(self, cluster: Cluster, job_id: str, *, held: bool) -> list[dict[str, Any]]:
        """Hold a waiting job (or an array's waiting members) so it does not start, or release it."""
        ...

    def drain(self, cluster: Cluster) -> int:
        """Before `cluster stop`: running jobs stop, recorded as stopped by it; how many stay queued
        for the next start."""
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
              duration: float | None = None, source: str | None = None, gpu_types: Sequence[str] = (),
              gpu_memory_bytes: int = 0) -> Boost:
        """Lend `amount` of `resource` (memory in GB) to `target` from `source` (or the best node); for
        GPUs, only from a node with GPUs of one of `gpu_types` and at least `gpu_memory_bytes` each."""
        ...

    def release_boost(self, cluster: Cluster, boost_id: str) -> Boost:
        """End a boost and free its reservation; the boost's final record."""
        ...
