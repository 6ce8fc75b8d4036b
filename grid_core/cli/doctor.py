"""`grid doctor`: can grid use every node? One probe per node, all nodes at once, a reason per failure.

The probe is a single command (one round trip after the connection): the node's Python reports
its version, then runs the backend's engine probe (`Backend.engine_probe`), which reports whether
the compute engine is usable there and at which version; the shell reports nvidia-smi or
libnvidia-ml. The backend judges its engine's answer beside the head's (`Backend.engine_check`,
a check it names); the core's checks know no engine. When the configured backend cannot be
loaded, its check is skipped with a warning that says why, and every other check still runs.

Connection problems are told apart by the transport's error class: a HostKeyError means the node
answered but its key is not trusted; an AuthError that the key was fine but the login was
refused; any other TransportError that the node was not reached at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import click

from grid_core.cli.context import config_option, json_option, print_json, state
from grid_core.cli.output import console, join, say, styled, table
from grid_core.cluster import python_candidates
from grid_core.gpus import node_gpus, summary
from grid_core.record import record
from grid_core.types import AuthError, Check, CommandResult, HostKeyError, TransportError

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import NodeConfig
    from grid_core.types import Backend, GpuInfo

MIN_PYTHON = (3, 11)
PROBE_TIMEOUT = 60.0  # a cold import of the engine on a slow disk takes seconds
# The table's columns; the backend's engine check (named by the backend) goes before "gpu".
CHECKS = ("reachable", "host_key", "auth", "python", "plugins", "gpu")
CONNECTION_CHECKS = ("reachable", "host_key", "auth")  # the others' cells show a version

# Kept to Python 2/3-compatible syntax, so that an old interpreter reports its version
# instead of a SyntaxError. argv[1]: the backend's engine probe ("" without a backend), run in a
# namespace of its own; whatever it raises (a SyntaxError included) is its engine_error.
PYTHON_PROBE = """\
import sys
print("python=%d.%d.%d" % tuple(sys.version_info[:3]))
if sys.argv[1:] and sys.argv[1]:
    try:
        exec(sys.argv[1], {"__name__": "grid_engine_probe"})
    except Exception as exc:
        print("engine_error=" + (type(exc).__name__ + ": " + str(exc)).replace("\\n", " ")[:300])
try:
    import json
    from importlib import metadata
    found = dict((ep.dist.name, ep.dist.version) for ep in metadata.entry_points(group="grid") if ep.dist)
    found["grid-core"] = metadata.version("grid-core")
    print("plugins=" + json.dumps(found))
except Exception:
    pass
try:
    from grid_core.builtin.nvml_metrics import READER
    nvml = READER.status()
    print(("nvml=" if nvml.available else "nvml_error=") + nvml.line())
    import json
    print("gpus=" + json.dumps([[g.index, g.name, g.memory_total_bytes, g.uuid] for g in READER.gpus()]))
except Exception:
    pass
"""
# $1: PYTHON_PROBE, $2: the backend's engine probe, then the interpreters grid would use, in order
# (the first that exists answers); passed as arguments, never pasted into the script.
SHELL_PROBE = """\
probe=$1; engine=$2; shift 2; found=
for py; do
  command -v "$py" >/dev/null 2>&1 || continue
  echo "interpreter=$py"; "$py" -c "$probe" "$engine" || echo "python_failed=$?"; found=1; break
