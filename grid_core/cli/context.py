"""What every command shares: the config lookup, logging, requests to the backend (by the kept
shortcut where one answers), --json and finite-number options.

The consoles and tables live in grid_core.cli.output.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

# Re-exported: plugins' commands import the consoles from here.
from grid_core.cli.output import console as console
from grid_core.cli.output import err_console as err_console

if TYPE_CHECKING:
    from grid_core.cluster import Cluster
    from grid_core.config import ClusterConfig
    from grid_core.shortcut import Kept
    from grid_core.types import Backend, PluginDrift, ShortcutClient

F = TypeVar("F", bound=Callable[..., Any])
LEVELS = ["WARNING", "INFO", "DEBUG"]


class GridContext:
    """Per-invocation state, kept on the root click context."""

    # A plain class rather than attrs: every command makes one, and importing attrs costs a fifth
    # of `import click` (`grid plugins list` needs nothing else of it).
    __slots__ = ("_config", "config_path", "debug", "said_found", "verbosity")

    def __init__(self, config_path: str | None = None, verbosity: int = 0, debug: bool = False,
                 config: ClusterConfig | None = None) -> None:
        self.config_path, self.verbosity, self.debug = config_path, verbosity, debug
        self._config = config
        self.said_found = False

    def config(self) -> ClusterConfig:
        """The effective config (loaded once), with its logging settings applied."""
        if self._config is None:
            from grid_core import config

            path, found = config.find_config_path(self.config_path)
            self._config = config.embedded_default() if path is None else config.load_file(path)
            if path is not None and found:
                self.say_found(str(path))
            self.setup_logging(self._config)
            import logging

            logging.getLogger(__name__).debug("config from %s", self._config.source)
        return self._config

    def say_found(self, path: str) -> None:
        """A file picked up from the working folder could be another cluster's: say which, once."""
        if not self.said_found:
            self.said_found = True
            sys.stderr.write(f"grid: config {path} (found in this folder)\n")

    def cluster(self) -> Cluster:
        from grid_core import plugins
        from grid_core.access import channel_head
        from grid_core.cluster import Cluster

        cluster = Cluster(self.config(), plugins.host())
        cluster.warm(channel_head(cluster.config))  # a command on a cluster asks its head: start connecting now
        return cluster

    def setup_logging(self, config: ClusterConfig | None = None) -> None:
        """Diagnostics go to stderr (and the config's file); -v raises the level for this run. Until
        this runs (the config loads; at once with -v or --debug), a warning is its bare message:
        a command by the kept shortcut never imports logging, 3 ms of its time."""
        import logging

        class JsonFormatter(logging.Formatter):
            def format(self, record: logging.LogRecord) -> str:
                entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                         "message": record.getMessage()}
                if record.exc_info:
                    entry["exception"] = self.formatException(record.exc_info)
                return json.dumps(entry)

        pass_undecodable_bytes()
        configured = config.logging.level.upper() if config else "WARNING"
        level = min(logging.getLevelName(configured), logging.getLevelName(LEVELS[min(self.verbosity, 2)]))
        if self.debug:
            level = logging.DEBUG
        root = logging.getLogger()
        handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
        if config and config.logging.file_path:
            handlers.append(logging.FileHandler(config.logging.file_path))
        as_json = config is not None and config.logging.format == "json"
        text = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        for handler in handlers:
            handler.setFormatter(JsonFormatter() if as_json else text)
        root.handlers[:] = handlers
        root.setLevel(level)
        # Libraries log their own tracebacks for failures grid reports in one line (an unreachable
        # node); show them only when asked for debug output.
        for noisy in ("paramiko", "ray"):
            logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else logging.CRITICAL)


def pass_undecodable_bytes() -> None:
    """Write argv bytes that are not UTF-8 (file names, node names) back out as they came in.

    Python decodes such bytes in argv to lone surrogates, and a UTF-8 stdout refuses to encode
    them (UnicodeEncodeError, in every locale but C); stderr already escapes them.
    """
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None and getattr(sys.stdout, "errors", None) == "strict":
        reconfigure(errors="surrogateescape")


def state() -> GridContext:
    return click.get_current_context().find_root().ensure_object(GridContext)


