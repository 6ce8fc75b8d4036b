"""The plugin manager: built-ins first, then entry points in the group `grid`, into registries.

A plugin that fails to import or to register is recorded as failed and skipped; nothing else
breaks. `GRID_DISABLE_PLUGINS=a,b` blocks plugins by name and `GRID_NO_PLUGINS=1` (or
`grid --no-plugins`) loads only the built-ins.

Loading every plugin imports importlib.metadata, attrs, pluggy and each plugin, which together
cost more than importing click. What `grid --help`, `grid plugins list` and finding a command
need (each plugin's record, the names it registers, each command's summary and import path) is
therefore kept in an index file under grid's state dir. The index is used only while its key
still matches: the metadata and .pth files of every sys.path entry (what pip install and
uninstall change) and the source files of every module the plugins loaded (an editable plugin
edited in place). Anything that needs a registration object loads the plugins for real.

A plugin that failed is kept in the index as it is, with its error, keyed on the same facts plus
the files its failed import ran (a traceback's): a broken plugin costs `grid --help` nothing after
the first time, and fixing it in place or reinstalling it is noticed. A plugin whose declared
requirement on grid-core (its `Requires-Dist`) excludes this core is `incompatible`: it is never
imported, and says which requirement.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from grid_core.errors import GridError, PluginError
from grid_core.state import state_base

if TYPE_CHECKING:
    import pluggy

# Each built-in is one module registered as a plugin, so the core uses its own contract.
BUILTINS = {
    "local": "grid_core.builtin.local",
    "psutil": "grid_core.builtin.psutil_metrics",
    "procfs": "grid_core.builtin.procfs_metrics",
    "nvml": "grid_core.builtin.nvml_metrics",
    "least-loaded": "grid_core.builtin.least_loaded",
    "fair-share": "grid_core.builtin.fair_share",
    "commands": "grid_core.builtin.commands",
}

# hook name -> (kind shown to users, name of the registration type in grid_core.types); types
# are looked up only when plugins load, so that importing this module stays cheap.
KINDS: dict[str, tuple[str, str]] = {
    "grid_transports": ("transport", "GridTransport"),
    "grid_backends": ("backend", "GridBackend"),
    "grid_schedulers": ("scheduler", "GridScheduler"),
    "grid_offload_policies": ("offload policy", "GridOffloadPolicy"),
    "grid_metrics_sources": ("metrics source", "GridMetricsSource"),
    "grid_commands": ("command", "GridCommand"),
    "grid_service_ops": ("service request", "GridServiceOp"),
}

INDEX_FORMAT = 4  # 4: failed and incompatible plugins kept; 3: the grid_service_ops kind, each plugin's module
# What installing or removing a distribution changes in a sys.path entry.
METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg-link", ".egg", ".pth")
ENTRY_POINTS = "entry_points.txt"

Status = Literal["active", "blocked", "failed", "incompatible"]


class PluginRecord:
    """One plugin as `grid plugins list` shows it."""

    # A plain class rather than attrs: importing attrs alone costs a fifth of `import click`.
    __slots__ = ("distribution", "hooks", "name", "package", "reason", "status", "version")

    def __init__(self, name: str, distribution: str, version: str, package: str, status: Status = "active",
                 reason: str = "", hooks: dict[str, list[str]] | None = None) -> None:
        self.name, self.distribution, self.version = name, distribution, version
        self.package = package  # top-level import package, used to blame a plugin for an unexpected error
        self.status: Status = status
        self.reason = reason
        self.hooks: dict[str, list[str]] = hooks if hooks is not None else {}

    def __repr__(self) -> str:
        return f"PluginRecord({self.as_dict()!r})"

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} ({self.distribution} {self.version})"

    def as_dict(self) -> dict[str, Any]:
        """The record's fields, as the index stores them."""
        return {name: getattr(self, name) for name in self.__slots__}


class Entry(NamedTuple):
    """A registration and the plugin that made it."""

    registration: Any
    plugin: PluginRecord


