"""`grid plugins ...`: every plugin, its status and what it registers; each node's plugin set;
installing and removing plugins here and on every node at once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import click

from grid_core import plugins as plugin_host
from grid_core.cli.context import config_option, json_option, print_json, state
from grid_core.cli.output import Pieces, print_table, say, styled
from grid_core.errors import GridError
from grid_core.plugins import KINDS

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig
    from grid_core.types import NodeOutcome, PluginMatrix

PIP_TIMEOUT = 1800.0
RESTART_HINT = ("a running cluster's service and agents keep the plugins they started with: "
                "`grid cluster start --restart-service` restarts them")


@click.group()
def plugins() -> None:
    """List, install and remove plugins, here and on every node."""


def _nodes_options(f: Any) -> Any:
    f = click.option("--tag", "-t", "tags", multiple=True, metavar="TAG", help="Nodes with this tag (repeatable).")(f)
    return click.option("--node", "-n", "names", multiple=True, metavar="NAME", help="Only this node (repeatable).")(f)


@plugins.command("list")
@click.option("--cluster", "on_cluster", is_flag=True,
              help="Each node's plugin distributions beside this machine's: one column per node.")
@json_option
@config_option
def list_plugins(on_cluster: bool, as_json: bool) -> None:
    """Show each plugin: distribution, version, status and registrations."""
    if on_cluster:
        from grid_core.plugin_set import matrix

        with state().cluster() as c:
            found = matrix(c)
        if as_json:
            print_json(found)
        else:
            _print_matrix(found)
        for node, error in found.errors.items():
            click.echo(f"error: {node} could not be asked: {error}", err=True)
        if found.fix:
            click.echo(f"error: the plugin set differs where it counts; fix: {found.fix}", err=True)
        if found.fix or found.errors:  # for scripts: 0 only when every node matches where it counts
            raise SystemExit(1)
        return
    host = plugin_host.host()
    records = list(host.records.values())
    if as_json:
        print_json([
            {"name": r.name, "distribution": r.distribution, "version": r.version, "status": r.status,
             "reason": r.reason or None, "hooks": r.hooks}
            for r in records
        ])
    else:
        colours = {"active": "green", "blocked": "yellow", "failed": "red", "incompatible": "red"}
        rows = []
        for r in records:
            registers = "; ".join(f"{KINDS[h][0]}: {', '.join(names)}" for h, names in r.hooks.items() if names)
            status = Pieces((r.status, colours[r.status]), f" ({r.reason})" if r.reason else "")
            rows.append((r.name, r.distribution, r.version, status, registers or "-"))
        from grid_core import PLUGIN_API

        print_table(("plugin", "distribution", "version", "status", "registers"), rows,
                    title=f"plugin API {PLUGIN_API}")
    for conflict in host.conflicts():
        say(("conflict:", "red"), f" {conflict}", err=True)


def _print_matrix(found: PluginMatrix) -> None:
    rows = []
    for row in found.plugins:
        cells: list[Any] = [row.distribution, row.here or styled("-", "dim")]
        for node in found.nodes:
            if node in found.errors:
                cells.append(styled("?", "red"))
                continue
            have = row.nodes.get(node)
            if node in row.differs:
                cells.append(styled(f"{have or 'missing'} (differs)", "red"))
            elif have is None:
                cells.append(styled("-", "dim"))
            else:
                cells.append(styled(have, "green" if have == row.here else "yellow"))
        status = "" if row.status == "active" else f" ({row.status} here)"
        cells.append(f"{row.counts_on}{status}")
        rows.append(cells)
    print_table(("distribution", "here", *found.nodes, "counts on"), rows, title=f"plugins on {found.cluster}")
    if not found.fix and not found.errors:
        say(("the same on every node where it counts", "green"))


# ------------------------------------------------------------------------- install and remove


def _pip_here(args: list[str]) -> str:
    """Run pip in the environment grid runs from; its output, or a GridError with pip's reason."""
    argv = [sys.executable, "-m", "pip", *args]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GridError(f"pip failed to run: {exc}") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise GridError(f"pip {args[0]} failed here: {' | '.join(lines[-3:]) or f'exit {result.returncode}'}")
    return result.stdout


def _build_isolation() -> list[str]:
    """`--no-build-isolation` when this environment's setuptools can build grid's packages (no
    network needed); else pip's isolated build, which fetches a current setuptools."""
    from importlib import metadata

    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation"] if major >= 77 else []


def _spec(spec: str) -> str:
    """A local path made absolute (pip records it, and `cluster install` builds from it); a name
    or version spec as given, once it reads as one."""
    from grid_core.requirements import requirement_on

    if os.sep in spec or spec.startswith(".") or spec.endswith(".whl"):
        if not os.path.exists(spec):
            raise click.BadParameter(f"{spec}: no such file or directory", param_hint="SPEC")
        return os.path.abspath(spec)
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    specifier = requirement_on([spec], name.group()) if name else None
    if specifier is None or not re.fullmatch(r"(\s*(~=|===|==|!=|<=|>=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?)*", specifier):
        raise click.BadParameter(f"{spec!r} is not a package name, version spec, directory or wheel",
                                 param_hint="SPEC")
    return spec


def _changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [f"{d} {before.get(d) or 'absent'} -> {after.get(d) or 'removed'}"
            for d in sorted({*before, *after}) if before.get(d) != after.get(d)]


@plugins.command("install")
@click.argument("specs", nargs=-1, required=True, metavar="SPEC...")
@click.option("--wheelhouse", type=click.Path(file_okay=False, exists=True), default=None,
              help="Install offline from the wheels in DIR (here and on the nodes).")
