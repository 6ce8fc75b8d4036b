"""Boosts: a node borrowing capacity on another, as plain data and the rules that place them.

The engine (e.g. the ray backend) turns a planned boost into a reservation on the source node
that only the target's work may use; this module decides which source, what to preempt, and when
a boost ends. Nothing here talks to a cluster, so the rules are tested as pure functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from grid_core.config import ClusterConfig
from grid_core.errors import GridError
from grid_core.record import record
from grid_core.types import Boost

if TYPE_CHECKING:
    from grid_core.types import NodeMetrics

PRIORITIES = {"low": 0, "normal": 1, "high": 2, "critical": 3}
RESOURCES = ("cpu", "gpu", "memory")  # memory in GB


@record
class Plan:
    """Where a boost goes and which lower-priority boosts it displaces there."""

    source: str
    preempt: tuple[Boost, ...] = ()


def parse_duration(text: str) -> float:
    """A boost's --duration as seconds (grid_core.queue.words reads it, as it reads --time)."""
    from grid_core.queue.words import parse_duration as seconds

    try:
        return seconds(text)
    except ValueError as exc:
        raise GridError(f"duration {exc}") from None


def check_request(resource: str, amount: float, priority: str) -> None:
    if resource not in RESOURCES:
        raise GridError(f"unknown resource {resource!r} (use cpu, gpu or memory)")
    if not math.isfinite(amount) or amount <= 0:
        raise GridError(f"amount must be a positive number, got {amount!r}")
    if priority not in PRIORITIES:
        raise GridError(f"unknown priority {priority!r} (use {', '.join(PRIORITIES)})")


def share_limits(config: ClusterConfig) -> dict[str, dict[str, float]]:
    """What each node lets others borrow, and when, as plan() reads it. Per node:
    `cpu`, `gpu`, `memory`: the most all boosts from it may hold (the seed's `max_share_*`; 0 when
    `can_share` is false); `priority`: its rank as a source (higher first); and, where the config
    sets them, `max_boosts` (boost.max_per_source) and boost.lend's rules, by their names there.

    Raises GridError when boosts are off (boost.enabled = false).
    """
    if not config.boost.enabled:
        raise GridError(f"boosts are off in {config.source} (boost.enabled = false)")
    rules = {k: float(v) for k, v in attrs.asdict(config.boost.lend).items() if v is not None}
    if config.boost.max_per_source is not None:
        rules["max_boosts"] = float(config.boost.max_per_source)
    limits: dict[str, dict[str, float]] = {}
    for node in config.nodes:
        sharing = node.resource_sharing
        caps: dict[str, float | None] = {}
        if sharing is not None and not sharing.can_share:
            caps = dict.fromkeys(RESOURCES, 0.0)
        elif sharing is not None:
            caps = {"cpu": sharing.max_share_cpu, "gpu": sharing.max_share_gpu, "memory": sharing.max_share_memory_gb}
        limits[node.name] = {**{k: v for k, v in caps.items() if v is not None}, "priority": node.priority, **rules}
    return limits


def _refusal(rules: Mapping[str, float], idle: Mapping[str, float], reading: NodeMetrics | None) -> str | None:
    """Why a node may not lend now under boost.lend's rules, or None. `idle` is what its own work
    leaves: free now plus what its boosts hold. Without a reading, the percent rules are not applied."""
    checks: list[tuple[str, float | None, str]] = [
        ("cpu_min_free", idle.get("cpu", 0.0), "CPUs free"),
        ("memory_min_free_gb", idle.get("memory", 0.0), "GB of memory free")]
    if reading is not None:
        free_mb = max(((g.memory_total_bytes - g.memory_used_bytes) / 2**20 for g in reading.gpus), default=None)
        checks += [("cpu_percent_max", reading.cpu_percent, "% CPU in use"),
                   ("memory_percent_max", reading.memory_percent, "% memory in use"),
                   ("gpu_percent_max", reading.gpu_percent, "% GPU in use"),
                   ("gpu_memory_min_free_mb", free_mb, "MB of GPU memory free")]
    for key, have, what in checks:
        if key not in rules or have is None:
            continue
        limit = rules[key]
        if have > limit if key.endswith("_max") else have < limit:
            return f"{have:g}{'' if what.startswith('%') else ' '}{what} (boost.lend.{key} = {limit:g})"
    return None


