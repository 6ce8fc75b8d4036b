"""`grid cluster ...`: the cluster's life. The backend (e.g. ray) adds its columns to status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import click

from grid_core.cli.context import config_option, json_option, print_json, state
from grid_core.cli.output import console, join, say, styled, table
from grid_core.types import ClusterStatus, NodeStatus

if TYPE_CHECKING:
    from grid_core.types import EngineNode


@click.group()
def cluster() -> None:
    """Start, stop and inspect the cluster."""


def node_rows(cluster_obj: Any, nodes: Any = None, known: dict[str, EngineNode] | None = None,
              unreached: dict[str, str | None] | None = None) -> list[NodeStatus]:
    """One row per node (default: every node): what the transport reaches and what the metrics
    sources read. A node in `known` with a reading there is one the cluster read lately: its row
    takes that reading (and its age) instead of reading the node again, and is reachable unless
    `unreached` names a reason."""
    cfg = cluster_obj.config
    nodes = cfg.nodes if nodes is None else nodes
    known = known or {}
    readings = cluster_obj.sample([n for n in nodes if n.name not in known]) if len(known) < len(nodes) else {}
    rows = []
    for node in nodes:
        m, age, error = None, None, None
        if node.name in known:
            m, age, error = known[node.name].metrics, known[node.name].metrics_age, (unreached or {}).get(node.name)
        else:
            out = readings[node.name]
            m, error = out.value, out.error
        rows.append(NodeStatus(
            name=node.name,
            host=node.host,
            role="head" if node.is_head else "worker",
            transport=node.transport_name,
            reachable=error is None,
            error=error,
            cpus=node.cpu_count if node.cpu_count is not None else (m.cpu_count if m else None),
            gpus=node.gpu_count if node.gpu_count is not None else (len(m.gpus) if m else None),
            memory_bytes=int(node.memory_gb * 2**30) if node.memory_gb is not None
            else (m.memory_total_bytes if m else None),
            cpu_percent=m.cpu_percent if m else None,
            memory_percent=m.memory_percent if m else None,
            swap_percent=m.swap_percent if m else None,
            load1=m.load1 if m else None,
            gpu_percent=m.gpu_percent if m else None,
            metrics_source=m.source if m else None,
            metrics_age=age,
        ))
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def merge_backend(rows: list[NodeStatus], engine: dict[str, EngineNode] | None, error: str | None) -> list[NodeStatus]:
    """The rows with the engine's view added: alive, and its CPUs, GPUs and memory where it has them."""
    merged = []
    for row in rows:
        view = (engine or {}).get(row.name)
        if view is None:  # the engine could not be asked, or does not know the node
            merged.append(attrs.evolve(row, alive=None, engine_error=error))
            continue
        merged.append(attrs.evolve(
            row, alive=view.alive, resources=view.resources, address=view.address, node_id=view.node_id,
            cpus=row.cpus if view.cpus is None else view.cpus, gpus=row.gpus if view.gpus is None else view.gpus,
            memory_bytes=row.memory_bytes if view.memory_bytes is None else view.memory_bytes,
            engine_error=view.error or error))
    return merged


def _engine_view(backend: Any, c: Any) -> tuple[dict[str, EngineNode] | None, str | None]:
    from grid_core.errors import GridError

    try:
        return backend.status(c), None
    except GridError as exc:
        return None, str(exc)