@_nodes_options
@json_option
@config_option
def install(specs: tuple[str, ...], wheelhouse: str | None, names: tuple[str, ...], tags: tuple[str, ...],
            as_json: bool) -> None:
    """Install plugins here, then on every node (or --node/--tag) as `grid cluster install` does.

    SPEC is what pip takes: a name, a version spec (`grid-plugin-x>=1.2`), a local directory or a
    wheel. The nodes get exactly this machine's versions.
    """
    from grid_core.plugin_set import installed

    chosen = [_spec(s) for s in specs]
    with state().cluster() as c:
        nodes = c.select(names, tags)  # a bad name fails before anything is installed
        before = installed()
        _pip_here(["install", "--disable-pip-version-check", "--quiet", *_build_isolation(),
                   *(["--find-links", wheelhouse] if wheelhouse else []), *chosen])
        changed = _changed(before, installed())
        plugin_host.configure()  # the set is new: nothing of the old index or host stays in use
        say(("here:", "bold"), f" {', '.join(changed) or 'nothing changed'}", err=True)
        code = _on_nodes(c, nodes, "plugins install",
                         lambda b, progress: b.install(c, nodes, wheelhouse=wheelhouse, extra=[], progress=progress),
                         as_json)
    if not as_json:
        click.echo(RESTART_HINT, err=True)
    if code:
        raise SystemExit(code)


def _on_nodes(c: Cluster, nodes: list[NodeConfig], what: str, work: Any, as_json: bool) -> int:
    from grid_core.backends import load_backend
    from grid_core.cli.progress import NodeProgress, report
    from grid_core.state import operation_lock

    backend = load_backend(c.config)
    with operation_lock(c.config.name, "install", lambda message: click.echo(message, err=True)), \
            NodeProgress(f"{what} on {c.config.name}", [n.name for n in nodes]) as progress:
        outcomes = work(backend, progress)
    return report(f"cluster {c.config.name}: {what}", outcomes, as_json)


def _distribution(name: str) -> str:
    """The installed distribution a NAME means: a distribution's name, or a plugin's."""
    from importlib import metadata

    from grid_core.requirements import normalize

    for ep in metadata.entry_points(group="grid"):
        if ep.dist is not None and (name == ep.name or normalize(name) == normalize(ep.dist.name)):
            return ep.dist.name
    try:
        return metadata.distribution(name).name
    except (metadata.PackageNotFoundError, ValueError):  # ValueError: no name at all
        raise click.BadParameter(f"{name!r} is not installed here (see `grid plugins list`)",
                                 param_hint="NAME") from None


@plugins.command("remove")
@click.argument("names_to_remove", nargs=-1, required=True, metavar="NAME...")
@_nodes_options
@json_option
@config_option
def remove(names_to_remove: tuple[str, ...], names: tuple[str, ...], tags: tuple[str, ...], as_json: bool) -> None:
    """Uninstall plugins (by distribution or plugin name) here, then on every node (or --node/--tag)."""
    from grid_core.plugin_set import CORE, installed

    dists = list(dict.fromkeys(_distribution(n) for n in names_to_remove))
    if CORE in dists:
        raise click.BadParameter("grid-core is grid itself, not a plugin", param_hint="NAME")
    with state().cluster() as c:
        nodes = c.select(names, tags)
        before = installed()
        _pip_here(["uninstall", "--yes", *dists])
        plugin_host.configure()
        say(("here:", "bold"), f" {', '.join(_changed(before, installed())) or 'nothing changed'}", err=True)
        code = _on_nodes(c, nodes, "plugins remove",
                         lambda _b, progress: _remove_on_nodes(c, nodes, dists, progress), as_json)
    if not as_json:
        click.echo(RESTART_HINT, err=True)
    if code:
        raise SystemExit(code)


def _remove_on_nodes(c: Cluster, nodes: list[NodeConfig], dists: list[str], progress: Any) -> list[NodeOutcome]:
    """pip uninstall in each node's venv (the one `cluster install` makes), all nodes at once."""
    import posixpath

    from grid_core.cluster import DEFAULT_VENV, on_node
    from grid_core.types import NodeOutcome

    def one(node: NodeConfig) -> tuple[str, str]:
        if node.python:
            return "skipped", f"nodes[{node.name}].python is set; grid leaves that interpreter as it is"
        venv = on_node(node, c.config.backend.venv or DEFAULT_VENV)
        python = posixpath.join(venv, "bin", "python")
        if node.transport_name == "local" and os.path.realpath(venv) == os.path.realpath(sys.prefix):
            return "removed", "this machine's own environment"
        progress(node.name, f"pip uninstall in {venv}")
        result = c.transport(node).run([python, "-m", "pip", "uninstall", "--yes", *dists], timeout=PIP_TIMEOUT)
        if result.exit_status != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise GridError(f"pip uninstall failed: {' | '.join(lines[-3:]) or f'exit {result.exit_status}'}")
        gone = re.findall(r"Successfully uninstalled (\S+)", result.stdout)
        return ("removed", ", ".join(gone)) if gone else ("not installed", "")

    for node in nodes:
        progress(node.name, "checking")
    results = {r.node.name: r for r in c.fan_out(nodes, one)}
    out = []
    for node in nodes:
        r = results[node.name]
        if r.error is not None:
            out.append(NodeOutcome(node.name, False, "failed", r.error, r.seconds))
        else:
            out.append(NodeOutcome(node.name, True, r.value[0], r.value[1], r.seconds))
    return out