class CommandSummary(NamedTuple):
    """What the root command needs of a `grid_commands` registration, without loading its plugin."""

    name: str
    summary: str
    import_path: str
    plugin: str


def disabled_names() -> set[str]:
    """The plugin names in $GRID_DISABLE_PLUGINS."""
    return {n.strip() for n in os.environ.get("GRID_DISABLE_PLUGINS", "").split(",") if n.strip()}


def _clash(hook: str, name: str, plugins: Iterable[PluginRecord]) -> str:
    return f"{KINDS[hook][0]} {name!r} is registered by {' and '.join(p.label for p in plugins)}"


class PluginHost:
    """Loads plugins and holds what they register, per kind, each with the plugin behind it.

    With `indexed`, records and command summaries come from the index when it is current, and
    the plugins load only when a registration is asked for; a full load refreshes the index.
    """

    def __init__(self, *, no_plugins: bool = False, disabled: Iterable[str] | None = None,
                 indexed: bool = False) -> None:
        self.no_plugins = no_plugins or os.environ.get("GRID_NO_PLUGINS", "") in ("1", "true", "yes")
        self.blocked = disabled_names() if disabled is None else set(disabled)
        self.records: dict[str, PluginRecord] = {}
        self._indexed = indexed
        self._index: dict[str, Any] | None = _read_index() if indexed else None
        self._commands: dict[str, list[CommandSummary]] | None = None
        self._entries: dict[str, dict[str, list[Entry]]] | None = None
        self._pm: pluggy.PluginManager | None = None
        self._modules: dict[str, str] = {}
        self._failed_files: set[str] = set()  # what failed imports ran: the index is current while they are
        self._load_lock = threading.RLock()
        self._complete = False  # every plugin loaded and registered
        if not (self._index is not None and self._use_index(self._index)):
            self._ensure_loaded()

    # ----------------------------------------------------------------------------- the index

    def _use_index(self, index: dict[str, Any]) -> bool:
        """Take records and commands from the index; False where it lacks a plugin to load."""
        records: dict[str, PluginRecord] = {}
        for fields in index["plugins"]:
            record = PluginRecord(**fields)
            if self.no_plugins and record.name not in BUILTINS:
                continue
            if record.name in self.blocked:
                record.status, record.reason, record.hooks = "blocked", "blocked by GRID_DISABLE_PLUGINS", {}
            elif record.status == "blocked":  # blocked when written: what it registers is not known
                return False
            records[record.name] = record
        commands: dict[str, list[CommandSummary]] = {}
        for row in index["commands"]:
            command = CommandSummary(*row)
            if command.plugin in records and records[command.plugin].status == "active":
                commands.setdefault(command.name, []).append(command)
        self.records, self._commands = records, commands
        return True

    def _index_data(self, key: list[Any]) -> dict[str, Any]:
        packages = {r.package for r in self.records.values()}
        entries = self._entries or {}
        return {
            "format": INDEX_FORMAT,
            "key": key,
            "files": [list(f) for f in sorted({*map(tuple, _source_files(packages)),
                                               *_stat_files(self._failed_files)})],
            "plugins": [r.as_dict() for r in self.records.values()],
            "modules": {name: self._modules[name] for name in self.records if name in self._modules},
            "commands": [
                [name, e.registration.summary, e.registration.import_path, e.plugin.name]
                for name, found in entries.get("grid_commands", {}).items()
                for e in found
            ],
        }

    # ----------------------------------------------------------------------------- loading

    def _load(self) -> None:
        """Import and register every plugin that is not blocked."""
        import functools
        import importlib
        from importlib.metadata import entry_points

        import pluggy

        from grid_core import __version__, hookspecs
        from grid_core.requirements import excluded_by

        key = _fingerprint() if self._indexed else []
        self._pm = pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        self.records, self._commands = {}, None
        self._entries = {hook: {} for hook in KINDS}
        self._modules = dict(BUILTINS)  # plugin name -> what its entry point names, for the index
        self._failed_files = set()
        for name, module in BUILTINS.items():
            record = PluginRecord(name, "grid-core", __version__, "grid_core")
            self._add(record, self.blocked, functools.partial(importlib.import_module, module))
        if not self.no_plugins:
            for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
                dist = ep.dist
                record = PluginRecord(
                    ep.name,
                    dist.name if dist else "?",
                    dist.version if dist else "?",
                    ep.module.split(".")[0],
                )
                self._modules[ep.name] = ep.value
                # One whose requirement excludes this core was not written for it: it is never imported.
                why = excluded_by(dist.requires if dist else None, "grid-core", __version__)
                self._add(record, self.blocked, ep.load, incompatible=why)
            if self._indexed:
                data = self._index_data(key)
                if data != self._index:
                    _write_index(data)
                    self._index = data

    @property
    def pm(self) -> pluggy.PluginManager:
        """The pluggy manager the plugins are registered with (loads them on first use)."""
        self._ensure_loaded()
        assert self._pm is not None
        return self._pm

    def _ensure_loaded(self) -> dict[str, dict[str, list[Entry]]]:
        # Threads of one command (status reads the engine while it samples the nodes) may all ask
        # at once: one loads, the others wait for it. The loading thread comes back in from _add.
        if not self._complete:
            with self._load_lock:
                if self._entries is None:
                    self._load()
                    self._complete = True
        assert self._entries is not None
        return self._entries

    def add(self, plugin: object, name: str, distribution: str = "<in-memory>", version: str = "0") -> PluginRecord:
        """Register an object as a plugin (tests, embedding); returns its record."""
        self._ensure_loaded()
        package = getattr(plugin, "__module__", None) or getattr(plugin, "__name__", "")
        record = PluginRecord(name, distribution, version, str(package).split(".")[0])
        self._add(record, set(), lambda: plugin)
        return record

    def _add(self, record: PluginRecord, blocked: set[str], load: Callable[[], Any],
             incompatible: str | None = None) -> None:
        from grid_core import types

        entries = self._ensure_loaded()
        if record.name in self.records:
            other = self.records[record.name]
            raise PluginError(f"two plugins are named {record.name!r}: {other.label} and {record.label}")
        self.records[record.name] = record
        self._commands = None
        if record.name in blocked:
            record.status, record.reason = "blocked", "blocked by GRID_DISABLE_PLUGINS"
            return
        if incompatible is not None:
            record.status, record.reason = "incompatible", incompatible
            return
        try:
            plugin = load()
            self.pm.register(plugin, name=record.name)
            self.pm.check_pending()  # an implementation of an unknown hook (a typo) fails here
        except Exception as exc:  # any failure of a plugin is its own, never the CLI's
            self._fail(record, exc, stage="load")
            return
        for hook, (_kind, type_name) in KINDS.items():
            expected = getattr(types, type_name)
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                if impl.plugin_name != record.name:
                    continue
                try:
                    items = list(impl.function() or ())
                    for item in items:
                        if not isinstance(item, expected):
                            raise TypeError(f"{hook} yielded {item!r}, expected a {type_name}")
                except Exception as exc:
                    self._fail(record, exc, stage="register")
                    return
                for item in items:
                    entries[hook].setdefault(item.name, []).append(Entry(item, record))
                record.hooks[hook] = [item.name for item in items]
        _log().debug("loaded %s: %s", record.label, record.hooks)

    def _fail(self, record: PluginRecord, exc: Exception, stage: str) -> None:
        import logging

        record.status, record.reason = "failed", f"{stage} error: {type(exc).__name__}: {exc}"
        self._failed_files.update(_files_run(exc))
        log = _log()
        log.warning("%s failed to %s: %s", record.label, stage, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        if self.pm.is_registered(self.pm.get_plugin(record.name)):
            self.pm.unregister(name=record.name)
        for by_name in self._ensure_loaded().values():
            for name in list(by_name):
                by_name[name] = [e for e in by_name[name] if e.plugin is not record]
                if not by_name[name]:
                    del by_name[name]
        record.hooks.clear()

    # ----------------------------------------------------------------------------- queries

    def conflicts(self) -> list[str]:
        """One message per name that more than one plugin registers in the same kind."""
        out = []
        for hook in KINDS:
            by_name: dict[str, list[PluginRecord]] = {}
            for record in self.records.values():
                for name in record.hooks.get(hook, ()):
                    by_name.setdefault(name, []).append(record)
            out += [_clash(hook, name, found) for name, found in by_name.items() if len(found) > 1]
        return out

    def commands(self) -> dict[str, CommandSummary]:
        """Every `grid_commands` registration by name, from the index when it is current."""
        if self._commands is None:
            self._commands = {
                name: [CommandSummary(name, e.registration.summary, e.registration.import_path, e.plugin.name)
                       for e in found]
                for name, found in self._ensure_loaded()["grid_commands"].items()
            }
        return _unique("grid_commands", self._commands, lambda c: self.records[c.plugin])

    def all(self, hook: str) -> dict[str, Entry]:
        """Every registration of one kind by name; a name registered twice is an error."""
        return _unique(hook, self._ensure_loaded()[hook], lambda e: e.plugin)

    def get(self, hook: str, name: str) -> Any:
        """The registration named `name`, or a clear error listing what exists."""
        if self._entries is None and (found := self._one_from_index(hook, name)) is not None:
            return found
        entries = self.all(hook)
        if name not in entries:
            kind = KINDS[hook][0]
            known = ", ".join(sorted(entries)) or "none"
            hint = self._why_missing(hook, name)
            raise PluginError(f"no {kind} named {name!r} (available: {known}){hint}")
        return entries[name].registration

    def _one_from_index(self, hook: str, name: str) -> Any:
        """The registration from the one plugin the index says makes it, loading that plugin
        alone (a status command needs the backend, not every plugin); None when the index cannot
        say, or the plugin does not answer as it did, and the full load then decides."""
        from grid_core import types

        owners = [r for r in self.records.values() if r.status == "active" and name in r.hooks.get(hook, ())]
        target = (self._index or {}).get("modules", {}).get(owners[0].name) if len(owners) == 1 else None
        if target is None:
            return None
        import importlib

        module, _, attr = target.partition(":")
        try:
            plugin: Any = importlib.import_module(module)
            for part in filter(None, attr.split(".")):
                plugin = getattr(plugin, part)
            items = list(getattr(plugin, hook)() or ())
        except Exception:  # the full load reports a plugin's failure with its name
            return None
        expected = getattr(types, KINDS[hook][1])
        return next((i for i in items if isinstance(i, expected) and i.name == name), None)

    def _why_missing(self, hook: str, name: str) -> str:
        off = [r for r in self.records.values() if r.status != "active"]
        if not off:
            return ""
        # A failure's reason is the answer to "why is my policy not there"; blocking was the user's own.
        return "; not loaded: " + "; ".join(
            f"{r.name} ({r.status}: {r.reason})" if r.status in ("failed", "incompatible") else f"{r.name} ({r.status})"
            for r in off)

    def plugin_for_package(self, package: str) -> PluginRecord | None:
        """The plugin whose top-level package is `package` (never grid-core's built-ins)."""
        return next((r for r in self.records.values() if r.package == package and r.package != "grid_core"), None)


def _unique(hook: str, by_name: dict[str, list[Any]], plugin_of: Callable[[Any], PluginRecord]) -> dict[str, Any]:
    """One value per name, or PluginError naming every plugin behind a name registered twice."""

    for name, found in by_name.items():
        if len(found) > 1:
            raise PluginError(f"{_clash(hook, name, map(plugin_of, found))}; block one with GRID_DISABLE_PLUGINS")
    return {name: found[0] for name, found in by_name.items()}


def _log() -> Any:
    import logging  # only where something is logged: `grid --help` never needs the module

    return logging.getLogger(__name__)


# --------------------------------------------------------------------------- the index file


def _fingerprint() -> list[Any]:
    """The installed distributions as the file system shows them: per sys.path entry, the name,
    inode and mtime of each metadata, .pth and editable-finder file, and of an .egg-info's
    entry_points.txt (setuptools rewrites it in place, which leaves the directory's mtime alone;
    installers make each .dist-info afresh)."""
    key: list[Any] = []
    for entry in sys.path:
        path = os.path.abspath(entry or ".")
        found = []
        try:
            with os.scandir(path) as listing:
                for item in listing:
                    if item.name.endswith(METADATA_SUFFIXES) or item.name.startswith("__editable__"):
                        inner = _mtime(item.path, ENTRY_POINTS) if item.name.endswith(".egg-info") else 0
                        found.append([item.name, item.inode(), _mtime(item.path), inner])
        except NotADirectoryError:  # a zip file on the path
            try:
                stat = os.stat(path)
                found.append(["", stat.st_ino, stat.st_mtime_ns])
            except OSError:
                continue
        except OSError:  # missing now; should it appear with distributions, the key changes
            continue
        if found:
            key.append([path, sorted(found)])
    return key


def _mtime(*path: str) -> int:
    """A file's mtime in ns; 0 when it is missing (a dangling link, no entry_points.txt)."""
    try:
        return os.stat(os.path.join(*path)).st_mtime_ns
    except OSError:
        return 0


def _source_files(packages: set[str]) -> list[list[Any]]:
    """[file, mtime] of every loaded module of these top-level packages."""
    files = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name.partition(".")[0] in packages:
            try:
                files.append([path, os.stat(path).st_mtime_ns])
            except OSError:
                continue
    return sorted(files)


def _files_run(exc: BaseException) -> set[str]:
    """The source files a failure ran through (its traceback's), and the one a SyntaxError names."""
    out = set()
    tb = exc.__traceback__
    while tb is not None:
        out.add(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        out.add(exc.filename)
    if exc.__cause__ is not None and exc.__cause__ is not exc:
        out |= _files_run(exc.__cause__)
    return {path for path in out if os.path.isabs(path)}  # not "<frozen importlib._bootstrap>"


def _stat_files(paths: Iterable[str]) -> list[tuple[str, int]]:
    """(file, mtime) of those files that exist."""
    out = []
    for path in paths:
        try:
            out.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            continue
    return out


def _index_name(key: list[Any]) -> str:
    import zlib

    # One file per environment and set of paths with distributions (`grid` and `python -m grid`
    # from a source tree see different ones); the key inside says whether it is still current.
    where = "\0".join([sys.prefix, *(path for path, _found in key)])
    return f"plugin-index-{zlib.crc32(where.encode()):08x}.json"


def _read_index() -> dict[str, Any] | None:
    """The index when it is readable and current, else None (it is then rebuilt)."""
    try:
        key = _fingerprint()
        with open(os.path.join(state_base(), _index_name(key)), encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != INDEX_FORMAT or data["key"] != key:
            return None
        for path, mtime in data["files"]:
            if os.stat(path).st_mtime_ns != mtime:
                return None
        return data if isinstance(data["plugins"], list) and isinstance(data["commands"], list) else None
    except (OSError, GridError, ValueError, KeyError, TypeError, AttributeError):  # missing, corrupt, old shape
        return None


def _write_index(data: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the old one); a failure only costs speed."""
    from grid_core.state import state_dir, write_atomic

    try:
        write_atomic(state_dir() / _index_name(data["key"]), json.dumps(data))
    except GridError as exc:  # no usable state dir: the index only saves time
        _log().debug("plugin index not written: %s", exc)


_host: PluginHost | None = None
_options: dict[str, Any] = {}


def configure(**options: Any) -> None:
    """Set how the process-wide PluginHost loads (the CLI's --no-plugins); before first use."""
    global _host
    _options.update(options)
    _host = None


def host() -> PluginHost:
    """The process-wide PluginHost: from the index when it is current, loaded on first need."""
    global _host
    if _host is None:
        _host = PluginHost(indexed=True, **_options)
    return _host
