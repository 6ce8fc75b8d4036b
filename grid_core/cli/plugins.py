"""`grid plugins list`: every plugin, its status and what it registers."""

from __future__ import annotations

import click

from grid_core import plugins as plugin_host
from grid_core.cli.context import config_option, console, err_console, json_option, print_json
from grid_core.plugins import KINDS


@click.group()
def plugins() -> None:
    """List plugins and what they register."""


@plugins.command("list")
@json_option
@config_option
def list_plugins(as_json: bool) -> None:
    """Show each plugin: distribution, version, status and registrations."""
    host = plugin_host.host()
    records = list(host.records.values())
    if as_json:
        print_json([
            {"name": r.name, "distribution": r.distribution, "version": r.version, "status": r.status,
             "reason": r.reason or None, "hooks": r.hooks}
            for r in records
        ])
    else:
        from rich.table import Table

        table = Table(box=None, header_style="bold")
        for column in ("plugin", "distribution", "version", "status", "registers"):
            table.add_column(column)
        colours = {"active": "green", "blocked": "yellow", "failed": "red"}
        for r in records:
            registers = "; ".join(f"{KINDS[h][0]}: {', '.join(names)}" for h, names in r.hooks.items() if names)
            status = f"[{colours[r.status]}]{r.status}[/]" + (f" ({r.reason})" if r.reason else "")
            table.add_row(r.name, r.distribution, r.version, status, registers or "-")
        console().print(table)
    for conflict in host.conflicts():
        err_console().print(f"[red]conflict:[/] {conflict}")
