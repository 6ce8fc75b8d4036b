"""The plugin manager: built-ins first, then entry points in the group `grid`, into registries.

A plugin that fails to import or to register is recorded as failed and skipped; nothing else
breaks. `GRID_DISABLE_PLUGINS=a,b` blocks plugins by name and `GRID_NO_PLUGINS=1` (or
`grid --no-plugins`) loads only the built-ins.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, Literal, TypeVar

import attrs
import pluggy

from grid_core import __version__, hookspecs
from grid_core.errors import PluginError
from grid_core.types import (
    GridBackend,
    GridCommand,
    GridMetricsSource,
    GridOffloadPolicy,
    GridScheduler,
    GridTransport,
)

log = logging.getLogger(__name__)

# Each built-in is one module registered as a plugin, so the core uses its own contract.
BUILTINS = {
    "local": "grid_core.builtin.local",
    "psutil": "grid_core.builtin.psutil_metrics",
    "procfs": "grid_core.builtin.procfs_metrics",
    "least-loaded": "grid_core.builtin.least_loaded",
    "commands": "grid_core.builtin.commands",
}

# hook name -> (kind shown to users, registration type)
KINDS: dict[str, tuple[str, type]] = {
    "grid_transports": ("transport", GridTransport),
    "grid_backends": ("backend", GridBackend),
    "grid_schedulers": ("scheduler", GridScheduler),
    "grid_offload_policies": ("offload policy", GridOffloadPolicy),
    "grid_metrics_sources": ("metrics source", GridMetricsSource),
    "grid_commands": ("command", GridCommand),
}

R = TypeVar("R")
Status = Literal["active", "blocked", "failed"]


@attrs.define
class PluginRecord:
    """One plugin as `grid plugins list` shows it."""

    name: str
    distribution: str
    version: str
    package: str  # top-level import package, used to blame a plugin for an unexpected error
    status: Status = "active"
    reason: str = ""
    hooks: dict[str, list[str]] = attrs.Factory(dict)

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version})"


@attrs.frozen
class Entry:
    registration: Any
    plugin: PluginRecord


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get("GRID_DISABLE_PLUGINS", "").split(",") if n.strip()}


class PluginHost:
    """Loads plugins and holds what they register, per kind, each with the plugin behind it."""

    def __init__(self, *, no_plugins: bool = False, disabled: Iterable[str] | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._entries: dict[str, dict[str, list[Entry]]] = {hook: {} for hook in KINDS}
        blocked = disabled_names() if disabled is None else set(disabled)
        for name, module in BUILTINS.items():
            record = PluginRecord(name, "grid-core", __version__, "grid_core")
            self._add(record, blocked, lambda module=module: importlib.import_module(module))
        if not no_plugins and os.environ.get("GRID_NO_PLUGINS", "") not in ("1", "true", "yes"):
            for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
                dist = ep.dist
                record = PluginRecord(
                    ep.name,
                    dist.name if dist else "?",
                    dist.version if dist else "?",
                    ep.module.split(".")[0],
                )
                self._add(record, blocked, ep.load)

    def add(self, plugin: object, name: str, distribution: str = "<in-memory>", version: str = "0") -> PluginRecord:
        """Register an object as a plugin (tests, embedding); returns its record."""
        package = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
        record = PluginRecord(name, distribution, version, str(package).split(".")[0])
        self._add(record, set(), lambda: plugin)
        return record

    def _add(self, record: PluginRecord, blocked: set[str], load: Any) -> None:
        if record.name in self.records:
            other = self.records[record.name]
            raise PluginError(f"two plugins are named {record.name!r}: {other.label} and {record.label}")
        self.records[record.name] = record
        if record.name in blocked:
            record.status, record.reason = "blocked", "blocked by GRID_DISABLE_PLUGINS"
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()  # an implementation of an unknown hook (a typo) fails here
        except Exception as exc:  # any failure of a plugin is its own, never the CLI's
            self._fail(record, exc, stage="load")
            return
        for hook, (_kind, expected) in KINDS.items():
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != record.name:
                    continue
                try:
                    items = list(impl.function() or ())
                    for item in items:
                        if not isinstance(item, expected):
                            raise TypeError(f"{hook} yielded {item!r}, expected a {expected.__name__}")
                except Exception as exc:
                    self._fail(record, exc, stage="register")
                    return
                for item in items:
                    self._entries[hook].setdefault(item.name, []).append(Entry(item, record))
                record.hooks[hook] = [item.name for item in items]
        log.debug("loaded %s: %s", record.label, record.hooks)

    def _fail(self, record: PluginRecord, exc: Exception, stage: str) -> None:
        record.status, record.reason = "failed", f"{stage} error: {type(exc).__name__}: {exc}"
        log.warning("%s failed to %s: %s", record.label, stage, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        if self.pm.is_registered(self.pm.get_plugin(record.name)):
            self.pm.unregister(name=record.name)
        for by_name in self._entries.values():
            for name in list(by_name):
                by_name[name] = [e for e in by_name[name] if e.plugin is not record]
                if not by_name[name]:
                    del by_name[name]
        record.hooks.clear()

    def conflicts(self) -> list[str]:
        """One message per name that more than one plugin registers in the same kind."""
        out = []
        for hook, by_name in self._entries.items():
            for name, entries in by_name.items():
                if len(entries) > 1:
                    who = " and ".join(e.plugin.label for e in entries)
                    out.append(f"{KINDS[hook][0]} {name!r} is registered by {who}")
        return out

    def all(self, hook: str) -> dict[str, Entry]:
        """Every registration of one kind by name; a name registered twice is an error."""
        by_name = self._entries[hook]
        for name, entries in by_name.items():
            if len(entries) > 1:
                who = " and ".join(e.plugin.label for e in entries)
                raise PluginError(
                    f"{KINDS[hook][0]} {name!r} is registered by {who}; block one with GRID_DISABLE_PLUGINS"
                )
        return {name: entries[0] for name, entries in by_name.items()}

    def get(self, hook: str, name: str) -> Any:
        """The registration named `name`, or a clear error listing what exists."""
        entries = self.all(hook)
        if name not in entries:
            kind = KINDS[hook][0]
            known = ", ".join(sorted(entries)) or "none"
            hint = self._why_missing(hook, name)
            raise PluginError(f"no {kind} named {name!r} (available: {known}){hint}")
        return entries[name].registration

    def _why_missing(self, hook: str, name: str) -> str:
        off = [r for r in self.records.values() if r.status != "active"]
        if not off:
            return ""
        return "; not loaded: " + ", ".join(f"{r.name} ({r.status})" for r in off)

    def plugin_for_package(self, package: str) -> PluginRecord | None:
        return next((r for r in self.records.values() if r.package == package and r.package != "grid_core"), None)


_host: PluginHost | None = None
_options: dict[str, Any] = {}


def configure(**options: Any) -> None:
    """Set how the process-wide PluginHost loads (the CLI's --no-plugins); before first use."""
    global _host
    _options.update(options)
    _host = None


def host() -> PluginHost:
    """The process-wide PluginHost, loaded on first use."""
    global _host
    if _host is None:
        _host = PluginHost(**_options)
    return _host
