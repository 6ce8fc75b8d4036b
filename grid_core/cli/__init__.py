"""The `grid` command: a lazy root group whose subcommands come from the `grid_commands` hook.

Only click and the plugin manager load before a subcommand runs; each command's module (and
rich, cattrs, paramiko, ray behind it) is imported when that command is invoked.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from grid_core import plugins as plugin_host
from grid_core.errors import GridError


class PluginCommands(click.Group):
    """Subcommands registered through `grid_commands`, imported only when invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(plugin_host.host().commands())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = plugin_host.host().commands().get(name)
        if command is None:
            return None
        module_name, _, attr = command.import_path.partition(":")
        import importlib

        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        commands = plugin_host.host().commands()
        rows = [(name, commands[name].summary) for name in sorted(commands)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from grid_core import __version__

    click.echo(f"grid-core {__version__}")
    seen = {"grid-core"}
    for record in plugin_host.host().records.values():
        if record.distribution not in seen:
            seen.add(record.distribution)
            note = "" if record.status == "active" else f" ({record.status})"
            click.echo(f"{record.distribution} {record.version}{note}")
    ctx.exit()


def _remember_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        from grid_core.cli.context import GridContext

        ctx.find_root().ensure_object(GridContext).config_path = value


# The root declares context.config_option's -c itself: importing grid_core.cli.context would cost
# `grid --help` a third of its budget; commands use config_option.
@click.group(cls=PluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show core's and each plugin's version.")
@click.option("-c", "--config", type=str, expose_value=False, callback=_remember_config, is_eager=True,
              metavar="FILE", help="Cluster config (TOML, or the seed's YAML).")
@click.option("--no-plugins", is_flag=True, help="Load only the built-in plugins.")
@click.option("-v", "--verbose", count=True, help="More diagnostics on stderr (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, no_plugins: bool, verbose: int, debug: bool) -> None:
    """grid: your SSH-reachable machines as one Ray cluster, with a responsive head.

    Config lookup: -c FILE, then $GRID_CONFIG, then ./grid.toml, then the seed's
    ./config/my-cluster-enhanced.yaml, then a one-node cluster of this machine.
    """
    from grid_core.cli.context import GridContext, pass_undecodable_bytes

    state = ctx.ensure_object(GridContext)
    state.verbosity, state.debug = verbose, debug
    if verbose or debug:
        state.setup_logging()  # from the start; else with the config's settings, once it loads
    else:
        pass_undecodable_bytes()
    if no_plugins:
        plugin_host.configure(no_plugins=True)


def _blame(exc: BaseException) -> str:
    """Name the plugin whose code raised, from the innermost frame that belongs to a plugin."""
    tb, culprit = exc.__traceback__, None
    host = plugin_host.host()
    while tb is not None:
        package = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        culprit = host.plugin_for_package(package) or culprit
        tb = tb.tb_next
    from grid_core import __version__

    who = culprit.label if culprit else f"grid-core {__version__}"
    return f"unexpected error in {who}: {type(exc).__name__}: {exc}"


def main() -> None:
    """Console entry point: expected failures are one line on stderr, never a traceback."""
    debug = "--debug" in sys.argv[1:] or os.environ.get("GRID_DEBUG") == "1"
    try:
        status = cli.main(prog_name="grid", standalone_mode=False)
        sys.exit(status if isinstance(status, int) else 0)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    except GridError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        click.echo(f"error: {_blame(exc)}", err=True)
        if not debug:
            click.echo("run with --debug for the traceback", err=True)
        sys.exit(70)
