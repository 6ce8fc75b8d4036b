"""Boosts: a node borrowing capacity on another, as plain data and the rules that place them.

The engine (e.g. the ray backend) turns a planned boost into a reservation on the source node
that only the target's work may use; this module decides which source, what to preempt, and when
a boost ends. Nothing here talks to a cluster, so the rules are tested as pure functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from grid_core.config import ClusterConfig
from grid_core.errors import GridError

PRIORITIES = {"low": 0, "normal": 1, "high": 2, "critical": 3}
RESOURCES = ("cpu", "gpu", "memory")  # memory in GB
RAY_NAMES = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}
State = Literal["active", "released", "expired", "preempted"]
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@attrs.frozen
class Boost:
    id: str
    target: str
    source: str
    resource: str
    amount: float
    priority: str
    created: float
    expires_at: float | None
    state: State = "active"
    note: str = ""

    def public(self) -> dict[str, object]:
        return attrs.asdict(self)


@attrs.frozen
class Plan:
    """Where a boost goes and which lower-priority boosts it displaces there."""

    source: str
    preempt: tuple[Boost, ...] = ()


def parse_duration(text: str) -> float:
    """`90s`, `30m`, `2h`, `1h30m`, `1d` or plain seconds, as seconds."""
    text = text.strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise GridError(f"duration {text!r}: use seconds or forms like 90s, 30m, 2h, 1h30m") from None
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise GridError(f"duration {text!r}: must be positive")
    return seconds


def check_request(resource: str, amount: float, priority: str) -> None:
    if resource not in RESOURCES:
        raise GridError(f"unknown resource {resource!r} (use cpu, gpu or memory)")
    if not math.isfinite(amount) or amount <= 0:
        raise GridError(f"amount must be a positive number, got {amount!r}")
    if priority not in PRIORITIES:
        raise GridError(f"unknown priority {priority!r} (use {', '.join(PRIORITIES)})")


def share_limits(config: ClusterConfig) -> dict[str, dict[str, float]]:
    """What each node lets others borrow, from the seed's per-node `resource_sharing` block."""
    limits: dict[str, dict[str, float]] = {}
    for node in config.nodes:
        sharing = node.resource_sharing
        if sharing is None:
            continue
        if not sharing.can_share:
            limits[node.name] = dict.fromkeys(RESOURCES, 0.0)
            continue
        caps = {"cpu": sharing.max_share_cpu, "gpu": sharing.max_share_gpu, "memory": sharing.max_share_memory_gb}
        limits[node.name] = {k: v for k, v in caps.items() if v is not None}
    return limits


def plan(
    target: str,
    resource: str,
    amount: float,
    priority: str,
    free: Mapping[str, Mapping[str, float]],
    active: Sequence[Boost],
    source: str | None = None,
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> Plan:
    """Choose the source (given, else the node with most room) and what must be preempted.

    `free[node][resource]` is what the engine has free now; boosts already hold theirs, so
    preempting one gives its amount back. A node's sharing limit caps all boosts from it.
    """
    check_request(resource, amount, priority)
    limits = limits or {}
    rank = PRIORITIES[priority]
    if source is not None and source not in free:
        raise GridError(f"no node named {source!r} can lend (nodes: {', '.join(sorted(free))})")
    if source == target:
        raise GridError("a node cannot borrow from itself; choose another --source")
    candidates = [source] if source else [n for n in free if n != target]

    def option(node: str) -> Plan | None:
        mine = [b for b in active if b.source == node and b.resource == resource and b.state == "active"]
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

    options = [(node, p) for node in candidates if (p := option(node)) is not None]
    if not options:
        best = max(candidates, key=lambda n: free[n].get(resource, 0.0), default=None)
        most = f"; most free: {best} with {free[best].get(resource, 0.0):g}" if best else ""
        raise GridError(f"no node can lend {amount:g} {resource} to {target} at priority {priority}{most}")
    # Prefer no preemption, then fewer preemptions, then the node with the most free.
    return min(options, key=lambda o: (len(o[1].preempt), -free[o[0]].get(resource, 0.0)))[1]


def expired(boosts: Sequence[Boost], now: float) -> list[Boost]:
    """Active boosts whose time is up."""
    return [b for b in boosts if b.state == "active" and b.expires_at is not None and b.expires_at <= now]
