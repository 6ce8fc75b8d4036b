"""`grid offload ...`: the controller that keeps the head responsive, and moving work off it.

The controller itself runs in the cluster (the backend's); these commands ask it through the
backend's typed methods and print its records. `scan` and `move` look at this machine's
processes, so run them on the head.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

import click

from grid_core.cli import completion
from grid_core.cli.context import FiniteFloat, ask_backend, config_option, json_option, plugin_drift, print_json, state
from grid_core.cli.output import console, table
from grid_core.errors import GridError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.types import Backend, ControllerStatus, JobRecord, NodeState

T = TypeVar("T")


@contextmanager
def connect() -> Iterator[tuple[Backend, Cluster]]:
    """The configured backend and the cluster it runs, for one command."""
    from grid_core.backends import load_backend

    with state().cluster() as c:
        yield load_backend(c.config), c


def ask(call: Callable[[Backend, Cluster], T]) -> T:
    """One request to the backend, e.g. `ask(lambda b, c: b.offload_status(c))`."""
    with connect() as (b, c):
        return call(b, c)


@click.group()
def offload() -> None:
    """Keep the head responsive: automatic offload, holds, moving processes, a live view."""


@offload.command()
@click.option("--enable", "mode", flag_value="enable", help="Turn automatic offload on.")
@click.option("--disable", "mode", flag_value="disable", help="Turn it off (and free an automatic hold).")
@click.option("--status", "mode", flag_value="status", help="Show the settings and the hold state.")
@click.option("--threshold", "thresholds", multiple=True, metavar="[METRIC=]PERCENT",
              help="High-water mark: cpu=80, memory=65, gpu=90; a bare number is memory (repeatable).")
@click.option("--policy", default=None, metavar="NAME", help="The offload policy plugin to use.")
@json_option
@config_option
def auto(mode: str | None, thresholds: tuple[str, ...], policy: str | None, as_json: bool) -> None:
    """Automatic offload: one of --enable, --disable or --status. Settings persist in the cluster;
    values set here win over the config file until the file's own value changes."""
    from grid_core.offload import parse_thresholds

    if mode is None:
        raise click.UsageError("choose one of --enable, --disable or --status")
    if (thresholds or policy) and mode != "enable":
        raise click.UsageError("--threshold and --policy go with --enable")
    high = parse_thresholds(thresholds)  # bad values fail here, before anything changes
    if mode == "status":
        status = ask_backend("offload_status")
    else:
        status = ask(lambda b, c: b.configure_offload(c, enabled=mode == "enable", policy=policy, high=high or None))
    if as_json:
        print_json(status)
        return
    summary = status
    marks = ", ".join(f"{m} {v:g}%" for m, v in summary.thresholds.items())
    set_here = sorted(k for k, v in summary.origin.items() if v != "file")
    click.echo(f"automatic offload {'on' if summary.enabled else 'off'}; policy {summary.policy}; "
               f"high-water marks {marks}" + (f" (set at run time: {', '.join(set_here)})" if set_here else ""))
    for node, hold in summary.held.items():
        click.echo(f"held: {node} ({hold.reason})")
    if not summary.held:
        click.echo("held: nothing")
    for row in summary.nodes:
        click.echo(f"{row.name}: {node_line(row)}")
        for w in row.work:
            click.echo(f"  {w.kind} {w.name} (pid {w.pid}): {w.action}, {w.reason}")
    if summary.decision is not None:
        click.echo(f"decision: {'hold' if summary.decision.hold else 'no hold'} ({summary.decision.reason})")
    if summary.last_event:
        event = summary.last_event
        click.echo(f"last event: {event.kind} {event.node or ''} {event.reason}"
                   + (f" (by {event.user})" if event.user else ""))
    if mode == "status" and summary.plugins:
        from grid_core.plugin_set import drift_line

        if (drift := plugin_drift(summary.plugins)) is not None:
            click.echo(f"plugins: {drift_line(drift)}")


def node_line(row: NodeState) -> str:
    """A node's step and why, the owner's load beside the cluster's, and presence."""
    step = row.step if row.hold is None else f"{row.step} ({row.hold})"
    if row.lowered:
        step += f", {row.lowered} of the cluster's processes at the lowest priority"
    parts = [step]
    if row.owner_cpu_percent is not None and row.cluster_cpu_percent is not None:
        parts.append(f"cpu: owner {row.owner_cpu_percent:.0f}%, cluster {row.cluster_cpu_percent:.0f}%")
    if row.owner_idle_seconds is not None:
        parts.append(f"owner idle {row.owner_idle_seconds:.0f} s")
    return "; ".join(parts)


@offload.command()
@click.argument("node", shell_complete=completion.nodes)
@click.option("--reason", default="maintenance", help="Shown in status and watch.")
@config_option
def hold(node: str, reason: str) -> None:
    """Hold NODE: reserve its free CPUs and GPUs so new work goes elsewhere (a drain)."""
    status = ask(lambda b, c: b.hold(c, node, reason))
    click.echo(f"held {node}: {status.held[node].reason}")


@offload.command()
@click.argument("node", shell_complete=completion.nodes)
@config_option
def release(node: str) -> None:
    """Release a hold on NODE."""
    ask(lambda b, c: b.release(c, node))
    click.echo(f"released {node}")


