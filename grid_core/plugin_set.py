"""One plugin set on every node: which plugin distributions count where, and which node differs.

A plugin runs where its hook is used, so a distribution counts on the nodes its registrations
run on (the widest of them):
- transports and commands run in the CLI, on this machine only: a node may lack them or have
  another version;
- offload policies and schedulers (the queue's order and placement) run in the grid service, on
  the head;
- metrics sources run in every node's agent, backends on every node, and a service request runs
  in the service but starts work (actors, tasks) that Ray may place on any node: every node.
grid-core counts on every node. A distribution whose plugins failed or are incompatible here runs
nowhere from here, so it counts nowhere. A node that has a distribution this machine does not
(a metrics source installed on the workers only) is named, never refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig, NodeConfig
    from grid_core.plugins import PluginHost
    from grid_core.types import PluginDrift, PluginMatrix, StatusBasis

CORE = "grid-core"
HERE, HEAD, NODES = "this machine", "the head", "every node"
PLACES = {
    "grid_transports": HERE,
    "grid_commands": HERE,
    "grid_schedulers": HEAD,
    "grid_offload_policies": HEAD,
    "grid_service_ops": NODES,
    "grid_backends": NODES,
    "grid_metrics_sources": NODES,
}
_WIDTH = {HERE: 0, HEAD: 1, NODES: 2}

# Run with a node's Python (`python -c`), standard library only: its grid-core and every distribution
# with an entry point in the group `grid`, none of them imported, as one JSON line.
PROBE = """\
import json
from importlib import metadata
found = {}
for ep in metadata.entry_points(group="grid"):
    if ep.dist is not None:
        found[ep.dist.name] = ep.dist.version
try:
    found["grid-core"] = metadata.version("grid-core")
except metadata.PackageNotFoundError:
    pass
print(json.dumps(found, sort_keys=True))
"""
# $1: PROBE, then the interpreters grid would use on the node, in order; the first that exists answers.
SHELL_PROBE = 'probe=$1; shift; for py; do command -v "$py" >/dev/null 2>&1 && exec "$py" -c "$probe"; done; ' \
              'echo "no Python at $*" >&2; exit 127'


def installed() -> dict[str, str]:
    """This environment's grid-core and plugin distributions with their versions, as PROBE finds
    them on a node (what the service records at its start); nothing is imported."""
    import contextlib
    from importlib import metadata

    found = {ep.dist.name: ep.dist.version for ep in metadata.entry_points(group="grid") if ep.dist is not None}
    with contextlib.suppress(metadata.PackageNotFoundError):
        found[CORE] = metadata.version(CORE)
    return found


class Here:
    """This machine's plugin distributions: version, where each counts, and its plugins' status."""

    def __init__(self, host: PluginHost | None = None) -> None:
        from grid_core import plugins

        records = (host or plugins.host()).records.values()
        self.version: dict[str, str] = {}
        self.counts_on: dict[str, str | None] = {}  # None: counts nowhere (its plugins do not run here)
        self.status: dict[str, str] = {}
        core = None
        for r in records:
            if r.distribution == CORE:  # the built-ins' record carries the core's version (no metadata read)
                core = r.version
                continue
            self.version[r.distribution] = r.version
            if r.status != "active":
                self.status[r.distribution] = r.status
            places = [PLACES.get(hook, NODES) for hook, names in r.hooks.items() if names]
            widest = max(places, key=_WIDTH.__getitem__, default=HERE) if r.status == "active" else None
            before = self.counts_on.get(r.distribution, None)
            if r.distribution not in self.counts_on or (
                    widest is not None and (before is None or _WIDTH[widest] > _WIDTH[before])):
                self.counts_on[r.distribution] = widest
        if core is None:  # every built-in blocked
            import grid_core

            core = str(grid_core.__version__)
        self.version[CORE], self.counts_on[CORE] = core, NODES

    def counts(self, distribution: str, is_head: bool) -> bool:
        place = self.counts_on.get(distribution)
        return place == NODES or (place == HEAD and is_head)

    def differences(self, node: str, is_head: bool, theirs: Mapping[str, str | None]) -> list[str]:
        """Why the node's plugin set cannot run this machine's: one line per distribution that
        counts on it and is missing or at another version there, each with the fix."""
        out = []
        for dist, version in sorted(self.version.items()):
            have = theirs.get(dist)
            if have == version or not self.counts(dist, is_head):
                continue
            there = f"{dist} {have}" if have else f"no {dist}"
            out.append(f"{there} on {node}, {version} here (it counts on {self.counts_on[dist]}): "
                       f"run `grid cluster install --node {node}`")
        return out

    def extras(self, theirs: Mapping[str, str | None]) -> list[str]:
        """The node's distributions that this machine does not have, as "name version"."""
        return [f"{d} {v}" for d, v in sorted(theirs.items()) if d not in self.version and v]

    def basis(self, config: ClusterConfig) -> StatusBasis:
        """What `cluster status` compares with the service's plugin set, kept with the shortcut."""
        from grid_core.types import StatusBasis

        return StatusBasis(source=config.source, versions=self.version, counts_on=self.counts_on)

    def drift(self, started_with: Mapping[str, str]) -> PluginDrift | None:
        """What changed here since a service started with `started_with`, among what counts on
        the head; None when nothing did."""
        return drift(self.version, self.counts_on, started_with)