def plan(
    target: str,
    resource: str,
    amount: float,
    priority: str,
    free: Mapping[str, Mapping[str, float]],
    active: Sequence[Boost],
    source: str | None = None,
    limits: Mapping[str, Mapping[str, float]] | None = None,
    metrics: Mapping[str, NodeMetrics | None] | None = None,
) -> Plan:
    """Choose the source (given, else the best candidate) and what must be preempted.

    `free[node][resource]` is what the engine has free now; boosts already hold theirs, so
    preempting one gives its amount back. `limits` is share_limits(): a node's sharing cap
    bounds all boosts from it, `max_boosts` how many it serves at once, and boost.lend's rules
    (against `metrics`, each node's last reading) whether it may lend at all. Among the nodes
    that can, prefer no preemption, then fewer, then the higher `priority`, then the most free.
    """
    check_request(resource, amount, priority)
    limits, metrics = limits or {}, metrics or {}
    rank = PRIORITIES[priority]
    if source is not None and source not in free:
        raise GridError(f"no node named {source!r} can lend (nodes: {', '.join(sorted(free))})")
    if source == target:
        raise GridError("a node cannot borrow from itself; choose another --source")
    candidates = [source] if source else [n for n in free if n != target]

    def serving(node: str) -> list[Boost]:
        return [b for b in active if b.source == node and b.state == "active"]

    def refusal(node: str) -> str | None:
        rules, mine = limits.get(node, {}), serving(node)
        if len(mine) >= rules.get("max_boosts", math.inf):
            return f"it serves {len(mine)} boosts already (boost.max_per_source = {rules['max_boosts']:g})"
        idle = {r: free[node].get(r, 0.0) + sum(b.amount for b in mine if b.resource == r) for r in RESOURCES}
        return _refusal(rules, idle, metrics.get(node))

    def option(node: str) -> Plan | None:
        mine = [b for b in serving(node) if b.resource == resource]
        cap = limits.get(node, {}).get(resource, math.inf) - sum(b.amount for b in mine)
        room = min(free[node].get(resource, 0.0), cap)
        if room >= amount:
            return Plan(node)
        displaced: list[Boost] = []
        for boost in sorted((b for b in mine if PRIORITIES[b.priority] < rank),
                            key=lambda b: (PRIORITIES[b.priority], -b.created)):
            displaced.append(boost)
            room += boost.amount
            if room >= amount:
                return Plan(node, tuple(displaced))
        return None

    refused = {node: why for node in candidates if (why := refusal(node)) is not None}
    if source is not None and source in refused:
        raise GridError(f"{source} cannot lend now: {refused[source]}")
    options = [(node, p) for node in candidates if node not in refused and (p := option(node)) is not None]
    if not options:
        best = max(candidates, key=lambda n: free[n].get(resource, 0.0), default=None)
        most = f"; most free: {best} with {free[best].get(resource, 0.0):g}" if best else ""
        skipped = "".join(f"; {node} may not lend: {why}" for node, why in refused.items())
        raise GridError(f"no node can lend {amount:g} {resource} to {target} at priority {priority}{most}{skipped}")
    return min(options, key=lambda o: (len(o[1].preempt), -limits.get(o[0], {}).get("priority", 0.0),
                                       -free[o[0]].get(resource, 0.0)))[1]


def expires_at(created: float, duration: float | None) -> float | None:
    """When a boost made at `created` for `duration` seconds ends; None (until released) without one."""
    return created + duration if duration else None


def expired(boosts: Sequence[Boost], now: float) -> list[Boost]:
    """Active boosts whose time is up: the one place expiry is decided."""
    return [b for b in boosts if b.state == "active" and b.expires_at is not None and b.expires_at <= now]