def status_rows(c: Any) -> list[NodeStatus]:
    """node_rows and the backend's status, read at the same time. A node whose fresh reading the
    backend has (its agent's) takes that one: reading a node anew costs a command a 0.2 s
    sample. Meanwhile each remote node is reached with `true`, a round trip on a kept connection,
    so its row still says whether this machine reaches it."""
    from grid_core.backends import load_backend
    from grid_core.errors import GridError

    nodes = c.config.nodes
    try:
        backend = load_backend(c.config)
    except GridError as exc:
        return merge_backend(node_rows(c), None, str(exc))
    remote = [n for n in nodes if n.transport_name != "local"]
    unreached: dict[str, str | None] = {}
    if not remote:  # nothing to reach beside the engine, so no thread (concurrent.futures costs 2 ms to import)
        view, error = _engine_view(backend, c)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=1) as pool:
            engine = pool.submit(_engine_view, backend, c)
            unreached = {out.node.name: out.error for out in c.fan_out(remote, lambda n: c.transport(n).run(["true"]))}
            view, error = engine.result()
    known = {n.name: view[n.name] for n in nodes if view and n.name in view and view[n.name].metrics is not None}
    rows = {r.name: r for r in node_rows(c, nodes, known, unreached)}
    return merge_backend([rows[n.name] for n in nodes], view, error)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _used(row: NodeStatus, resource: str) -> str:
    r = row.resources.get(resource)
    return "-" if not r else f"{r.used:g}/{r.total:g}"


@cluster.command()
@json_option
@config_option
def status(as_json: bool) -> None:
    """Each node's reachability, engine state, resources and live load."""
    with state().cluster() as c:
        rows = status_rows(c)
        if as_json:
            print_json(ClusterStatus(cluster=c.config.name, source=c.config.source, nodes=tuple(rows)))
            return
    notes, cells = [], []
    for r in rows:
        reach = styled("yes", "green") if r.reachable else join(("no", "red"), f" ({r.error})")
        alive = None if r.alive is None else styled("yes", "green") if r.alive else styled("no", "red")
        if r.engine_error:
            notes.append(f"{r.name}: {r.engine_error}")
        cells.append((r.name, r.host, r.role, reach, alive, _num(r.cpus), _num(r.gpus or 0),
                      _used(r, "CPU"), _used(r, "GPU"),
                      _pct(r.cpu_percent), _pct(r.memory_percent), _pct(r.swap_percent),
                      "-" if r.load1 is None else f"{r.load1:.2f}", _pct(r.gpu_percent)))
    console().print(table(("node", "host", "role", "reachable", "alive", "cpus", "gpus", "cpu used", "gpu used",
                           "cpu", "mem", "swap", "load", "gpu"), cells,
                          title=f"cluster {c.config.name} ({c.config.source})"))
    if notes and len({n.partition(": ")[2] for n in notes}) == 1 and len(notes) == len(rows):
        notes = [f"all nodes: {notes[0].partition(': ')[2]}"]
    for note in notes:
        say((f"engine: {note}", "dim"))


@cluster.command()
@click.option("--dry-run", is_flag=True, help="Check the nodes and say what would be done; change nothing.")
@click.option("--install", "install_first", is_flag=True,
              help="First give every node this machine's engine and grid (as `grid cluster install`).")
@click.option("--wheelhouse", type=click.Path(file_okay=False), default=None,
              help="With --install: install offline from the wheels in DIR.")
@json_option
@config_option
def start(dry_run: bool, install_first: bool, wheelhouse: str | None, as_json: bool) -> None:
    """Start the engine: check every node, start the head, then the workers in parallel.

    Nodes already up in this cluster are left alone; missing or dead ones are (re)started. One
    start, stop or install of a cluster runs at a time: a second waits, and says for whom.
    """
    from grid_core.backends import load_backend
    from grid_core.cli.progress import NodeProgress, report

    if wheelhouse and not install_first:
        raise click.UsageError("--wheelhouse goes with --install")
    with state().cluster() as c, _one_at_a_time(c.config.name, "start"):
        backend = load_backend(c.config)
        names = [n.name for n in c.config.nodes]
        if install_first and not dry_run:
            with NodeProgress(f"installing on {c.config.name}", names) as progress:
                installed = backend.install(c, c.config.nodes, wheelhouse=wheelhouse, extra=[], progress=progress)
            # With --json, one document: the install's only when it failed, else the start's.
            if (not as_json or not all(o.ok for o in installed)) and (
                    code := report(f"cluster {c.config.name}: install", installed, as_json)):
                raise SystemExit(code)
        with NodeProgress(f"starting {c.config.name}", names) as progress:
            outcomes = backend.start(c, dry_run=dry_run, progress=progress)
        code = report(f"cluster {c.config.name}: {'plan' if dry_run else 'start'}", outcomes, as_json)
    if not as_json and not dry_run and not code:
        click.echo("run a job: grid run -- CMD   status: grid cluster status   stop: grid cluster stop", err=True)
        click.echo("Ray's own tools (ray status, a script's ray.init()): eval \"$(grid cluster env)\" first",
                   err=True)
    if code:
        raise SystemExit(code)