@offload.command()
@click.option("--interval", type=FiniteFloat(min=0.2), default=2.0, show_default=True, help="Seconds per redraw.")
@config_option
def watch(interval: float) -> None:
    """A live dashboard: nodes against the marks, holds, boosts, jobs, events. q or Ctrl-C quits."""
    from grid_core.cli import watch as dashboard
    from grid_core.cli.run import job_records

    with connect() as (b, c):

        def fetch() -> tuple[ControllerStatus, list[JobRecord]]:
            status = b.offload_status(c)
            try:
                jobs = job_records(b.jobs(c))
            except GridError:
                jobs = []
            return status, jobs

        try:
            fetch()
        except GridError as exc:
            raise GridError(f"nothing to watch: {exc}") from None
        dashboard.run(fetch, interval)


@offload.command()
@json_option
def scan(as_json: bool) -> None:
    """Processes on this machine (the head) worth moving, and why."""
    from grid_core.offload import scan as find

    found = find()
    if as_json:
        print_json(found)
        return
    console().print(table(("pid", "kind", "cpu", "memory", "age", "why", "command"), (
        (str(p.pid), p.kind, f"{p.cpu_percent:.0f}%", f"{p.memory_bytes / 2**20:.0f} MiB", f"{p.age_seconds:.0f} s",
         p.why, " ".join(p.argv)[:60]) for p in found)))
    if found:
        click.echo("grid offload move PID restarts one elsewhere (a restart, not live migration)", err=True)


@offload.command()
@click.argument("pid", type=click.IntRange(min=1, max=2**31 - 1))  # a pid_t; psutil refuses 0 and below
@click.option("--to", "target", default=None, metavar="NODE",
              shell_complete=completion.nodes, help="Where to run it (default: the scheduler picks).")
@click.option("--stop-original", is_flag=True, help="Stop the original once the copy is running.")
@click.option("--cpus", type=FiniteFloat(min=0), default=1.0, show_default=True, help="CPUs the copy holds.")
@config_option
def move(pid: int, target: str | None, stop_original: bool, cpus: float) -> None:
    """Restart process PID's command (argv, cwd, environment) as a job on another node.

    This is a restart, not live migration: the copy starts from the beginning, and the original
    keeps running unless --stop-original is given.
    """
    import secrets

    import psutil

    from grid_core.backends import load_backend
    from grid_core.cli.run import _write
    from grid_core.offload import filtered_env
    from grid_core.types import JobSpec

    try:
        proc = psutil.Process(pid)
        argv, cwd, env = proc.cmdline(), proc.cwd(), filtered_env(proc.environ())
    except psutil.NoSuchProcess:
        raise GridError(f"no process {pid} on this machine") from None
    except psutil.AccessDenied:
        raise GridError(f"not allowed to read process {pid} (its owner or root may)") from None
    if not argv:
        raise GridError(f"process {pid} has no command line (a kernel thread?)")
    with state().cluster() as c:
        backend = load_backend(c.config)
        head = c.config.head.name
        if target == head:
            raise GridError(f"{head} is the head, where the process already runs; choose another --to")
        node = target or _roomiest_worker(c, backend, cpus)
        spec = JobSpec(argv=tuple(argv), node=node, cpus=cpus, cwd=cwd, env=env, job_id=secrets.token_hex(4))
        click.echo(f"restarting (not live-migrating) pid {pid} on {node} as job {spec.job_id}: {' '.join(argv)}",
                   err=True)
        job_id, _ = backend.submit(c, spec, detach=True, on_output=_write)
        if stop_original:
            _wait_running(backend, c, job_id)
            os.kill(pid, signal.SIGTERM)
            click.echo(f"stopped the original pid {pid}", err=True)
        status = backend.logs(c, job_id, follow=True, on_output=_write)
    if status:
        raise SystemExit(status)


def _roomiest_worker(c: Cluster, backend: Backend, cpus: float) -> str:
    """The running worker with the most CPUs free that could ever hold `cpus`: where a process of
    the head's goes (the queue waits for it there if it is busy)."""
    engine = backend.status(c)
    workers = [(v.resources["CPU"].available, n.name) for n in c.config.nodes
               if not n.is_head and (v := engine.get(n.name)) and v.alive and "CPU" in v.resources
               and v.resources["CPU"].total >= cpus]
    if not workers:
        raise GridError(f"no worker of cluster {c.config.name!r} is running with {cpus:g} CPU in all")
    return max(workers)[1]


def _wait_running(backend: Backend, c: Cluster, job_id: str, timeout: float = 60.0) -> None:
    """Until the copy has started (or ended), so the original is never stopped for nothing."""
    from grid_core.cli.run import job_records

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = next((j for j in job_records(backend.jobs(c)) if j.id == job_id), None)
        if job and job.state == "running":
            return
        if job and job.state in ("failed", "stopped"):
            raise GridError(f"the copy (job {job_id}) {job.state}; the original keeps running")
        time.sleep(0.25)
    raise GridError(f"the copy (job {job_id}) did not start within {timeout:.0f} s; the original keeps running")