def ask_backend(method: str, **options: Any) -> Any:
    """Backend.<method>(cluster, **options): by the kept shortcut's client where it answers
    (grid_core/shortcut.py: its methods are Backend's, less the cluster), else the usual way,
    through the config and the plugins, which keeps a shortcut for the next command."""
    found = shortcut_client()
    if found is not None:
        answered, answer = tried(lambda: getattr(found[0], method)(**options))
        if answered:
            return answer
    from grid_core.backends import load_backend

    with state().cluster() as c:
        backend = load_backend(c.config)
        answer = getattr(backend, method)(c, **options)
        keep_shortcut(c, backend)
    return answer


def shortcut_client() -> tuple[ShortcutClient, Kept] | None:
    """The backend's client by the shortcut a command of the usual path kept, with neither the
    config's classes nor the plugins loaded, and what was kept with it (the config's job
    defaults, the status basis); None: take the usual path (which keeps a new one)."""
    kept = _kept()
    if kept is None:
        return None
    from grid_core import shortcut

    context = state()
    try:
        client = shortcut.client(kept.shortcut)
    except shortcut.Unusable:
        return None
    if kept.found:
        context.say_found(kept.config)
    return client, kept


def plugin_drift(started_with: Mapping[str, str]) -> PluginDrift | None:
    """What changed in this machine's plugin set since the service started with `started_with`:
    from the set kept with the shortcut where one is kept for this config (no plugin loaded),
    else from the plugins here."""
    from grid_core import plugin_set

    kept = _kept()
    if kept is None:
        return plugin_set.Here().drift(started_with)
    return plugin_set.drift(kept.basis.versions, kept.basis.counts_on, started_with)


def _kept() -> Kept | None:
    """The shortcut kept for this command's config, where it may take one."""
    root = click.get_current_context().find_root()
    if root.params.get("no_plugins") or root.params.get("verbose") or root.params.get("debug"):
        return None  # the usual path: its plugin set, its diagnostics
    from grid_core import shortcut

    return shortcut.find(state().config_path)


def tried(call: Callable[[], Any]) -> tuple[bool, Any]:  # Any: each request's own answer
    """Whether a request by the shortcut was answered, and its answer; a shortcut that failed is
    dropped (the usual path asks again, and keeps a new one)."""
    from grid_core import shortcut

    try:
        return True, call()
    except shortcut.Unusable:
        shortcut.forget(state().config_path)
        return False, None


def keep_shortcut(c: Cluster, backend: Backend) -> None:
    """What the backend offers the next command that can take a shortcut, kept."""
    offer = getattr(backend, "shortcut", None)
    kept = offer(c) if offer is not None else None
    if kept is not None:
        from grid_core import shortcut

        shortcut.keep(c.config, state().config_path, kept)


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.find_root().ensure_object(GridContext).config_path = value


def config_option(f: F) -> F:
    """-c/--config FILE, accepted on the root and after any command (`grid cluster start -c F`)."""
    return click.option(
        "-c", "--config", type=str, expose_value=False, callback=_remember_config, is_eager=True,
        metavar="FILE", help="Cluster config (TOML, or the seed's YAML).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def print_json(data: Any) -> None:
    """Print data as JSON; a record (an attrs class of grid_core.types) as its cattrs unstructure."""
    if "attr" in sys.modules:  # else no attrs class exists, and plain data need not import attrs
        import attrs

        if attrs.has(type(data)) or (isinstance(data, list) and data and attrs.has(type(data[0]))):
            from grid_core.types import wire

            data = wire().unstructure(data)
    # Indented for a terminal; one line for a pipe or a file, which the standard library writes in C
    # (indented, a list of 1,000 jobs took 20 ms more).
    click.echo(json.dumps(data, indent=2 if sys.stdout.isatty() else None, default=str))


def print_json_text(text: str) -> None:
    """JSON that the service wrote as print_json would (one line): into a pipe or a file as it
    came, indented for a terminal."""
    if sys.stdout.isatty():
        print_json(json.loads(text))
    else:
        click.echo(text)


class FiniteFloat(click.FloatRange):
    """A FloatRange that refuses nan and inf: they pass every comparison click makes, and later
    break what consumes them (`select(nan)`, `Event.wait(inf)`, a resource request of nan CPUs)."""

    name = "finite number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number
