"""`grid cluster ...`: the cluster's life. The backend (e.g. ray) adds its columns to status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from grid_core.cli import completion
from grid_core.cli.context import (
    config_option,
    json_option,
    keep_shortcut,
    print_json,
    print_json_text,
    shortcut_client,
    state,
    tried,
)
from grid_core.cli.output import Pieces, print_table, say

if TYPE_CHECKING:
    from grid_core.types import ClusterStatus, EngineNode, NodeStatus


@click.group()
def cluster() -> None:
    """Start, stop and inspect the cluster."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _engine_view(backend: Any, c: Any) -> tuple[dict[str, EngineNode] | None, str | None]:
    from grid_core.errors import GridError

    try:
        return backend.status(c), None
    except GridError as exc:
        return None, str(exc)


def _usual_status(c: Any) -> ClusterStatus:
    """The backend's status, then the rows. A node the engine lists alive, with a fresh reading
    from the cluster (its agent's, or the service's on the head), takes that reading: the command
    then opens no connection to it (with 16 nodes, 15 SSH handshakes from the head) and takes no
    0.2 s sample of this machine. Only the other nodes are read through their transports."""
    from grid_core.backends import load_backend
    from grid_core.errors import GridError
    from grid_core.node_status import merge_backend, node_rows
    from grid_core.plugin_set import Here
    from grid_core.types import ClusterStatus

    try:
        backend = load_backend(c.config)
    except GridError as exc:
        rows = merge_backend(node_rows(c.config.nodes, {}, c), None, str(exc))
    else:
        view, error = _engine_view(backend, c)
        known = {name: v for name, v in (view or {}).items() if v.alive and v.metrics is not None}
        rows = merge_backend(node_rows(c.config.nodes, known, c), view, error)
        if error is None:
            keep_shortcut(c, backend)
    started_with = next((r.service_plugins for r in rows if r.service_plugins is not None), None)
    return ClusterStatus(cluster=c.config.name, source=c.config.source, nodes=tuple(rows),
                         plugins_changed=None if started_with is None else Here().drift(started_with))


def _status_text() -> str | None:
    """The status as JSON, as the service writes it for a caller by the kept shortcut
    (grid_core/shortcut.py), where it has read every node lately; None: take the usual path."""
    found = shortcut_client()
    if found is None:
        return None
    client, kept = found
    answered, answer = tried(lambda: client.cluster_status(kept.basis))
    return answer.text if answered else None  # type: ignore[no-any-return]


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
    import json

    text = _status_text()
    if text is not None and as_json:
        print_json_text(text)
        return
    if text is not None:
        from grid_core.types import ClusterStatus, wire

        shown = wire().structure(json.loads(text), ClusterStatus)
    else:
        with state().cluster() as c:
            shown = _usual_status(c)
    if as_json:
        print_json(shown)
        return
    from grid_core.gpus import summary

    notes, cells, gpu_notes = [], [], []
    for r in shown.nodes:
        reach = Pieces(("yes", "green")) if r.reachable else Pieces(("no", "red"), f" ({r.error})")
        alive = None if r.alive is None else Pieces(("yes", "green")) if r.alive else Pieces(("no", "red"))
        if r.engine_error:
            notes.append(f"{r.name}: {r.engine_error}")
        if r.gpu_note:
            gpu_notes.append(f"warning: {r.name}: {r.gpu_note}")
        gpu_notes += [f"{r.name}: {claim}" for claim in r.gpu_claims]  # another cluster's jobs
        cells.append((r.name, r.host, r.role, reach, alive, _num(r.cpus), _num(r.gpus or 0),
                      summary(r.gpu_models) if r.gpu_models else "-",
                      _used(r, "CPU"), _used(r, "GPU"),
                      _pct(r.cpu_percent), _pct(r.memory_percent), _pct(r.swap_percent),
                      "-" if r.load1 is None else f"{r.load1:.2f}", _pct(r.gpu_percent)))
    print_table(("node", "host", "role", "reachable", "alive", "cpus", "gpus", "gpu models", "cpu used", "gpu used",
                 "cpu", "mem", "swap", "load", "gpu"), cells, title=f"cluster {shown.cluster} ({shown.source})")
    if notes and len({n.partition(": ")[2] for n in notes}) == 1 and len(notes) == len(shown.nodes):
        notes = [f"all nodes: {notes[0].partition(': ')[2]}"]
    for note in notes:
        say((f"engine: {note}", "dim"))
    for note in gpu_notes:
        say((note, "yellow"))
    if shown.plugins_changed is not None:
        from grid_core.plugin_set import drift_line

        say(("plugins:", "yellow"), f" {drift_line(shown.plugins_changed)}")