def _one_at_a_time(cluster_name: str, operation: str) -> Any:
    from grid_core.state import operation_lock

    return operation_lock(cluster_name, operation, lambda message: click.echo(message, err=True))


@cluster.command()
@json_option
@config_option
def stop(as_json: bool) -> None:
    """Stop what grid started on each node (workers first), nothing else. Harmless when nothing runs."""
    from grid_core.backends import load_backend
    from grid_core.cli.progress import NodeProgress, report

    with state().cluster() as c, _one_at_a_time(c.config.name, "stop"):
        backend = load_backend(c.config)
        with NodeProgress(f"stopping {c.config.name}", [n.name for n in c.config.nodes]) as progress:
            outcomes = backend.stop(c, progress=progress)
        c.disconnect()  # the SSH keeper's connections go with the cluster
        code = report(f"cluster {c.config.name}: stop", outcomes, as_json)
    if code:
        raise SystemExit(code)


@cluster.command()
@click.option("--wheelhouse", type=click.Path(file_okay=False), default=None,
              help="Install offline from the wheels in DIR (grid's own wheels are added to it).")
@click.option("--with", "extra", multiple=True, metavar="PKG", help="Also install PKG on every node (repeatable).")
@click.option("--node", "-n", "names", multiple=True, metavar="NAME", help="Only this node (repeatable).")
@json_option
@config_option
def install(wheelhouse: str | None, extra: tuple[str, ...], names: tuple[str, ...], as_json: bool) -> None:
    """Give every node the same Python packages as this machine: the engine, grid and its plugins."""
    from grid_core.backends import load_backend
    from grid_core.cli.progress import NodeProgress, report

    with state().cluster() as c, _one_at_a_time(c.config.name, "install"):
        backend = load_backend(c.config)
        nodes = c.select(names)
        with NodeProgress(f"installing on {c.config.name}", [n.name for n in nodes]) as progress:
            outcomes = backend.install(c, nodes, wheelhouse=wheelhouse, extra=list(extra), progress=progress)
        code = report(f"cluster {c.config.name}: install", outcomes, as_json)
    if code:
        raise SystemExit(code)


@cluster.command()
@click.option("--shell", "shell", type=click.Choice(["sh", "fish"]), default="sh", show_default=True,
              help="Syntax of the lines printed (sh suits bash, zsh, dash and ksh).")
@json_option
@config_option
def env(shell: str, as_json: bool) -> None:
    """Print what a shell needs for the engine's own tools: eval "$(grid cluster env)".

    Then `ray status`, a script's plain `ray.init()` and the rest of Ray's CLI reach this cluster.
    Only paths are printed, never the token itself.
    """
    import shlex

    from grid_core.backends import load_backend

    with state().cluster() as c:
        found = load_backend(c.config).shell_env(c)
    if as_json:
        print_json(found)
        return
    for name in found.unset:
        click.echo(f"set -e {name};" if shell == "fish" else f"unset {name};")
    for name, value in found.variables.items():
        quoted = shlex.quote(value)
        click.echo(f"set -gx {name} {quoted};" if shell == "fish" else f"export {name}={quoted};")
    for note in found.notes:
        click.echo(f"# {note}")