done
[ -n "$found" ] || echo "python_missing=1"
if command -v nvidia-smi >/dev/null 2>&1; then echo "nvidia=nvidia-smi"
elif { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libnvidia-ml\\.so'; then echo "nvidia=libnvidia-ml"
fi
exit 0
"""


@record
class Probe:
    """What one node answered, or the transport error that stopped it."""

    python: str
    facts: dict[str, str] = attrs.Factory(dict)
    stderr: str = ""
    error: TransportError | None = None
    other_error: str | None = None  # a failure before the transport ran (unknown transport, bad config)


def probe(cluster: Cluster, node: NodeConfig, engine: str = "") -> Probe:
    """Run the probe on a node, with the backend's engine probe `engine` ("": none); transport
    errors are kept (with their class), never raised."""
    candidates = python_candidates(cluster.config, node)
    python = " or ".join(candidates)
    try:
        result: CommandResult = cluster.transport(node).run(
            ["sh", "-c", SHELL_PROBE, "grid-doctor", PYTHON_PROBE, engine, *candidates], timeout=PROBE_TIMEOUT
        )
    except TransportError as exc:
        return Probe(python, error=exc)
    facts = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return Probe(facts.get("interpreter", python), facts, result.stderr.strip())


def checks_for(node: NodeConfig, found: Probe, head_facts: Mapping[str, str] | None, is_head: bool,
               backend: Backend | None = None) -> list[Check]:
    """The node's checks from its probe, beside the head's facts (None: the head did not answer);
    checks that could not run are left out, and so is the engine's without a backend."""
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
    return out + _python_checks(node, found, head_facts, is_head, backend)


def _python_checks(node: NodeConfig, found: Probe, head_facts: Mapping[str, str] | None, is_head: bool,
                   backend: Backend | None) -> list[Check]:
    facts, python = found.facts, found.python
    head_python = (head_facts or {}).get("python")
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
        elif not is_head and backend is not None and (problem := backend.python_problem(version, head_python)):
            out.append(Check("python", False, f"{version} ({python}); {problem}"))
        else:
            out.append(Check("python", True, f"{version} ({python})"))
        if "plugins" in facts:
            out.append(_plugins_check(node, facts["plugins"], is_head))
        if backend is not None:
            out.append(backend.engine_check(facts, head_facts, is_head=is_head, python=python))
    nvml, why_not = facts.get("nvml"), facts.get("nvml_error")  # the driver's and NVML's versions, or why not
    models, note = node_gpus(node, _measured(facts.get("gpus")))
    kinds = (f"; {summary(models)}" if models and models[0].model else "") + (f"; warning: {note}" if note else "")
    if (node.gpu_total or 0) > 0:
        found_by = facts.get("nvidia")
        if found_by:
            detail = (nvml or f"{found_by} present") + (f"; {why_not}" if why_not else "") + kinds
        else:
            declared = f"gpus = [{summary(models)}]" if node.gpus else f"gpu_count = {node.gpu_count}"
            detail = (f"{declared} but neither nvidia-smi nor libnvidia-ml is installed"
                      + (f" ({why_not})" if why_not else ""))
        out.append(Check("gpu", bool(found_by), detail))
    elif nvml:  # GPUs the config does not declare: worth knowing, never a failure
        out.append(Check("gpu", True, nvml + kinds))
    return out


def _measured(text: str | None) -> tuple[GpuInfo, ...]:
    """The probe's `gpus=` line (NVML's answer on the node) as records; () without one."""
    import json

    from grid_core.types import GpuInfo

    try:
        rows = json.loads(text) if text else []
        return tuple(GpuInfo(int(i), str(name), int(total), uuid, "driver") for i, name, total, uuid in rows)
    except (ValueError, TypeError):
        return ()


def _plugins_check(node: NodeConfig, found: str, is_head: bool) -> Check:
    """The node's grid-core and plugin distributions beside this machine's, where they count there
    (grid_core.plugin_set)."""
    import json

    from grid_core.plugin_set import Here

    here = Here()
    theirs = json.loads(found)
    problems = here.differences(node.name, is_head, theirs)
    if problems:
        return Check("plugins", False, "; ".join(problems))
    extra = here.extras(theirs)
    return Check("plugins", True, "same as here where they count" + (f"; also has {', '.join(extra)}" if extra else ""))


def diagnose(cluster: Cluster, parallel: int | None = None, backend: Backend | None = None) -> list[dict[str, Any]]:
    """Every node's checks, in config order, as plain data; the engine's only with a backend."""
    nodes = list(cluster.config.nodes)
    engine = backend.engine_probe() if backend is not None else ""
    probes: dict[str, Probe] = {}
    for out in cluster.fan_out(nodes, lambda node: probe(cluster, node, engine), parallel):
        probes[out.node.name] = out.value if out.error is None else \
            Probe(" or ".join(python_candidates(cluster.config, out.node)), other_error=out.error)
    head = cluster.config.head
    head_facts = probes[head.name].facts or None
    report = []
    for node in nodes:
        checks = checks_for(node, probes[node.name], head_facts, node.name == head.name, backend)
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

    Per node: reachable, host key known, login accepted, Python >= 3.11, grid-core and the plugins
    that count there at this machine's versions (`grid plugins list --cluster`), the backend's check of
    its compute engine there (usable, and the same version as the head's), and for nodes with
    GPUs in the config nvidia-smi or NVML, with the GPUs' models and memory. Without the backend's
    plugin its check is skipped, with a warning. Exits 1 when any check fails.
    """
    with state().cluster() as cluster:
        backend, why_not = _backend(cluster)
        report = diagnose(cluster, parallel, backend)
        warnings = _stray_engines(cluster, backend)
        channel = _service_channel(cluster, backend)
    if why_not is not None:
        warnings.insert(0, f"the engine check was skipped: {why_not}")
    from grid_core.access import jobs_run_as

    if (who := jobs_run_as(cluster.config)) is not None:
        warnings.append(who)
    for warning in warnings:  # they fail no check: the cluster works, a program run without grid may not
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(report)
    else:
        _print_report(report)
        if channel:
            say(f"service channel from here: {channel}")
    if not all(row["ok"] for row in report):
        raise SystemExit(1)


def _backend(cluster: Cluster) -> tuple[Backend | None, str | None]:
    """The configured backend, or None and why it cannot be loaded (e.g. its plugin is not installed)."""
    from grid_core.backends import load_backend
    from grid_core.errors import GridError

    try:
        return load_backend(cluster.config), None
    except GridError as exc:
        return None, str(exc)


def _service_channel(cluster: Cluster, backend: Backend | None) -> str | None:
    """How commands reach the backend's service on the head from here, where it says (docs/remote.md)."""
    from grid_core.errors import GridError

    describe = getattr(backend, "service_channel", None)
    try:
        return describe(cluster) if describe is not None else None
    except (GridError, TransportError):
        return None


def _stray_engines(cluster: Cluster, backend: Backend | None) -> list[str]:
    """The backend's warnings about this machine and about the cluster; none without a backend."""
    from grid_core.errors import GridError

    if backend is None:
        return []
    rejoin = getattr(backend, "rejoin_problems", None)  # workers that cannot come back by themselves
    try:
        return backend.stray_engines(cluster) + (rejoin(cluster) if rejoin is not None else [])
    except GridError:
        return []


def _columns(report: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table's checks: the core's, with the backend's (named by it, as the report has them) before "gpu"."""
    engine = dict.fromkeys(c["name"] for row in report for c in row["checks"] if c["name"] not in CHECKS)
    at = CHECKS.index("gpu")
    return (*CHECKS[:at], *engine, *CHECKS[at:])


def _print_report(report: list[dict[str, Any]]) -> None:
    names = _columns(report)
    rows, problems = [], []
    for row in report:
        by_name = {c["name"]: c for c in row["checks"]}
        cells: list[Any] = [row["node"], row["host"]]
        for name in names:
            check = by_name.get(name)
            if check is None:
                cells.append(styled("-", "dim"))
            elif check["ok"]:
                shown = "ok" if name in CONNECTION_CHECKS else check["detail"].split(" ")[0]  # versions
                cells.append(styled(shown, "green"))
            else:
                cells.append(styled("FAIL", "red"))
                problems.append(join((row["node"], "bold"), f" {name.replace('_', ' ')}: {check['detail']}"))
        rows.append(cells)
    console().print(table(("node", "host", *(c.replace("_", " ") for c in names)), rows))
    for line in problems:
        console().print(line)
    healthy = sum(row["ok"] for row in report)
    say((f"{healthy} of {len(report)} nodes ready", "green" if healthy == len(report) else "red"))