@cluster.command()
@click.option("--dry-run", is_flag=True, help="Check the nodes and say what would be done; change nothing.")
@click.option("--install", "install_first", is_flag=True,
              help="First give every node this machine's engine and grid (as `grid cluster install`).")
@click.option("--wheelhouse", type=click.Path(file_okay=False), default=None,
              help="With --install: install offline from the wheels in DIR.")
@click.option("--restart-service", is_flag=True,
              help="Then restart the grid service and the node agents, to run the plugins installed now.")
@json_option
@config_option
def start(dry_run: bool, install_first: bool, wheelhouse: str | None, restart_service: bool, as_json: bool) -> None:
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
        if restart_service and not dry_run and not code:
            backend.restart_service(c)
            if not as_json:
                click.echo(f"restarted the grid service and the node agents on {c.config.name}: they run the "
                           "plugins installed now", err=True)
    if not as_json and not dry_run and not code:
        click.echo("run a job: grid run -- CMD   status: grid cluster status   stop: grid cluster stop", err=True)
        click.echo("Ray's own tools (ray status, a script's ray.init()): eval \"$(grid cluster env)\" first",
                   err=True)
    if code:
        raise SystemExit(code)


@cluster.command()
@click.option("--user", is_flag=True, help="A user unit even as root (the default for other users).")
@config_option
def enable(user: bool) -> None:
    """Start this cluster when this machine boots: a systemd unit that runs `grid cluster start`.

    As root a system unit, otherwise a user unit (it runs at boot only where the user lingers:
    loginctl enable-linger). A failed start is tried again every 30 s. The grid service then
    brings workers back as they boot. `grid cluster disable` removes it.
    """
    from grid_core import boot_unit
    from grid_core.config.models import EMBEDDED_DEFAULT
    from grid_core.errors import GridError

    config = state().config()
    name = boot_unit.unit_name(config.name)
    text = boot_unit.unit_text(config.name, None if config.source == EMBEDDED_DEFAULT else config.source, user)
    directory = boot_unit.unit_directory(user)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    except OSError as exc:
        raise GridError(f"cannot write the unit {directory / name}: {exc.strerror or exc}") from None
    click.echo(f"wrote {directory / name}")
    problem = boot_unit.systemctl(user, "daemon-reload") or boot_unit.systemctl(user, "enable", name)
    if problem:
        raise GridError(f"the unit is written, but systemd did not enable it: {problem}; once systemd "
                        f"runs: systemctl{'' if boot_unit.system_wide(user) else ' --user'} enable {name}")
    click.echo(f"enabled {name}: grid cluster start runs when this machine boots")
    if config.head.transport_name != "local":
        click.echo(f"note: the head {config.head.name} is reached by SSH from here: this unit starts the cluster "
                   "when this machine boots; to start it when the head boots, enable it there", err=True)
    if not boot_unit.system_wide(user) and boot_unit.lingers() is False:
        click.echo("note: a user unit runs at boot only if you linger: loginctl enable-linger", err=True)


@cluster.command()
@click.option("--user", is_flag=True, help="The user unit, as `enable --user` wrote it.")
@config_option
def disable(user: bool) -> None:
    """Remove what `grid cluster enable` installed: the cluster no longer starts at boot."""
    from grid_core import boot_unit

    config = state().config()
    name = boot_unit.unit_name(config.name)
    path = boot_unit.unit_directory(user) / name
    if not path.exists():
        click.echo(f"no unit {path}: cluster {config.name} does not start at boot")
        return
    problem = boot_unit.systemctl(user, "disable", name)
    path.unlink()
    boot_unit.systemctl(user, "daemon-reload")
    click.echo(f"removed {path}: cluster {config.name} no longer starts at boot")
    if problem:
        click.echo(f"note: systemd was not told ({problem}); the unit file is gone, so nothing starts it", err=True)


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
        queued = backend.drain(c)
        with NodeProgress(f"stopping {c.config.name}", [n.name for n in c.config.nodes]) as progress:
            outcomes = backend.stop(c, progress=progress)
        if queued:
            click.echo(f"grid: {queued} queued job{'s' * (queued != 1)} stay queued; the next grid cluster start "
                       "resumes them", err=True)
        c.disconnect()  # the SSH keeper's connections go with the cluster
        code = report(f"cluster {c.config.name}: stop", outcomes, as_json)
    if code:
        raise SystemExit(code)


@cluster.command()
@click.option("--wheelhouse", type=click.Path(file_okay=False), default=None,
              help="Install offline from the wheels in DIR (grid's own wheels are added to it).")
@click.option("--with", "extra", multiple=True, metavar="PKG", help="Also install PKG on every node (repeatable).")
@click.option("--node", "-n", "names", multiple=True, metavar="NAME",
              shell_complete=completion.nodes, help="Only this node (repeatable).")
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
