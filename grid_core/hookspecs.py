"""Every hook a grid plugin can implement. Read this file first when writing a plugin.

A plugin is a module (or object) registered under a name in the entry-point group ``grid``::

    # pyproject.toml of your distribution
    [project.entry-points.grid]
    my-plugin = "my_package.plugin"

Each hook takes no arguments and returns (usually yields) registration objects from
``grid_core.types``. Every implementation is called; the order between plugins is not defined
and does not matter, because grid collects the results into one registry per kind keyed by
``name``. Two plugins that register the same name in one kind is an error naming both. An
implementation of a hook not listed here is an error too (a typo must not pass silently).

The API these hooks make is numbered (``grid_core.PLUGIN_API``); declare the grid-core releases
your plugin works with in its own requirements (``dependencies = ["grid-core>=0.1,<1"]``): one
whose requirement excludes the installed core is listed as incompatible and never imported.

Registration is cheap by contract: import heavy libraries inside factories, never at module
level, so ``grid --help`` and ``grid plugins list`` stay fast.
"""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from grid_core.types import (
    GridBackend,
    GridCommand,
    GridMetricsSource,
    GridOffloadPolicy,
    GridScheduler,
    GridServiceOp,
    GridTransport,
)

PROJECT = "grid"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def grid_transports() -> Iterable[GridTransport]:
    """Ways to run commands and copy files on a node.

    A node selects its transport by name (``transport = "ssh"``; default ``local`` for this
    machine, ``ssh`` otherwise). The factory is called once per node per process, with the
    node's and the cluster's config, and returns an object implementing
    ``grid_core.types.Transport``.

    Example::

        @hookimpl
        def grid_transports():
            yield GridTransport(name="docker", summary="docker exec into a container",
                                factory=lambda node, cluster: DockerTransport(node.host))
    """


@hookspec
def grid_backends() -> Iterable[GridBackend]:
    """Compute engines: their lifecycle on the nodes and how work is submitted to them.

    ``backend.name`` in the config selects one (default ``ray``). The factory receives the
    ``ClusterConfig`` and returns an object implementing ``grid_core.types.Backend``: ``check``,
    ``install``, ``start``, ``stop`` and ``status`` of the engine on the nodes, and ``submit``,
    ``jobs``, ``logs`` and ``stop_job`` for work. ``grid cluster start|stop|install|status``,
    ``grid run`` and ``grid jobs`` own the commands, tables and exit statuses and call these
    methods; each method that touches nodes returns one ``NodeOutcome`` per node (with a reason
    when it failed) and reports progress through a ``progress(node, message)`` callback.
    ``submit`` hands the ``JobSpec`` to the cluster's queue (docs/jobs.md), which places it
    with the configured scheduler when capacity frees; ``JobSpec.node`` pins it to one node.

    Example::

        @hookimpl
        def grid_backends():
            yield GridBackend(name="ray", summary="Ray over SSH", factory=RayBackend)
    """


@hookspec
def grid_schedulers() -> Iterable[GridScheduler]:
    """Schedulers: the order of the waiting jobs, and the node each one runs on.

    ``[scheduler] name`` selects one (default ``fifo``; ``least-loaded`` is the same one). It
    runs in the grid service on the head, which asks it at every event (a submission, a job's
    end, a node's join, a hold's release). The factory returns an object with:

    - ``choose(request, nodes) -> NodeView | None``: a node for one job, among ``nodes`` (each
      could ever hold it; ``available`` is what is free for it now), or None to let it wait. It
      must be fast (far below a millisecond): it runs once per waiting job per event.
    - optionally ``order(jobs) -> list[JobRecord]``: the waiting jobs in the order they should
      start. Without it: priority, then submission. The queue keeps its guarantees whatever the
      order: the first job that cannot start reserves what it lacks, so no stream of smaller jobs
      starves it, and a held node gets no new job.

    Example::

        class GpuBoxesLast:
            def order(self, jobs):
                return sorted(jobs, key=lambda j: (-j.priority, j.seq))

            def choose(self, request, nodes):
                fits = [n for n in nodes if n.available.get("CPU", 0) >= request.cpus]
                plain = [n for n in fits if request.gpus or "gpu" not in n.tags]
                return (plain or fits or [None])[0]

        @hookimpl
        def grid_schedulers():
            yield GridScheduler(name="gpu-boxes-last", summary="CPU jobs off the GPU boxes",
                                factory=GpuBoxesLast)
    """


@hookspec
def grid_offload_policies() -> Iterable[GridOffloadPolicy]:
    """Policies that decide from metrics whether the head should shed work, and where to.

    ``offload.policy`` or ``grid offload auto --policy NAME`` selects one. The factory receives
    the policy's settings and returns an object whose ``decide(...)`` returns a decision with a
    reason.

    Example::

        @hookimpl
        def grid_offload_policies():
            yield GridOffloadPolicy(name="always", summary="hold the head all the time",
                                    factory=AlwaysHold)
    """


@hookspec
def grid_metrics_sources() -> Iterable[GridMetricsSource]:
    """Sources of live node readings: CPU, memory, swap, load, GPUs.

    Each source's ``sample(node, transport)`` returns ``NodeMetrics``, or None where the source
    does not apply to that node; grid uses the first source that answers for each node.
    The engine's logical resources are not readings: the backend reports them (``Backend.status``).

    Example::

        @hookimpl
        def grid_metrics_sources():
            yield GridMetricsSource(name="fake", summary="fixed readings", factory=FakeSource)
    """


@hookspec
def grid_commands() -> Iterable[GridCommand]:
    """Extra top-level CLI commands or groups, imported only when they run.

    ``import_path`` is ``"package.module:attribute"`` naming a click command; ``summary`` is what
    ``grid --help`` shows without importing it.

    Example::

        @hookimpl
        def grid_commands():
            yield GridCommand(name="memory", summary="named data in the cluster's memory",
                              import_path="grid_plugin_memory_pool.cli:memory")
    """


@hookspec
def grid_service_ops() -> Iterable[GridServiceOp]:
    """Requests the grid service on the head answers for a plugin, so that its commands reach the
    cluster from any machine without an engine driver in the CLI (`GridServiceOp` documents the
    handler). The CLI sends one with the backend's channel, e.g. the ray backend's
    ``grid_plugin_ray_backend.api.request(config, cluster, "memory", {...})``.

    Example::

        @hookimpl
        def grid_service_ops():
            yield GridServiceOp(name="memory", summary="the memory pool's put, get, ls, rm, stats",
                                import_path="grid_plugin_memory_pool.service:handle")
    """
