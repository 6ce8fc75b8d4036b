"""`grid plugins list --cluster`'s records: each plugin distribution, where it counts, and the
version each node has."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from grid_core.record import record

__all__ = ("PluginChange", "PluginDrift", "PluginMatrix", "PluginRow")


@record(kw_only=True)
class PluginRow:
    """One distribution: this machine's version (None: not installed here), where it counts
    ("every node", "the head", "this machine"), and each asked node's version (None: missing)."""

    distribution: str
    here: str | None
    counts_on: str
    status: str = "active"  # this machine's plugins of it: active, or why not (failed, incompatible, ...)
    nodes: Mapping[str, str | None] = attrs.field(factory=dict)
    differs: tuple[str, ...] = ()  # nodes where it counts and is not at this machine's version


@record(kw_only=True)
class PluginMatrix:
    """Every node's plugin set beside this machine's; `fix` is the one command that aligns them."""

    cluster: str
    nodes: tuple[str, ...]
    plugins: tuple[PluginRow, ...]
    errors: Mapping[str, str] = attrs.field(factory=dict)  # nodes that could not be asked, and why
    fix: str | None = None


@record(kw_only=True)
class PluginChange:
    """A distribution whose version here is not the one the running service started with."""

    distribution: str
    started_with: str | None
    now: str | None


@record(kw_only=True)
class PluginDrift:
    """What changed in this machine's plugin set since the grid service started, and what must
    restart to use it ("service", "agents")."""

    changes: tuple[PluginChange, ...]
    restart: tuple[str, ...]
    fix: str = "grid cluster start --restart-service"
