"""`grid doctor`: can grid use every node? One probe per node, all nodes at once, a reason per failure.

The probe is a single command (one round trip after the connection): the node's Python reports
its version and whether `import ray` works and which version; the shell reports nvidia-smi or
libnvidia-ml. Connection problems are told apart by the transport's error class: a HostKeyError
means the node answered but its key is not trusted; an AuthError that the key was fine but the
login was refused; any other TransportError that the node was not reached at all.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

import attrs
import click

from grid_core.cli.context import config_option, console, json_option, print_json, state
from grid_core.types import AuthError, CommandResult, HostKeyError, TransportError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig, NodeConfig

MIN_PYTHON = (3, 11)
PROBE_TIMEOUT = 60.0  # a cold `import ray` on a slow disk takes seconds
CHECKS = ("reachable", "host_key", "auth", "python", "ray", "gpu")

# Kept to Python 2/3-compatible syntax, so that an old interpreter reports its version
# instead of a SyntaxError.
PYTHON_PROBE = """\
import sys
print("python=%d.%d.%d" % tuple(sys.version_info[:3]))
try:
    import ray
    print("ray=" + ray.__version__)
except Exception as exc:
    print("ray_error=" + (type(exc).__name__ + ": " + str(exc)).replace("\\n", " ")[:300])