def drift(version: Mapping[str, str], counts_on: Mapping[str, str | None],
          started_with: Mapping[str, str]) -> PluginDrift | None:
    """Here.drift, from its versions and places as kept (a StatusBasis)."""
    from grid_core.types import PluginChange, PluginDrift

    changes, restart = [], set()
    for dist in sorted({*started_with, *version}):
        now, then = version.get(dist), started_with.get(dist)
        place = counts_on.get(dist, NODES)  # one that is gone from here: assume the widest
        if now == then or place in (HERE, None) or (dist == CORE and now is None):
            continue
        changes.append(PluginChange(distribution=dist, started_with=then, now=now))
        restart |= {"service", "agents"} if place == NODES else {"service"}
    if not changes:
        return None
    return PluginDrift(changes=tuple(changes), restart=tuple(sorted(restart, reverse=True)))


def drift_line(drift: PluginDrift) -> str:
    """The drift as one line for the status commands."""
    changed = ", ".join(f"{c.distribution} {c.started_with or 'absent'} -> {c.now or 'removed'}" for c in drift.changes)
    return (f"the plugin set here changed since the grid service started ({changed}): restart the "
            f"{' and the '.join(drift.restart)} to use it with `{drift.fix}`")


def probe(cluster: Cluster, node: NodeConfig) -> dict[str, str | None]:
    """A node's grid-core and plugin distributions, asked of its Python through its transport."""
    from grid_core.cluster import python_candidates
    from grid_core.errors import GridError

    result = cluster.transport(node).run(
        ["sh", "-c", SHELL_PROBE, "grid-plugins", PROBE, *python_candidates(cluster.config, node)], timeout=60)
    lines = result.stdout.strip().splitlines()
    if result.exit_status != 0 or not lines:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.exit_status}"])[-1]
        raise GridError(why)
    try:
        found: dict[str, str | None] = json.loads(lines[-1])
    except ValueError:
        raise GridError(f"unexpected answer: {lines[-1][:200]}") from None
    return found


def matrix(cluster: Cluster, nodes: Sequence[NodeConfig] | None = None) -> PluginMatrix:
    """Every node's plugin set beside this machine's, asked of all nodes at once."""
    from grid_core.types import PluginMatrix, PluginRow

    config = cluster.config
    chosen = list(config.nodes if nodes is None else nodes)
    here = Here()
    sets: dict[str, dict[str, str | None]] = {}
    errors: dict[str, str] = {}
    for out in cluster.fan_out(chosen, lambda n: probe(cluster, n)):
        if out.error is None:
            sets[out.node.name] = out.value
        else:
            errors[out.node.name] = out.error
    names = [n.name for n in chosen]
    heads = {n.name for n in chosen if n.is_head}
    rows, wrong = [], []
    for dist in sorted({*here.version, *(d for found in sets.values() for d in found)}):
        versions = {name: sets[name].get(dist) for name in names if name in sets}
        differs = tuple(name for name, v in versions.items()
                        if dist in here.version and v != here.version[dist] and here.counts(dist, name in heads))
        wrong += [n for n in differs if n not in wrong]
        counts_on = here.counts_on.get(dist, "") if dist in here.version else "not installed here"
        rows.append(PluginRow(distribution=dist, here=here.version.get(dist), counts_on=counts_on or "nowhere",
                              status=here.status.get(dist, "active"), nodes=versions, differs=differs))
    fix = None
    if wrong:
        fix = "grid cluster install " + " ".join(f"--node {n}" for n in names if n in wrong)
    return PluginMatrix(cluster=config.name, nodes=tuple(names), plugins=tuple(rows), errors=errors, fix=fix)
