"""`grid doctor`: can grid use every node? One probe per node, all nodes at once, a reason per failure.

The probe is a single command (one round trip after the connection): the node's Python reports
its version and whether `import ray` works and which version; the shell reports nvidia-smi or
libnvidia-ml. Connection problems are told apart by the transport's error class: a HostKeyError
means the node answered but its key is not trusted; an AuthError that the key was fine but the
login was refused; any other TransportError that the node was not reached at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import click

from grid_core.cli.context import config_option, json_option, print_json, state
from grid_core.cli.output import console, join, say, styled, table
from grid_core.cluster import python_candidates
from grid_core.types import AuthError, CommandResult, HostKeyError, TransportError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig

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
try:
    from grid_core.builtin.nvml_metrics import READER
    nvml = READER.status()
    print(("nvml=" if nvml.available else "nvml_error=") + nvml.line())
except Exception:
    pass
"""
# $1: PYTHON_PROBE, then the interpreters grid would use, in order (the first that exists answers);
# passed as arguments, never pasted into the script.
SHELL_PROBE = """\
probe=$1; shift; found=
for py; do
  command -v "$py" >/dev/null 2>&1 || continue
  echo "interpreter=$py"; "$py" -c "$probe" || echo "python_failed=$?"; found=1; break
done
[ -n "$found" ] || echo "python_missing=1"
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


def probe(cluster: Cluster, node: NodeConfig) -> Probe:
    """Run the probe on a node; transport errors are kept (with their class), never raised."""
    candidates = python_candidates(cluster.config, node)
    python = " or ".join(candidates)
    try:
        result: CommandResult = cluster.transport(node).run(
            ["sh", "-c", SHELL_PROBE, "grid-doctor", PYTHON_PROBE, *candidates], timeout=PROBE_TIMEOUT
        )
    except TransportError as exc:
        return Probe(python, error=exc)
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Probe(facts.get("interpreter", python), facts, result.stderr.strip())


def checks_for(node: NodeConfig, found: Probe, head_ray: str | None, is_head: bool, head_python: str | None = None,
               python_problem: Callable[[str, str | None], str | None] = lambda _v, _h: None) -> list[Check]:
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
    return out + _python_checks(node, found, head_ray, is_head, head_python, python_problem)


def _python_checks(node: NodeConfig, found: Probe, head_ray: str | None, is_head: bool, head_python: str | None,
                   python_problem: Callable[[str, str | None], str | None]) -> list[Check]:
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
        if parts < MIN_PYTHON:
            out.append(Check("python", False, f"{version} ({python}); grid needs Python >= {wanted}"))
        elif not is_head and (problem := python_problem(version, head_python)):
            out.append(Check("python", False, f"{version} ({python}); {problem}"))
        else:
            out.append(Check("python", True, f"{version} ({python})"))
        out.append(_ray_check(facts, python, head_ray, is_head))
    nvml, why_not = facts.get("nvml"), facts.get("nvml_error")  # the driver's and NVML's versions, or why not
    if (node.gpu_count or 0) > 0:
        found_by = facts.get("nvidia")
        if found_by:
            detail = (nvml or f"{found_by} present") + (f"; {why_not}" if why_not else "")
        else:
            detail = (f"gpu_count = {node.gpu_count} but neither nvidia-smi nor libnvidia-ml is installed"
                      + (f" ({why_not})" if why_not else ""))
        out.append(Check("gpu", bool(found_by), detail))
    elif nvml:  # GPUs the config does not declare: worth knowing, never a failure
        out.append(Check("gpu", True, nvml))
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
            Probe(" or ".join(python_candidates(cluster.config, out.node)), other_error=out.error)
    head = cluster.config.head
    head_ray = probes[head.name].facts.get("ray")
    head_python = probes[head.name].facts.get("python")
    report = []
    for node in nodes:
        checks = checks_for(node, probes[node.name], head_ray, node.name == head.name, head_python,
                            _python_problem(cluster))
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
        warnings = _stray_engines(cluster)
    for warning in warnings:  # they fail no check: the cluster works, a program run without grid may not
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    if not all(row["ok"] for row in report):
        raise SystemExit(1)


def _python_problem(cluster: Cluster) -> Callable[[str, str | None], str | None]:
    """The backend's rule for a node's Python beside the head's; none without a backend."""
    from grid_core.backends import load_backend
    from grid_core.errors import GridError

    try:
        return load_backend(cluster.config).python_problem
    except GridError:
        return lambda _version, _head: None


def _stray_engines(cluster: Cluster) -> list[str]:
    """The backend's warnings about this machine; none when no backend is installed."""
    from grid_core.backends import load_backend
    from grid_core.errors import GridError

    try:
        return load_backend(cluster.config).stray_engines(cluster)
    except GridError:
        return []


def _print_report(report: list[dict[str, Any]]) -> None:
    rows, problems = [], []
    for row in report:
        by_name = {c["name"]: c for c in row["checks"]}
        cells: list[Any] = [row["node"], row["host"]]
        for name in CHECKS:
            check = by_name.get(name)
            if check is None:
                cells.append(styled("-", "dim"))
            elif check["ok"]:
                shown = check["detail"].split(" ")[0] if name in ("python", "ray", "gpu") else "ok"  # versions
                cells.append(styled(shown, "green"))
            else:
                cells.append(styled("FAIL", "red"))
                problems.append(join((row["node"], "bold"), f" {name.replace('_', ' ')}: {check['detail']}"))
        rows.append(cells)
    console().print(table(("node", "host", *(c.replace("_", " ") for c in CHECKS)), rows))
    for line in problems:
        console().print(line)
    healthy = sum(row["ok"] for row in report)
    say((f"{healthy} of {len(report)} nodes ready", "green" if healthy == len(report) else "red"))