"""
# $1: the interpreter, $2: PYTHON_PROBE; passed as arguments, never pasted into the script.
SHELL_PROBE = """\
if command -v "$1" >/dev/null 2>&1; then "$1" -c "$2" || echo "python_failed=$?"; else echo "python_missing=1"; fi
if command -v nvidia-smi >/dev/null 2>&1; then echo "nvidia=nvidia-smi"
elif { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libnvidia-ml\\.so'; then echo "nvidia=libnvidia-ml"
fi
exit 0
"""


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


@attrs.frozen
class Probe:
    """What one node answered, or the transport error that stopped it."""

    python: str
    facts: dict[str, str] = attrs.Factory(dict)
    stderr: str = ""
    error: TransportError | None = None
    other_error: str | None = None  # a failure before the transport ran (unknown transport, bad config)


def node_python(node: NodeConfig, config: ClusterConfig) -> str:
    """The interpreter grid uses on a node: the node's own, the backend's venv or python, else python3."""
    if node.python:
        return node.python
    if config.backend.venv:
        return posixpath.join(config.backend.venv, "bin", "python")
    return config.backend.python or "python3"


def probe(cluster: Cluster, node: NodeConfig) -> Probe:
    """Run the probe on a node; transport errors are kept (with their class), never raised."""
    python = node_python(node, cluster.config)
    try:
        result: CommandResult = cluster.transport(node).run(
            ["sh", "-c", SHELL_PROBE, "grid-doctor", python, PYTHON_PROBE], timeout=PROBE_TIMEOUT
        )
    except TransportError as exc:
        return Probe(python, error=exc)
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Probe(python, facts, result.stderr.strip())


def checks_for(node: NodeConfig, found: Probe, head_ray: str | None, is_head: bool) -> list[Check]:
    """The node's checks from its probe; checks that could not run are left out."""
    if found.other_error is not None:
        return [Check("reachable", False, found.other_error)]
    error = found.error
    if error is not None and not isinstance(error, HostKeyError | AuthError):
        return [Check("reachable", False, str(error))]
    local = node.transport_name == "local"
    out = [Check("reachable", True, "this machine (local transport)" if local else f"via {node.transport_name}")]
    if isinstance(error, HostKeyError):
        return [*out, Check("host_key", False, str(error))]
    if not local:
        out.append(Check("host_key", True, "known"))
        if isinstance(error, AuthError):
            return [*out, Check("auth", False, str(error))]
        out.append(Check("auth", True, "accepted"))
    return out + _python_checks(node, found, head_ray, is_head)


def _python_checks(node: NodeConfig, found: Probe, head_ray: str | None, is_head: bool) -> list[Check]:
    facts, python = found.facts, found.python
    out = []
    if "python_missing" in facts:
        out.append(Check("python", False, f"{python} not found on the node's PATH; set `python` for the node "
                                          "or `backend.python` / `backend.venv`"))
    elif "python" not in facts:
        why = found.stderr.splitlines()[-1] if found.stderr else f"exit {facts.get('python_failed', '?')}"
        out.append(Check("python", False, f"{python} failed: {why}"))
    else:
        version = facts["python"]
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        wanted = ".".join(map(str, MIN_PYTHON))
        out.append(Check("python", parts >= MIN_PYTHON, f"{version} ({python})" if parts >= MIN_PYTHON
                         else f"{version} ({python}); grid needs Python >= {wanted}"))
        out.append(_ray_check(facts, python, head_ray, is_head))
    if (node.gpu_count or 0) > 0:
        found_by = facts.get("nvidia")
        out.append(Check("gpu", bool(found_by), f"{found_by} present" if found_by else
                         f"gpu_count = {node.gpu_count} but neither nvidia-smi nor libnvidia-ml is installed"))
    return out


def _ray_check(facts: dict[str, str], python: str, head_ray: str | None, is_head: bool) -> Check:
    if "ray" not in facts:
        return Check("ray", False, f"`import ray` fails with {python}: {facts.get('ray_error', 'no answer')}")
    version = facts["ray"]
    if is_head:
        return Check("ray", True, f"{version} (head)")
    if head_ray is None:
        return Check("ray", True, f"{version} (the head's version is unknown)")
    if version != head_ray:
        return Check("ray", False, f"{version}, but the head has {head_ray}: install ray=={head_ray}")
    return Check("ray", True, version)


def diagnose(cluster: Cluster, parallel: int | None = None) -> list[dict[str, Any]]:
    """Every node's checks, in config order, as plain data."""
    nodes = list(cluster.config.nodes)
    probes: dict[str, Probe] = {}
    for out in cluster.fan_out(nodes, lambda node: probe(cluster, node), parallel):
        probes[out.node.name] = out.value if out.error is None else \
            Probe(node_python(out.node, cluster.config), other_error=out.error)
    head = cluster.config.head
    head_ray = probes[head.name].facts.get("ray")
    report = []
    for node in nodes:
        checks = checks_for(node, probes[node.name], head_ray, node.name == head.name)
        report.append({
            "node": node.name,
            "host": node.host,
            "transport": node.transport_name,
            "ok": all(c.ok for c in checks),
            "checks": [attrs.asdict(c) for c in checks],
        })
    return report


@click.command()
@click.option("--parallel", type=click.IntRange(min=1), default=None, help="Nodes checked at once [32].")
@json_option
@config_option
def doctor(parallel: int | None, as_json: bool) -> None:
    """Check that grid can use every node, with a reason for each failure.

    Per node: reachable, host key known, login accepted, Python >= 3.11, Ray importable and the
    same version as the head's, and for nodes with gpu_count > 0 nvidia-smi or NVML. Exits 1 when
    any check fails.
    """
    with state().cluster() as cluster:
        report = diagnose(cluster, parallel)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    if not all(row["ok"] for row in report):
        raise SystemExit(1)


def _print_report(report: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("node", "host", *(c.replace("_", " ") for c in CHECKS)):
        table.add_column(column)
    problems = []
    for row in report:
        by_name = {c["name"]: c for c in row["checks"]}
        cells = []
        for name in CHECKS:
            check = by_name.get(name)
            if check is None:
                cells.append("[dim]-[/]")
            elif check["ok"]:
                short = check["detail"].split(" ")[0] if name in ("python", "ray") else "ok"
                cells.append(f"[green]{escape(short)}[/]")
            else:
                cells.append("[red]FAIL[/]")
                problems.append(f"[bold]{escape(row['node'])}[/] {name.replace('_', ' ')}: {escape(check['detail'])}")
        table.add_row(escape(row["node"]), escape(row["host"]), *cells)
    out = console()
    out.print(table)
    healthy = sum(row["ok"] for row in report)
    for line in problems:
        out.print(line)
    colour = "green" if healthy == len(report) else "red"
    out.print(f"[{colour}]{healthy} of {len(report)} nodes ready[/]")
