"""A loaded cluster: its nodes' transports (one per node per process), selection and fan-out."""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from grid_core.config import ClusterConfig, NodeConfig
from grid_core.errors import GridError
from grid_core.record import record
from grid_core.types.interfaces import Transport, TransportError

if TYPE_CHECKING:
    from grid_core.plugins import PluginHost
    from grid_core.types.readings import NodeMetrics

T = TypeVar("T")
DEFAULT_VENV = "~/.grid/venv"  # each node's environment, as `grid cluster install` makes it
log = logging.getLogger(__name__)
UNREACHABLE = 255  # the exit status OpenSSH and pdsh give for a node they could not reach


def on_node(node: NodeConfig, path: str) -> str:
    """A path as the node's transport takes it: `~` expanded here for local nodes; for remote
    nodes made relative, because SSH starts in the home directory."""
    if node.transport_name == "local":
        return os.path.expanduser(path)
    if path == "~":
        return "."
    return path[2:] if path.startswith("~/") else path


def python_candidates(config: ClusterConfig, node: NodeConfig) -> list[str]:
    """Interpreters to try on the node, in order: the configured one, else (local) this one,
    else (remote) the venv `grid cluster install` makes, then python3."""
    venv = posixpath.join(config.backend.venv, "bin", "python") if config.backend.venv else None
    explicit = node.python or venv or config.backend.python
    if explicit:
        return [on_node(node, explicit)]
    if node.transport_name == "local":
        return [sys.executable]
    return [on_node(node, posixpath.join(DEFAULT_VENV, "bin", "python")), "python3"]


@record
class Outcome:
    """What one node gave back from a fan-out: a value, or the reason it failed."""

    node: NodeConfig
    value: Any = None
    error: str | None = None
    seconds: float = 0.0


@record
class ExecResult:
    node: str
    exit_status: int
    stdout: str
    stderr: str
    error: str | None
    seconds: float


class Cluster:
    """The config plus live connections. Use as a context manager so connections close."""

    def __init__(self, config: ClusterConfig, plugins: PluginHost) -> None:
        self.config = config
        self.plugins = plugins
        self._transports: dict[tuple[str, str | None], Transport] = {}
        self._sources: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            with contextlib.suppress(Exception):  # best effort: a dead connection is already closed
                transport.close()

    def disconnect(self) -> None:
        """Close, and also end what a transport keeps for later commands (the ssh keeper)."""
        with self._lock:
            transports = list(self._transports.values())
        for transport in transports:
            end = getattr(transport, "disconnect", None)
            if end is not None:
                with contextlib.suppress(Exception):
                    end()
        self.close()

    def transport(self, node: NodeConfig) -> Transport:
        """This node's transport, created on first use and reused for the rest of the process."""
        key = (node.name, node.user)  # the lab's people reach the head as themselves (access.channel_head)
        with self._lock:
            if key not in self._transports:
                registration = self.plugins.get("grid_transports", node.transport_name)
                log.debug("node %s: %s transport to %s", node.name, registration.name, node.host)
                self._transports[key] = registration.factory(node, self.config)
            return self._transports[key]

    def warm(self, node: NodeConfig) -> None:
        """Let the node's transport start connecting in the background, where it can (the ssh
        keeper), while the caller goes on with its own start-up."""
        if node.transport_name == "local":  # nothing to start, and making it would load its plugin now
            return
        start = getattr(self.transport(node), "warm", None)
        if start is not None:
            start()

    def reconnect(self, node: NodeConfig) -> None:
        """Close this node's transport and forget it, so the next use connects afresh (one whose
        link died can hang until TCP gives up, minutes later)."""
        with self._lock:
            gone = [self._transports.pop(key) for key in list(self._transports) if key[0] == node.name]
        for transport in gone:  # in the background: closing over a dead link may wait on it
            threading.Thread(target=_close_quietly, args=(transport,), daemon=True).start()

    def select(self, names: Sequence[str] = (), tags: Sequence[str] = ()) -> list[NodeConfig]:
        """Nodes by name or tag; all nodes when neither is given."""
        if not names and not tags:
            return list(self.config.nodes)
        chosen = [self.config.node(name) for name in names]
        for tag in tags:
            tagged = [n for n in self.config.nodes if tag in n.tags]
            if not tagged:
                raise GridError(f"no node has the tag {tag!r} in {self.config.source}")
            chosen.extend(tagged)
        return list({n.name: n for n in chosen}.values())

    def fan_out(
        self, nodes: Sequence[NodeConfig], work: Callable[[NodeConfig], T], parallel: int | None = None
    ) -> Iterator[Outcome]:
        """Run work(node) on every node at once, at most `parallel` in flight; yield as each ends."""
        parallel = parallel or self.config.execution.parallel

        def timed(node: NodeConfig) -> Outcome:
            start = time.monotonic()
            try:
                return Outcome(node, work(node), None, time.monotonic() - start)
            except (TransportError, GridError) as exc:
                return Outcome(node, None, str(exc), time.monotonic() - start)

        if len(nodes) == 1:
            yield timed(nodes[0])
            return
        from concurrent.futures import ThreadPoolExecutor, as_completed  # here: 1 ms a status command need not pay

        with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(nodes)))) as pool:
            for future in as_completed([pool.submit(timed, n) for n in nodes]):
                yield future.result()

    def exec(
        self,
        nodes: Sequence[NodeConfig],
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        parallel: int | None = None,
    ) -> Iterator[ExecResult]:
        """Run argv on each node; results arrive in the order nodes finish."""
        env = self.config.execution.environment or None

        def run(node: NodeConfig) -> Any:
            return self.transport(node).run(argv, timeout=timeout or self.config.execution.timeout_seconds, env=env)

        for out in self.fan_out(nodes, run, parallel):
            if out.error is not None:
                yield ExecResult(out.node.name, UNREACHABLE, "", "", out.error, out.seconds)
            else:
                r = out.value
                yield ExecResult(out.node.name, r.exit_status, r.stdout, r.stderr, None, out.seconds)

    def metrics_sources(self) -> dict[str, Any]:
        """The metrics sources, made once per cluster so that a source may keep state between samples."""
        if self._sources is None:
            entries = self.plugins.all("grid_metrics_sources")
            # A named source may be installed on some nodes only (a GPU vendor's, on the GPU
            # workers): where it is missing, the others answer (docs/plugins.md).
            first = [name for name in self.config.metrics.sources if name in entries]
            if len(first) < len(self.config.metrics.sources):
                log.debug("metrics sources not installed here: %s",
                          ", ".join(n for n in self.config.metrics.sources if n not in entries))
            order = [*first, *(name for name in entries if name not in first)]
            self._sources = {name: entries[name].registration.factory() for name in order}
        return self._sources

    def sample(self, nodes: Sequence[NodeConfig]) -> dict[str, Outcome]:
        """Live metrics per node; an unreachable node carries its reason."""
        from grid_core import metrics  # here: commands that read no metrics need not build its records

        sources = self.metrics_sources()

        def read(node: NodeConfig) -> NodeMetrics | None:
            return metrics.sample(node, self.transport(node), sources)

        return {out.node.name: out for out in self.fan_out(nodes, read)}


def _close_quietly(transport: Transport) -> None:
    with contextlib.suppress(Exception):  # best effort: a dead connection is already closed
        transport.close()
